"""Metrics and figures for judging colorizations.

Pure numpy / scikit-image; matplotlib is imported only inside the figure
functions, which use :class:`matplotlib.figure.Figure` directly (no pyplot
global state), so they work headless.

All images are RGB ``uint8`` arrays of shape (H, W, 3) unless said otherwise.
Metrics:

* ``mse_ab``: mean squared error of the scaled chroma (``ab / 127``), the
  paper's training loss.
* ``psnr``: peak signal-to-noise ratio of the RGB images (0-255), in dB.
* ``ssim``: structural similarity of the RGB images.
* colourfulness (Hasler & Suesstrunk, 2003), for the prediction and the truth:
  plausible colorizations should be about as colourful as real photos, and the
  MSE loss is known to give washed-out, less colourful results.
"""

import math
from pathlib import Path

import numpy as np

from koala_utils.color import AB_SCALE, lab_to_rgb, rgb_to_lab, to_uint8

METRICS = ("mse_ab", "psnr", "ssim", "cf_pred", "cf_true", "cf_ratio", "delta_cf")
DELTA_METRICS = ("psnr", "ssim", "mse_ab", "cf_ratio")
SSIM_WINDOW = 7
GRID_ROW_INCHES = 3.0
GRID_DPI = 100


def _as_rgb_uint8(rgb, what="image"):
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{what}: expected an RGB image of shape (H, W, 3), got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb
    if np.issubdtype(rgb.dtype, np.floating):
        return to_uint8(rgb)
    return np.clip(rgb, 0, 255).astype(np.uint8)


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
    rgb = _as_rgb_uint8(rgb_uint8).astype(np.float64)
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

    pred = _as_rgb_uint8(pred_rgb, "prediction")
    true = _as_rgb_uint8(true_rgb, "truth")
    if np.array_equal(pred, true):
        return math.inf
    return float(peak_signal_noise_ratio(true, pred, data_range=255))


def ssim(pred_rgb, true_rgb):
    """Structural similarity of two RGB images (data range 255, mean over channels).

    The window is 7 pixels, or the largest odd size that fits images smaller
    than that; images thinner than 3 pixels have no SSIM (``nan``).

    Parameters
    ----------
    pred_rgb, true_rgb : ndarray of uint8, shape (H, W, 3)

    Returns
    -------
    float in [-1, 1], or nan
    """
    from skimage.metrics import structural_similarity

    pred = _as_rgb_uint8(pred_rgb, "prediction")
    true = _as_rgb_uint8(true_rgb, "truth")
    window = min(SSIM_WINDOW, *true.shape[:2])
    if window % 2 == 0:
        window -= 1
    if window < 3:
        return math.nan
    return float(structural_similarity(true, pred, channel_axis=-1, data_range=255, win_size=window))


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
    return rgb_to_lab(_as_rgb_uint8(rgb))[..., 1:] / AB_SCALE


def image_metrics(pred_rgb, true_rgb, pred_ab=None, true_ab=None):
    """All metrics of one colorization against its ground truth.

    Parameters
    ----------
    pred_rgb, true_rgb : ndarray of uint8, shape (H, W, 3)
        The colorized image and the real photo.
    pred_ab, true_ab : ndarray, shape (H, W, 2), optional
        Scaled chroma (``ab / 127``), e.g. the network's raw output. Computed
        from the RGB images when not given.

    Returns
    -------
    dict
        ``mse_ab`` (scaled chroma MSE, >= 0), ``psnr`` (dB, ``inf`` when the
        images are identical), ``ssim`` (``nan`` below 3 px), ``cf_pred`` and
        ``cf_true`` (colourfulness), ``cf_ratio`` = cf_pred / cf_true (``nan``
        when the truth is gray) and ``delta_cf`` = cf_pred - cf_true.
    """
    pred = _as_rgb_uint8(pred_rgb, "prediction")
    true = _as_rgb_uint8(true_rgb, "truth")
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
    lab = rgb_to_lab(_as_rgb_uint8(true_rgb))
    lab[..., 1:] = 0.0
    return to_uint8(lab_to_rgb(lab))


def _mean(values, key):
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan
    if key == "psnr":
        finite = values[np.isfinite(values)]
        if finite.size:
            return float(finite.mean())
        return math.inf if np.all(values == math.inf) else math.nan
    if np.all(np.isnan(values)):
        return math.nan
    return float(np.nanmean(values))


def evaluate_images(preds, truths, names=None, grays=None):
    """Score colorizations and the gray baseline over a set of photos.

    Parameters
    ----------
    preds, truths : sequence of ndarray of uint8, each shape (H_i, W_i, 3)
        Colorized images and their real photos, pairwise of equal shape.
    names : sequence of str, optional
        One per image; ``"image_0"``, ``"image_1"``, ... by default.
    grays : sequence of ndarray of uint8, optional
        The :func:`gray_baseline` of each truth, when already computed.

    Returns
    -------
    dict
        ``per_image``: one dict per image with ``name``, the metrics of
        :func:`image_metrics`, and the same metrics of :func:`gray_baseline`
        prefixed ``gray_``. ``mean`` and ``gray_mean``: the average of each
        metric (ignoring nan; the PSNR mean is over finite values only, and is
        ``inf`` when every image is reproduced exactly). ``delta``: ours minus
        gray for ``psnr``, ``ssim``, ``mse_ab`` and ``cf_ratio``, averaged over
        the per-image differences, so that the PSNR difference compares the two
        on the same images (those where ours is not exact).
        ``n_images`` and ``n_psnr_infinite`` count the images and the exact ones.
    """
    preds, truths = list(preds), list(truths)
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} ground-truth images")
    names = [f"image_{i}" for i in range(len(preds))] if names is None else list(names)
    if len(names) != len(preds):
        raise ValueError(f"{len(names)} names for {len(preds)} images")
    grays = [gray_baseline(true) for true in truths] if grays is None else list(grays)
    per_image = []
    for name, pred, true, gray_rgb in zip(names, preds, truths, grays, strict=True):
        row = {"name": name, **image_metrics(pred, true)}
        gray = image_metrics(gray_rgb, true)
        row.update({f"gray_{key}": value for key, value in gray.items()})
        per_image.append(row)
    mean = {key: _mean([row[key] for row in per_image], key) for key in METRICS}
    gray_mean = {key: _mean([row[f"gray_{key}"] for row in per_image], key) for key in METRICS}
    return {
        "per_image": per_image,
        "mean": mean,
        "gray_mean": gray_mean,
        "delta": {
            key: _mean([_difference(row[key], row[f"gray_{key}"]) for row in per_image], key) for key in DELTA_METRICS
        },
        "n_images": len(per_image),
        "n_psnr_infinite": sum(1 for row in per_image if row["psnr"] == math.inf),
    }


def _difference(ours, gray):
    if math.isinf(ours) and math.isinf(gray) and ours == gray:
        return math.nan
    return ours - gray


def _fmt(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.4f}"


def format_table(result):
    """A small aligned text table of :func:`evaluate_images` means.

    Parameters
    ----------
    result : dict
        What :func:`evaluate_images` returned.

    Returns
    -------
    str
        One row per metric, columns ``ours``, ``gray`` and ``difference``
        (ours minus gray; ``result["delta"]`` where it has the metric).
    """
    header = ("metric", "ours", "gray", "difference")
    rows = [header]
    for key in METRICS:
        ours, gray = result["mean"][key], result["gray_mean"][key]
        difference = result["delta"].get(key, _difference(ours, gray))
        rows.append((key, _fmt(ours), _fmt(gray), _fmt(difference)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    lines.insert(1, "-" * len(lines[0]))
    footer = f"({result['n_images']} images"
    if 0 < result["n_psnr_infinite"] < result["n_images"]:
        footer += f"; {result['n_psnr_infinite']} reproduced exactly, left out of the PSNR mean and difference"
    return "\n".join(lines) + "\n" + footer + ")"


def _show(ax, image, title=None):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=GRID_DPI, format="png")
    return path


def comparison_grid(grays, preds, truths, titles=None, path=None, max_rows=8):
    """A figure with one row per photo: gray input | prediction | ground truth.

    The layout of the paper's Fig. 4 and 5. Uses :class:`matplotlib.figure.Figure`
    directly, so it works without a display.

    Parameters
    ----------
    grays : sequence of ndarray of uint8, shape (H, W) or (H, W, 3)
    preds, truths : sequence of ndarray of uint8, shape (H, W, 3)
    titles : sequence of str, optional
        One per row, shown over the gray image.
    path : str or os.PathLike, optional
        Where to save a PNG (``GRID_DPI`` dots per inch, 3 inches per row).
    max_rows : int
        Only the first ``max_rows`` photos are shown.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    grays, preds, truths = list(grays), list(preds), list(truths)
    if not (len(grays) == len(preds) == len(truths)):
        raise ValueError(f"got {len(grays)} gray, {len(preds)} predicted and {len(truths)} true images")
    rows = min(len(grays), max_rows)
    if rows == 0:
        raise ValueError("comparison_grid needs at least one image")
    fig = Figure(figsize=(3 * GRID_ROW_INCHES, rows * GRID_ROW_INCHES))
    axes = fig.subplots(rows, 3, squeeze=False)
    for i in range(rows):
        label = titles[i] if titles is not None else None
        header = ("Gray input", "Predicted", "Ground truth") if i == 0 else (None, None, None)
        first = f"{header[0]}\n{label}" if header[0] and label else (header[0] or label)
        _show(axes[i, 0], grays[i], first)
        _show(axes[i, 1], preds[i], header[1])
        _show(axes[i, 2], truths[i], header[2])
    fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def before_after_gallery(befores, afters, titles, path, columns=2):
    """Save a PNG gallery of before / after pairs (e.g. gray photo / colorized).

    Parameters
    ----------
    befores, afters : sequence of ndarray of uint8, shape (H, W) or (H, W, 3)
    titles : sequence of str
        One per pair.
    path : str or os.PathLike
        The PNG to write (folders are created).
    columns : int
        Pairs per row.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from matplotlib.figure import Figure

    befores, afters, titles = list(befores), list(afters), list(titles)
    if not (len(befores) == len(afters) == len(titles)) or not befores:
        raise ValueError(f"got {len(befores)} befores, {len(afters)} afters and {len(titles)} titles (need >= 1 each)")
    columns = max(1, min(columns, len(befores)))
    rows = math.ceil(len(befores) / columns)
    fig = Figure(figsize=(2 * columns * GRID_ROW_INCHES * 0.8, rows * GRID_ROW_INCHES))
    axes = fig.subplots(rows, 2 * columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (before, after, title) in enumerate(zip(befores, afters, titles, strict=True)):
        row, col = divmod(i, columns)
        _show(axes[row, 2 * col], before, title)
        _show(axes[row, 2 * col + 1], after, "colorized")
        axes[row, 2 * col].axis("on")
        axes[row, 2 * col + 1].axis("on")
    fig.tight_layout()
    return _save(fig, path)


def predict_records(model, records_dir, split="val", limit=None, batch_size=16):
    """Colorize the stored photos of a record split with a model.

    Returns
    -------
    dict
        ``names``; ``truth``, ``pred`` and ``gray`` RGB uint8 photos cropped to
        their content (the white padding removed), each a list of (h, w, 3).
    """
    from .color import lab_scaled_to_rgb, lightness, scale_l
    from .data import load_arrays
    from .model import Predictor

    arrays = load_arrays(records_dir, split, limit=limit)
    predictor = Predictor(model)
    truth, pred, gray = [], [], []
    for start in range(0, len(arrays["names"]), batch_size):
        rgb = arrays["rgb"][start : start + batch_size]
        l_scaled = scale_l(lightness(rgb))[..., None]
        ab = predictor(l_scaled, arrays["embedding"][start : start + batch_size])
        for k in range(len(rgb)):
            top, left, h, w = arrays["box"][start + k]
            crop = (slice(top, top + h), slice(left, left + w))
            truth.append(rgb[k][crop])
            pred.append(lab_scaled_to_rgb(l_scaled[k][crop], ab[k][crop]))
            gray.append(gray_baseline(rgb[k][crop]))
    return {"names": arrays["names"], "truth": truth, "pred": pred, "gray": gray}


def evaluate_records(model, records_dir, split="val", limit=None, batch_size=16):
    """Metrics of a model on a record split, against the gray baseline.

    Returns
    -------
    dict
        :func:`evaluate_images`' result, plus ``images``: the output of
        :func:`predict_records` (for figures).
    """
    images = predict_records(model, records_dir, split, limit, batch_size)
    result = evaluate_images(images["pred"], images["truth"], names=images["names"], grays=images["gray"])
    result["images"] = images
    return result
