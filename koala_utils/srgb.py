"""sRGB and CIE Lab in float32 numpy: the standard's constants, its transfer function, and fast conversions.

Full-resolution photos (a 2000 x 1333 scan is 2.7 million pixels) go through
:func:`gray_and_lightness`, :func:`lightness` and :func:`lab_to_rgb_fast` in
blocks of pixels small enough to stay in the CPU cache, shared among a few
threads (numpy releases the GIL), with lookup tables in place of per-pixel
powers. They agree with the scikit-image reference of :mod:`koala_utils.color`
(which re-exports them) to float32 rounding; benchmarks/colorize_latency.py
measures them.
"""

import functools

import numpy as np

# D65 reference white (2 degree observer), as in scikit-image.
D65_WHITE = (0.95047, 1.0, 1.08883)
# Linear sRGB -> XYZ (D65), IEC 61966-2-1.
RGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=np.float64,
)
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)


def to_uint8(rgb_float):
    """Round float RGB in [0, 1] to uint8 in [0, 255]."""
    return np.clip(np.round(np.asarray(rgb_float) * 255.0), 0, 255).astype(np.uint8)



_BLOCK = 1 << 15
_ENCODE_STEPS = 65535
_EPS = 216.0 / 24389.0
_KAPPA = 24389.0 / 27.0


def srgb_to_linear(v):
    """sRGB transfer function, inverted: encoded values in [0, 1] -> linear light (same shape)."""
    return np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)


def linear_to_srgb(v):
    """sRGB transfer function: linear light -> encoded values (negative light clamped to 0), same shape."""
    v = np.maximum(v, 0.0)
    return np.where(v > 0.0031308, 1.055 * np.power(v, 1.0 / 2.4) - 0.055, 12.92 * v)


def _lab_f_inverse(f):
    linear_part = (f - np.float32(16.0 / 116.0)) * np.float32(3.0 * (6.0 / 29.0) ** 2)
    return np.where(f > np.float32(6.0 / 29.0), f * f * f, linear_part)


@functools.cache
def _decode_lut():
    """sRGB level (0-255) -> linear value, float32."""
    return srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


@functools.cache
def _tables():
    """Lookup tables, built once: linear -> sRGB level, luminance -> gray level, gray level -> L."""
    cache = {}
    cache["encode"] = to_uint8(linear_to_srgb(np.arange(_ENCODE_STEPS + 1) / _ENCODE_STEPS))
    # Gray level k covers luminances linear((k - 0.5) / 255) <= Y < linear((k + 0.5) / 255): to_gray's rounding.
    steps = srgb_to_linear((np.arange(1, 256) - 0.5) / 255.0).astype(np.float32)
    cache["gray_lower"] = np.concatenate([[-np.inf], steps]).astype(np.float32)
    cache["gray_upper"] = np.concatenate([steps, [np.inf]]).astype(np.float32)
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    cache["gray_lightness"] = _lightness_block(_luminance_block(levels))
    # Linear RGB from (X / Xn, Y, Z / Zn): the white point folded into the matrix.
    cache["xyz_to_rgb"] = (XYZ_TO_RGB * np.asarray(D65_WHITE)[None, :]).astype(np.float32)
    return cache


def _executor(cache={}):  # noqa: B006 - a deliberate module-level memo
    """A small thread pool for the blocks, one thread per core (at most 8), and its size.

    A forked child process gets a pool of its own (the parent's threads do not exist there).
    """
    import os

    if cache.get("pid") != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        cache["pid"] = os.getpid()
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:
            workers = os.cpu_count() or 1
        cache["workers"] = max(1, min(workers, 8))
        cache["pool"] = ThreadPoolExecutor(cache["workers"], thread_name_prefix="koala-color")
    return cache["pool"], cache["workers"]


def _blocks(fn, size):
    """Call ``fn(slice)`` for blocks of ``size`` pixels, in threads when there are several."""
    slices = [slice(i, min(i + _BLOCK, size)) for i in range(0, size, _BLOCK)]
    pool, workers = _executor()
    if workers == 1 or len(slices) < 4:
        for sl in slices:
            fn(sl)
        return
    per_worker = -(-len(slices) // workers)
    chunks = [slices[i : i + per_worker] for i in range(0, len(slices), per_worker)]
    for future in [pool.submit(lambda group: [fn(sl) for sl in group], chunk) for chunk in chunks]:
        future.result()


def _luminance_block(rgb):
    """Relative luminance Y (float32) of uint8 RGB pixels ``(n, 3)``."""
    lut = _decode_lut()
    w = RGB_TO_XYZ[1].astype(np.float32)
    y = lut[rgb[:, 0]] * w[0]
    y += lut[rgb[:, 1]] * w[1]
    y += lut[rgb[:, 2]] * w[2]
    return y


def _lightness_block(y):
    """CIE L (float32) from luminance Y (float32)."""
    f = np.cbrt(y)
    small = y <= _EPS
    if small.any():
        f[small] = (np.float32(_KAPPA) * y[small] + np.float32(16.0)) / np.float32(116.0)
    f *= np.float32(116.0)
    f -= np.float32(16.0)
    return f


def _uint8_rgb(rgb):
    """``rgb`` as uint8 ``(..., 3)``; integer arrays in [0, 255] are converted."""
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"expected RGB of shape (..., H, W, 3), got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        if not np.issubdtype(rgb.dtype, np.integer):
            raise ValueError(f"expected uint8 RGB, got {rgb.dtype}")
        rgb = rgb.astype(np.uint8)
    return rgb


def _is_gray(rgb):
    """True when the three channels of ``(..., 3)`` are equal (a black-and-white photo as RGB)."""
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def gray_and_lightness(rgb):
    """The gray version of a photo (as :func:`koala_utils.images.to_gray`) and its CIE L, fast.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (..., H, W, 3)

    Returns
    -------
    gray : ndarray of uint8, shape (..., H, W)
        Equal to ``images.to_gray(rgb)`` (a pixel lying within float32 rounding of
        a level boundary may land one level off).
    lightness : ndarray of float32, shape (..., H, W)
        Equal to :func:`lightness`.
    """
    tables = _tables()
    rgb = _uint8_rgb(rgb)
    if _is_gray(rgb):
        gray = np.ascontiguousarray(rgb[..., 0])
        return gray, tables["gray_lightness"][gray]
    flat = np.ascontiguousarray(rgb).reshape(-1, 3)
    gray = np.empty(flat.shape[0], np.uint8)
    light = np.empty(flat.shape[0], np.float32)

    def block(sl):
        y = _luminance_block(flat[sl])
        index = y * np.float32(_ENCODE_STEPS)
        index += np.float32(0.5)
        np.clip(index, 0, _ENCODE_STEPS, out=index)
        level = tables["encode"][index.astype(np.int32)].astype(np.int16)
        # The table is right to within one level; step over the exact boundaries where it is not.
        level += y >= tables["gray_upper"][level]
        level -= y < tables["gray_lower"][level]
        gray[sl] = level
        light[sl] = _lightness_block(y)

    _blocks(block, flat.shape[0])
    return gray.reshape(rgb.shape[:-1]), light.reshape(rgb.shape[:-1])


def lightness(rgb):
    """CIE L (0-100) of an RGB image, computed in float32 from the luminance.

    Equal to ``rgb_to_lab(rgb)[..., 0]`` within 1e-3, several times faster,
    which matters for full-resolution photos.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (..., H, W, 3)

    Returns
    -------
    lightness : ndarray of float32, shape (..., H, W)
    """
    tables = _tables()
    rgb = _uint8_rgb(rgb)
    if _is_gray(rgb):
        return tables["gray_lightness"][rgb[..., 0]]
    flat = np.ascontiguousarray(rgb).reshape(-1, 3)
    light = np.empty(flat.shape[0], np.float32)

    def block(sl):
        light[sl] = _lightness_block(_luminance_block(flat[sl]))

    _blocks(block, flat.shape[0])
    return light.reshape(rgb.shape[:-1])


def lab_to_rgb_fast(lightness_100, ab):
    """CIE Lab (D65) to RGB uint8 in float32 numpy, for full-resolution merges.

    Parameters
    ----------
    lightness_100 : ndarray, shape (..., H, W), L in [0, 100]
    ab : ndarray, shape (..., H, W, 2), unscaled a and b

    Returns
    -------
    rgb : ndarray of uint8, shape (..., H, W, 3)
    """
    lightness_100 = np.ascontiguousarray(lightness_100, dtype=np.float32)
    ab = np.ascontiguousarray(ab, dtype=np.float32)
    shape = lightness_100.shape
    if ab.shape != (*shape, 2):
        raise ValueError(f"ab of shape {ab.shape} does not match L of shape {shape}")
    tables = _tables()
    matrix, encode = tables["xyz_to_rgb"], tables["encode"]
    flat_l, flat_ab = lightness_100.reshape(-1), ab.reshape(-1, 2)
    out = np.empty((flat_l.size, 3), np.uint8)

    def block(sl):
        fy = flat_l[sl] + np.float32(16.0)
        fy *= np.float32(1.0 / 116.0)
        xyz = (
            _lab_f_inverse(fy + flat_ab[sl, 0] * np.float32(1.0 / 500.0)),
            _lab_f_inverse(fy),
            _lab_f_inverse(fy - flat_ab[sl, 1] * np.float32(1.0 / 200.0)),
        )
        index = np.empty((fy.size, 3), np.int32)
        for c in range(3):
            linear = xyz[0] * matrix[c, 0]
            linear += xyz[1] * matrix[c, 1]
            linear += xyz[2] * matrix[c, 2]
            # Encode through a 16-bit lookup table: exact to 1/20 of a level, and far faster than pow().
            linear *= np.float32(_ENCODE_STEPS)
            linear += np.float32(0.5)
            np.clip(linear, 0, _ENCODE_STEPS, out=linear)
            index[:, c] = linear
        np.take(encode, index, out=out[sl])

    _blocks(block, flat_l.size)
    return out.reshape(*shape, 3)
