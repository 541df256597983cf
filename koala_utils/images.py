"""Loading any photo a user has, and the white-padding resize of the paper.

Everything here works on numpy arrays and Pillow; nothing needs a deep-learning
framework.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import color

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
WHITE = 255


class ImageLoadError(ValueError):
    """A file could not be read as an image. The message names the file."""


def _from_pil(img, name):
    """Convert an opened Pillow image of any mode to RGB uint8."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=-1)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (WHITE, WHITE, WHITE, 255))
        img = Image.alpha_composite(background, rgba)
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ImageLoadError(f"{name}: unsupported image layout {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _shrink(img, max_side):
    """Make a just-opened Pillow image at most about ``2 * max_side`` on its longer side, cheaply.

    JPEGs are decoded at 1/2, 1/4 or 1/8 scale (``draft``), other formats are
    box-averaged by an integer factor (``reduce``) after decoding; the result
    keeps at least ``2 * max_side`` pixels on its longer side, so that the
    bicubic resize to ``max_side`` that follows sees nearly the same input.
    """
    keep = 2 * max_side
    longest = max(img.size)
    if longest <= keep:
        return img
    box = tuple(max(1, -(-side * keep // longest)) for side in img.size)
    img.draft(None, box)  # no-op for formats other than JPEG
    img.load()
    factor = max(img.size) // keep
    if factor >= 2 and img.mode in ("L", "RGB", "RGBA", "LA", "I", "F", "CMYK", "I;16"):
        img = img.reduce(factor)
    return img


def load_image(source, max_side=None):
    """Load a photo as RGB uint8, whatever its format.

    Gray, gray+alpha, RGBA, palette (with or without transparency), 16-bit and
    CMYK images are all converted; transparency is composited over white and the
    EXIF orientation is applied. Pillow's decompression-bomb guard stays on.

    Parameters
    ----------
    source : str, os.PathLike, PIL.Image.Image or ndarray
        A path, an opened image, or an array of shape (H, W), (H, W, 1),
        (H, W, 3) or (H, W, 4). Float arrays must lie in [0, 1].
    max_side : int, optional
        For files: decode big photos reduced, to between ``2 * max_side`` and
        about ``4 * max_side`` on the longer side (JPEGs are decoded at that
        size, so a 24-megapixel scan never sits in memory whole). For callers
        that resize to ``max_side`` or less anyway, e.g. ``prepare``.

    Returns
    -------
    rgb : ndarray of uint8, shape (H, W, 3)

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        The path does not exist, or is a folder.
    ImageLoadError
        The file exists but is not a readable image (truncated, empty, not an
        image, too large). The message names the file and the reason.
    """
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    if isinstance(source, Image.Image):
        return _from_pil(source, "<PIL image>")
    path = Path(os.fspath(source))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected an image file")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path}: empty file")
    try:
        with Image.open(path) as img:
            img = _shrink(img, max_side) if max_side else img
            img.load()
            return _from_pil(img, path)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{path}: refused, too many pixels ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{path}: not an image file Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{path}: corrupt or truncated image ({exc})") from exc


def array_to_rgb(array):
    """Convert an image array to RGB uint8: the one conversion of the package.

    :func:`load_image` (for arrays), the metrics (``metrics.as_rgb_uint8``) and
    the backbones' gray input (:func:`gray_uint8`) all go through it.

    Parameters
    ----------
    array : array_like, shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)
        One photo, gray, gray with a channel axis, RGB or RGBA, with H, W >= 1.
        Its dtype sets its range: uint8 in [0, 255] (kept as it is); uint16 in
        [0, 65535] (a 16-bit photo, scaled to 8 bits); float in [0, 1]
        (``round(x * 255)``, clipped; NaN and infinity refused); any other
        integer type clipped to [0, 255].

    Returns
    -------
    rgb : ndarray of uint8, shape (H, W, 3), C-contiguous
        Gray is stacked to three equal channels; RGBA is composited over
        white (alpha 0 is white, 255 the colour). A uint8 RGB input that is
        already contiguous is returned as it is, not copied.

    Raises
    ------
    ImageLoadError
        Another shape, no pixels, or a float array with NaN or infinity.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageLoadError(f"array of shape {arr.shape} is not an image (H, W[, 1|3|4])")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(f"array of shape {arr.shape} has no pixels")
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageLoadError("float image contains NaN or infinity")
        arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:4].astype(np.float64) / 255.0
        arr = (arr[..., :3] * alpha + WHITE * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


def to_gray(rgb):
    """Return the gray version of a photo, with the same CIE L as the photo.

    A gray pixel ``g`` has Lab ``(L, 0, 0)``; this picks ``g`` so that ``L``
    equals the photo's lightness (the relative luminance ``Y``, re-encoded).

    Parameters
    ----------
    rgb : ndarray of uint8, shape (H, W, 3), or (H, W) already gray.

    Returns
    -------
    gray : ndarray of uint8, shape (H, W)
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        return rgb.astype(np.uint8)
    linear = color.srgb_to_linear(rgb[..., :3].astype(np.float64) / 255.0)
    return color.to_uint8(color.linear_to_srgb(linear @ color.RGB_TO_XYZ[1]))


def gray_uint8(image):
    """Any image array as a gray uint8 photo: what the backbones take.

    Parameters
    ----------
    image : array_like, shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)
        Any dtype and range :func:`array_to_rgb` takes.

    Returns
    -------
    gray : ndarray of uint8, shape (H, W)
        A uint8 gray input as it is (its channel axis dropped); anything else
        through :func:`array_to_rgb`, then :func:`to_gray`.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8 and image.ndim == 2:
        return image
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0]
    return to_gray(array_to_rgb(image))


def gray_to_rgb(gray):
    """Stack a gray image to three equal channels: (H, W) -> (H, W, 3)."""
    gray = np.asarray(gray)
    if gray.ndim == 3:
        gray = gray[..., 0]
    return np.repeat(gray[..., None], 3, axis=-1)


def is_grayscale(rgb, tolerance=6, fraction=0.01):
    """Tell whether an RGB photo is in fact gray (equal channels).

    Parameters
    ----------
    rgb : ndarray of uint8, shape (H, W, 3)
    tolerance : int
        Largest channel difference (0-255) that still counts as gray.
    fraction : float
        Share of pixels allowed above ``tolerance`` (JPEG noise).

    Returns
    -------
    bool
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 2 or rgb.shape[-1] == 1:
        return True
    arr = rgb.astype(np.int16)
    spread = arr.max(axis=-1) - arr.min(axis=-1)
    return float(np.mean(spread > tolerance)) <= fraction


def pad_box(height, width, size):
    """Geometry of the aspect-keeping resize into a ``size`` square.

    Parameters
    ----------
    height, width : int
        The photo's size.
    size : int
        Side of the square.

    Returns
    -------
    box : tuple of int
        ``(top, left, new_height, new_width)``: where the resized photo lies in
        the square. The longer side becomes ``size``; the other is centred.
    """
    scale = size / max(height, width)
    new_h = max(1, min(size, int(round(height * scale))))
    new_w = max(1, min(size, int(round(width * scale))))
    return (size - new_h) // 2, (size - new_w) // 2, new_h, new_w


def resize(image, height, width):
    """Resize a uint8 image (H, W) or (H, W, 3) with Pillow's bicubic filter."""
    image = np.asarray(image)
    if image.shape[:2] == (height, width):
        return image.copy()
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((width, height), Image.Resampling.BICUBIC))


def resize_pad(image, size, fill=WHITE):
    """Resize a photo to fit a square, keeping its aspect, and pad with white.

    This is the authors' preprocessing, used at 224 px for the encoder and at
    the backbone's own size for the embedding.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, C)
    size : int
        Side of the output square.
    fill : int
        Padding value, 255 (white) as in the paper.

    Returns
    -------
    padded : ndarray of uint8, shape (size, size) or (size, size, C)
    box : tuple of int
        ``(top, left, height, width)`` of the photo inside ``padded``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"resize_pad expects uint8, got {image.dtype}")
    top, left, new_h, new_w = pad_box(image.shape[0], image.shape[1], size)
    resized = resize(image, new_h, new_w)
    out = np.full((size, size) + image.shape[2:], fill, dtype=np.uint8)
    out[top : top + new_h, left : left + new_w] = resized
    return out, (top, left, new_h, new_w)


def list_images(folder, recursive=True):
    """Sorted image files under a folder (by suffix, case-insensitive)."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
