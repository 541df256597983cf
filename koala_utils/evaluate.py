"""Judging colorizations over a set of photos, against the gray baseline.

The metrics of one image are in :mod:`koala_utils.metrics`, the figures in
:mod:`koala_utils.figures`; both are re-exported here. Over a set:

* every metric is averaged over the images (PSNR over the finite values);
* ``cf_ratio`` is the set's mean colourfulness of the predictions divided by
  that of the real photos (a ratio of means: per-image ratios explode on
  near-gray photos). The mean of the per-image ratios is kept as
  ``cf_ratio_per_image``, a secondary column;
* ``mse_ab`` is computed on the network's output when it is given (as
  :func:`evaluate_records` does: the paper's loss), else on the displayed
  colours; ``result["mse_ab_of"]`` says which.
"""

import math

import numpy as np

from .figures import GRID_DPI, GRID_ROW_INCHES, before_after_gallery, comparison_grid
from .metrics import METRICS as IMAGE_METRICS
from .metrics import (
    SSIM_SIGMA,
    SSIM_WINDOW,
    colorfulness,
    gray_baseline,
    image_metrics,
    mse_ab,
    psnr,
    scaled_ab,
    ssim,
)

METRICS = (*IMAGE_METRICS, "cf_ratio_per_image")
DELTA_METRICS = ("psnr", "ssim", "mse_ab")  # averaged per-image differences; cf_ratio: difference of set ratios
NETWORK, DISPLAYED = "network output", "displayed colours"


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


def _set_ratio(rows, prefix=""):
    """Mean colourfulness of the predictions over that of the truths (nan when the truths are all gray)."""
    pred = _mean([row[f"{prefix}cf_pred"] for row in rows], "cf_pred")
    true = _mean([row[f"{prefix}cf_true"] for row in rows], "cf_true")
    return pred / true if true > 0 else math.nan


def _set_means(rows, prefix=""):
    means = {key: _mean([row[prefix + key] for row in rows], key) for key in IMAGE_METRICS}
    means["cf_ratio_per_image"] = means["cf_ratio"]
    means["cf_ratio"] = _set_ratio(rows, prefix) if rows else math.nan
    return means


def evaluate_images(preds, truths, names=None, grays=None, pred_abs=None):
    """Score colorizations and the gray baseline over a set of photos.

    Parameters
    ----------
    preds, truths : sequence of ndarray of uint8, each shape (H_i, W_i, 3)
        Colorized images and their real photos, pairwise of equal shape.
    names : sequence of str, optional
        One per image; ``"image_0"``, ``"image_1"``, ... by default.
    grays : sequence of ndarray of uint8, optional
        The :func:`gray_baseline` of each truth, when already computed.
    pred_abs : sequence of ndarray, each shape (H_i, W_i, 2), optional
        The network's scaled ab (``ab / 127``) for each prediction: ``mse_ab``
        is then computed on it (and on ``ab = 0`` for the gray baseline), not
        on the displayed colours.

    Returns
    -------
    dict
        ``per_image``: one dict per image with ``name``, the metrics of
        :func:`image_metrics` (``cf_ratio`` per image), and the same metrics of
        :func:`gray_baseline` prefixed ``gray_``. ``mean`` and ``gray_mean``:
        each metric over the set (the average, ignoring nan; PSNR over finite
        values only, ``inf`` when every image is reproduced exactly;
        ``cf_ratio`` the ratio of the mean colourfulnesses and
        ``cf_ratio_per_image`` the average of the per-image ratios).
        ``delta``: ours minus gray, for ``psnr``, ``ssim`` and ``mse_ab``
        averaged over the per-image differences (so that the PSNR difference
        compares the two on the same images), for ``cf_ratio`` the difference
        of the set ratios. ``n_images`` and ``n_psnr_infinite`` count the
        images and the exact ones; ``mse_ab_of`` is ``"network output"`` or
        ``"displayed colours"``.
    """
    preds, truths = list(preds), list(truths)
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} ground-truth images")
    names = [f"image_{i}" for i in range(len(preds))] if names is None else list(names)
    if len(names) != len(preds):
        raise ValueError(f"{len(names)} names for {len(preds)} images")
    grays = [gray_baseline(true) for true in truths] if grays is None else list(grays)
    abs_ = [None] * len(preds) if pred_abs is None else list(pred_abs)
    if len(abs_) != len(preds):
        raise ValueError(f"{len(abs_)} ab predictions for {len(preds)} images")
    per_image = []
    for name, pred, true, gray_rgb, pred_ab in zip(names, preds, truths, grays, abs_, strict=True):
        true_ab = None if pred_ab is None else scaled_ab(true)
        gray_ab = None if pred_ab is None else np.zeros_like(true_ab)
        row = {"name": name, **image_metrics(pred, true, pred_ab=pred_ab, true_ab=true_ab)}
        gray = image_metrics(gray_rgb, true, pred_ab=gray_ab, true_ab=true_ab)
        row.update({f"gray_{key}": value for key, value in gray.items()})
        per_image.append(row)
    mean, gray_mean = _set_means(per_image), _set_means(per_image, "gray_")
    delta = {
        key: _mean([_difference(row[key], row[f"gray_{key}"]) for row in per_image], key) for key in DELTA_METRICS
    }
    delta["cf_ratio"] = mean["cf_ratio"] - gray_mean["cf_ratio"]
    return {
        "per_image": per_image,
        "mean": mean,
        "gray_mean": gray_mean,
        "delta": delta,
        "n_images": len(per_image),
        "n_psnr_infinite": sum(1 for row in per_image if row["psnr"] == math.inf),
        "mse_ab_of": DISPLAYED if pred_abs is None else NETWORK,
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
    footer = f"({result['n_images']} images; mse_ab of the {result.get('mse_ab_of', DISPLAYED)}"
    if 0 < result["n_psnr_infinite"] < result["n_images"]:
        footer += f"; {result['n_psnr_infinite']} reproduced exactly, left out of the PSNR mean and difference"
    return "\n".join(lines) + "\n" + footer + ")"


def predict_records(model, records_dir, split="val", limit=None, batch_size=16, what="the model"):
    """Colorize the stored photos of a record split with a model.

    ``what`` names the model in a mismatch error (e.g. its file).

    Returns
    -------
    dict
        ``names``; ``truth``, ``pred`` and ``gray`` RGB uint8 photos cropped to
        their content (the white padding removed), each a list of (h, w, 3);
        ``pred_ab``: the network's scaled ab for each, float32 (h, w, 2).

    Raises
    ------
    koala_utils.backbone_record.BackboneMismatchError
        The records hold embeddings of another backbone than the one the model
        records (or of another width).
    """
    from . import backbone_record
    from .color import lab_scaled_to_rgb, lightness, scale_l
    from .data import load_arrays, read_manifest
    from .model import Predictor

    manifest = read_manifest(records_dir)
    backbone_record.check(model, manifest["backbone"], manifest["embed_dim"], what=what,
                          against=f"the backbone of the records {records_dir}")
    arrays = load_arrays(records_dir, split, limit=limit)
    predictor = Predictor(model)
    truth, pred, gray, pred_ab = [], [], [], []
    for start in range(0, len(arrays["names"]), batch_size):
        rgb = arrays["rgb"][start : start + batch_size]
        l_scaled = scale_l(lightness(rgb))[..., None]
        ab = predictor(l_scaled, arrays["embedding"][start : start + batch_size])
        for k in range(len(rgb)):
            top, left, h, w = arrays["box"][start + k]
            crop = (slice(top, top + h), slice(left, left + w))
            truth.append(rgb[k][crop])
            pred.append(lab_scaled_to_rgb(l_scaled[k][crop], ab[k][crop]))
            pred_ab.append(ab[k][crop])
            gray.append(gray_baseline(rgb[k][crop]))
    return {"names": arrays["names"], "truth": truth, "pred": pred, "gray": gray, "pred_ab": pred_ab}


def evaluate_records(model, records_dir, split="val", limit=None, batch_size=16, what="the model"):
    """Metrics of a model on a record split, against the gray baseline (``what``: see :func:`predict_records`).

    Returns
    -------
    dict
        :func:`evaluate_images`' result (``mse_ab`` on the network's output),
        plus ``images``: the output of :func:`predict_records` (for figures).
    """
    images = predict_records(model, records_dir, split, limit, batch_size, what=what)
    result = evaluate_images(images["pred"], images["truth"], names=images["names"], grays=images["gray"],
                             pred_abs=images["pred_ab"])
    result["images"] = images
    return result


__all__ = [
    "METRICS", "colorfulness", "psnr", "ssim", "mse_ab", "scaled_ab", "image_metrics", "gray_baseline",
    "evaluate_images", "format_table", "predict_records", "evaluate_records", "comparison_grid",
    "before_after_gallery", "GRID_DPI", "GRID_ROW_INCHES", "SSIM_SIGMA", "SSIM_WINDOW",
]
