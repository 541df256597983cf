"""CIE Lab colour conversion and the authors' scaling to [-1, 1].

Two implementations of sRGB -> CIE Lab (D65 white, 2 degree observer):

* :func:`rgb_to_lab` / :func:`lab_to_rgb` use scikit-image on numpy arrays. They
  are the reference, and what the notebooks teach with.
* :func:`rgb_to_lab_tf` is a vectorised TensorFlow op
  for the ``tf.data`` pipeline. TensorFlow is imported lazily, so this module is
  usable on any Keras backend.

For full-resolution photos, :func:`lightness`, :func:`gray_and_lightness` and
:func:`lab_to_rgb_fast` are fast float32 numpy paths; they live in
:mod:`koala_utils.srgb` with the sRGB constants, and are re-exported here.

The network sees ``L`` scaled with ``2 * L / 100 - 1`` and predicts ``ab / 127``
(Baldassarre et al., 2017).
"""

import warnings

import numpy as np

from ._io import tf as _tf
from .srgb import (  # the fast float32 paths, re-exported: color.lightness and the rest keep working
    D65_WHITE,
    RGB_TO_XYZ,
    XYZ_TO_RGB,
    gray_and_lightness,
    lab_to_rgb_fast,
    lightness,
    linear_to_srgb,
    srgb_to_linear,
    to_uint8,
)

AB_SCALE = 127.0

__all__ = [
    "AB_SCALE", "D65_WHITE", "RGB_TO_XYZ", "XYZ_TO_RGB", "rgb_to_lab", "lab_to_rgb", "scale_l", "unscale_l",
    "scale_ab", "unscale_ab", "to_uint8", "lab_scaled_to_rgb", "rgb_to_lab_tf", "srgb_to_linear", "linear_to_srgb",
    "gray_and_lightness", "lightness", "lab_to_rgb_fast",
]


def _as_float_rgb(rgb):
    rgb = np.asarray(rgb)
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an RGB image of shape (..., H, W, 3), got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float64) / 255.0
    return rgb.astype(np.float64)


def rgb_to_lab(rgb):
    """Convert sRGB to CIE Lab (D65) with scikit-image.

    Parameters
    ----------
    rgb : ndarray, shape (..., H, W, 3)
        uint8 in [0, 255] or float in [0, 1].

    Returns
    -------
    lab : ndarray of float64, shape (..., H, W, 3)
        L in [0, 100], a and b roughly in [-128, 127].
    """
    from skimage import color as skcolor  # here, so that the onnx engine's light install needs no scikit-image

    return skcolor.rgb2lab(_as_float_rgb(rgb))


def lab_to_rgb(lab):
    """Convert CIE Lab (D65) to sRGB with scikit-image.

    Parameters
    ----------
    lab : ndarray, shape (..., H, W, 3)
        L in [0, 100], a and b roughly in [-128, 127].

    Returns
    -------
    rgb : ndarray of float64, shape (..., H, W, 3)
        Values in [0, 1] (out-of-gamut colours are clipped).
    """
    from skimage import color as skcolor

    with warnings.catch_warnings():
        # Predicted colours can leave the sRGB gamut; clipping them is the intended behaviour.
        warnings.filterwarnings("ignore", message=".*negative Z values.*", category=UserWarning)
        rgb = skcolor.lab2rgb(np.asarray(lab, dtype=np.float64))
    return np.clip(rgb, 0.0, 1.0)


def scale_l(lightness):
    """Scale L from [0, 100] to [-1, 1] with the authors' ``2 * L / 100 - 1``."""
    return 2.0 * lightness / 100.0 - 1.0


def unscale_l(scaled):
    """Invert :func:`scale_l`: [-1, 1] -> [0, 100]."""
    return (scaled + 1.0) * 50.0


def scale_ab(ab):
    """Scale a and b to about [-1, 1] with the authors' ``ab / 127``."""
    return ab / AB_SCALE


def unscale_ab(scaled):
    """Invert :func:`scale_ab`."""
    return scaled * AB_SCALE


def lab_scaled_to_rgb(l_scaled, ab_scaled):
    """Merge scaled L and ab into an 8-bit RGB image.

    Parameters
    ----------
    l_scaled : ndarray, shape (H, W) or (H, W, 1)
        L scaled to [-1, 1].
    ab_scaled : ndarray, shape (H, W, 2)
        ab scaled by 1/127.

    Returns
    -------
    rgb : ndarray of uint8, shape (H, W, 3)
    """
    l_scaled = np.asarray(l_scaled, dtype=np.float64)
    if l_scaled.ndim == ab_scaled.ndim:
        l_scaled = l_scaled[..., 0]
    lab = np.concatenate([unscale_l(l_scaled)[..., None], unscale_ab(np.asarray(ab_scaled, dtype=np.float64))], axis=-1)
    return to_uint8(lab_to_rgb(lab))


# --------------------------------------------------------------------------- TF
def rgb_to_lab_tf(rgb):
    """Vectorised sRGB -> CIE Lab (D65) in TensorFlow.

    Parameters
    ----------
    rgb : tf.Tensor, shape (..., 3)
        float in [0, 1], or uint8 in [0, 255].

    Returns
    -------
    lab : tf.Tensor of float32, shape (..., 3)
        L in [0, 100], a and b roughly in [-128, 127].
    """
    tf = _tf()
    rgb = tf.convert_to_tensor(rgb)
    if rgb.dtype == tf.uint8:
        rgb = tf.cast(rgb, tf.float32) / 255.0
    rgb = tf.cast(rgb, tf.float32)
    # x ** p as exp(p * log(x)): the same to float32 rounding, and about 6x faster than tf.pow on CPU,
    # which halves the cost of this conversion in the training pipeline (benchmarks/pipeline_throughput.py).
    linear = tf.where(rgb > 0.04045, tf.exp(2.4 * tf.math.log((rgb + 0.055) / 1.055)), rgb / 12.92)
    matrix = tf.constant((RGB_TO_XYZ / np.array(D65_WHITE)[:, None]).T, tf.float32)
    xyz = tf.tensordot(linear, matrix, axes=1)
    eps = 216.0 / 24389.0
    kappa = 24389.0 / 27.0
    f = tf.where(xyz > eps, tf.exp(tf.math.log(tf.maximum(xyz, eps)) / 3.0), (kappa * xyz + 16.0) / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    lightness = 116.0 * fy - 16.0
    a = 500.0 * (fx - fy)
    b = 200.0 * (fy - fz)
    return tf.stack([lightness, a, b], axis=-1)
