"""Metrics of one colorization against its ground truth.

Pure numpy / scikit-image. All images are RGB ``uint8`` arrays of shape
(H, W, 3) unless said otherwise.

* ``mse_ab``: mean squared error of the scaled chroma (``ab / 127``). Given the
  network's output it is the paper's training loss; computed from two RGB
  images it is the error of the *displayed* colours (after the gamut clipping
  and 8-bit rounding of the prediction).
* ``psnr``: peak signal-to-noise ratio of the RGB images (0-255), in dB.
* ``ssim``: structural similarity of the RGB images with the Gaussian window
  (sigma 1.5, population covariances) of Wang et al. (2004), as published
  tables use it.
* colourfulness (Hasler & Suesstrunk, 2003), for the prediction and the truth:
  plausible colorizations should be about as colourful as real photos, and the
  MSE loss is known to give washed-out, less colourful results.
"""

import math

import numpy as np

from .color import AB_SCALE, lab_to_rgb, rgb_to_lab, to_uint8
from .images import ImageLoadError, array_to_rgb

METRICS = ("mse_ab", "psnr", "ssim", "cf_pred", "cf_true", "cf_ratio", "delta_cf")
SSIM_SIGMA = 1.5
# scikit-image truncates the Gaussian at 3.5 sigma: an 11-pixel window.
SSIM_WINDOW = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1


def as_rgb_uint8(rgb, what="image"):
    """An RGB image as uint8, through :func:`koala_utils.images.array_to_rgb`.

    Parameters
    ----------
    rgb : array_like, shape (H, W, 3)
        uint8 in [0, 255], uint16 in [0, 65535], float in [0, 1] or another
        integer type (clipped to [0, 255]).
    what : str
        Names the image in the error.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)

    Raises
    ------
    ValueError
        Another shape (gray or RGBA is not a prediction or a truth), or what
        ``array_to_rgb`` refuses (no pixels, NaN); the message names ``what``.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{what}: expected an RGB image of shape (H, W, 3), got shape {rgb.shape}")
    try:
        return array_to_rgb(rgb)
    except ImageLoadError as exc:
        raise ValueError(f"{what}: {exc}") from exc


def colorfulness(rgb_uint8):
    """Colourfulness of an image (Hasler & Suesstrunk, 2003).

    With ``rg = R - G`` and ``yb = (R + G) / 2 - B`` over all pixels (0-255
    values), ``CF = sqrt(std(rg)**2 + std(yb)**2) + 0.3 * sqrt(mean(rg)**2 + mean(yb)**2)``.
    Standard deviations are population ones (``ddof=0``).

    Parameters
    ----------
    rgb_uint8 : ndarray of uint8, shape (H, W, 3)

    Returns
    -------
    float
        0 for a gray image; about 15 is "slightly colourful", 33 "moderately",
        59 "quite", 82 and more "highly" colourful on the authors' scale.
    """
    rgb = as_rgb_uint8(rgb_uint8).astype(np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    spread = math.sqrt(rg.std() ** 2 + yb.std() ** 2)
    centre = math.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(spread + 0.3 * centre)


def psnr(pred_rgb, true_rgb):
    """Peak signal-to-noise ratio of two RGB images, in dB (data range 255).

    Parameters
    ----------
    pred_rgb, true_rgb : ndarray of uint8, shape (H, W, 3)

    Returns
    -------
    float
        ``10 * log10(255**2 / MSE)``; ``inf`` for identical images.
    """
    from skimage.metrics import peak_signal_noise_ratio

    pred = as_rgb_uint8(pred_rgb, "prediction")
    true = as_rgb_uint8(true_rgb, "truth")
    if np.array_equal(pred, true):
        return math.inf
    return float(peak_signal_noise_ratio(true, pred, data_range=255))


def ssim(pred_rgb, true_rgb):
    """Structural similarity of two RGB images (data range 255, mean over channels).

    Gaussian-weighted statistics (sigma 1.5, truncated to an 11-pixel window)
    with population covariances, as in Wang et al. (2004) and the tables that
    quote SSIM. Images smaller than the window have no SSIM (``nan``).

    Parameters
    ----------
    pred_rgb, true_rgb : ndarray of uint8, shape (H, W, 3)

    Returns
    -------
    float in [-1, 1], or nan
    """
    from skimage.metrics import structural_similarity

    pred = as_rgb_uint8(pred_rgb, "prediction")
    true = as_rgb_uint8(true_rgb, "truth")
    if min(true.shape[:2]) < SSIM_WINDOW:
        return math.nan
    return float(
        structural_similarity(
            true, pred, channel_axis=-1, data_range=255,
            gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False,
        )
    )


def mse_ab(pred_ab, true_ab):
    """Mean squared error of two chroma images, both scaled by ``1 / 127``.

    Parameters
    ----------
    pred_ab, true_ab : ndarray, shape (H, W, 2)
        a and b already divided by 127 (about [-1, 1]).

    Returns
    -------
    float
    """
    diff = np.asarray(pred_ab, dtype=np.float64) - np.asarray(true_ab, dtype=np.float64)
    return float(np.mean(diff**2))


def scaled_ab(rgb):
    """The scaled chroma ``ab / 127`` of an RGB image, shape (H, W, 2)."""
    return rgb_to_lab(as_rgb_uint8(rgb))[..., 1:] / AB_SCALE


def image_metrics(pred_rgb, true_rgb, pred_ab=None, true_ab=None):
    """All metrics of one colorization against its ground truth.

    Parameters
    ----------
    pred_rgb, true_rgb : ndarray of uint8, shape (H, W, 3)
        The colorized image and the real photo.
    pred_ab, true_ab : ndarray, shape (H, W, 2), optional
        Scaled chroma (``ab / 127``), e.g. the network's raw output. Computed
        from the RGB images (the displayed colours) when not given.

    Returns
    -------
    dict
        ``mse_ab`` (scaled chroma MSE, >= 0), ``psnr`` (dB, ``inf`` when the
        images are identical), ``ssim`` (``nan`` below 11 px), ``cf_pred`` and
        ``cf_true`` (colourfulness), ``cf_ratio`` = cf_pred / cf_true (``nan``
        when the truth is gray) and ``delta_cf`` = cf_pred - cf_true.
    """
    pred = as_rgb_uint8(pred_rgb, "prediction")
    true = as_rgb_uint8(true_rgb, "truth")
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {true.shape}")
    pred_ab = scaled_ab(pred) if pred_ab is None else pred_ab
    true_ab = scaled_ab(true) if true_ab is None else true_ab
    cf_pred = colorfulness(pred)
    cf_true = colorfulness(true)
    return {
        "mse_ab": mse_ab(pred_ab, true_ab),
        "psnr": psnr(pred, true),
        "ssim": ssim(pred, true),
        "cf_pred": cf_pred,
        "cf_true": cf_true,
        "cf_ratio": cf_pred / cf_true if cf_true > 0 else math.nan,
        "delta_cf": cf_pred - cf_true,
    }


def gray_baseline(true_rgb):
    """The trivial colorization: the photo with its chroma removed.

    Parameters
    ----------
    true_rgb : ndarray of uint8, shape (H, W, 3)

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
        Same CIE L as the photo, ``a = b = 0`` (up to 8-bit rounding).
    """
    lab = rgb_to_lab(as_rgb_uint8(true_rgb))
    lab[..., 1:] = 0.0
    return to_uint8(lab_to_rgb(lab))


def colour_cast(pred_rgb, true_rgb):
    """How far a colorization's average colour is from the photo's: ``|mean ab(pred) - mean ab(true)|``.

    A global tint (a red sky, a green veil over a whole landscape) raises it; local errors that average out do
    not. Over a set, average it over the photos.

    Parameters
    ----------
    pred_rgb, true_rgb : ndarray of uint8, shape (H, W, 3)

    Returns
    -------
    float
        Euclidean distance in the ab plane, Lab units (0 = the same average colour).
    """
    pred_ab = rgb_to_lab(as_rgb_uint8(pred_rgb))[..., 1:].reshape(-1, 2).mean(axis=0)
    true_ab = rgb_to_lab(as_rgb_uint8(true_rgb))[..., 1:].reshape(-1, 2).mean(axis=0)
    return float(np.linalg.norm(pred_ab - true_ab))
