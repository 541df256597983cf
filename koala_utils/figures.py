"""Figures for judging colorizations: comparison grids, before/after galleries, and the vividness curve.

matplotlib is imported only inside the functions, which use
:class:`matplotlib.figure.Figure` directly (no pyplot global state), so they
work headless. Images are ``uint8`` arrays, (H, W) gray or (H, W, 3) RGB.
"""

import math
from pathlib import Path

import numpy as np

GRID_ROW_INCHES = 3.0
GRID_DPI = 100


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


def vividness_curves(report, set_name):
    """The accuracy-against-colourfulness points of one set of a ``benchmarks/quality.py`` report.

    Parameters
    ----------
    report : dict
        A parsed ``benchmarks/results/quality.json``: ``{"models": {name: {"sets": {set: {label: [mean, gray,
        count]}}}}}``, where ``mean`` and ``gray`` hold ``"psnr"`` (dB) and ``"cf_ratio"``.
    set_name : str
        A set of the report, e.g. ``"imagenet_val_1300"``.

    Returns
    -------
    curves : dict of str to list of (float, float, float)
        ``"paper"``: the MSE model's ab multiplied by k (rows ``ab xk``); ``"vivid"``: the classification model at
        temperature T (rows ``T=...``); ``"unbalanced"``: T with the rebalancing divided out (``T=... no rebal.``);
        ``"mix"``: the paper model's ab mixed with the vivid model's (rows ``T=... mix a``, ``--mixes``), with the
        two ends, a = 0 (``ab x1``) and a = 1 (vivid at that T), added when the report has them. Each point is
        (k, T or a, CF ratio, PSNR in dB), sorted by k, T or a; a model or set the report lacks gives [].
        Other rows (e.g. ``--removed`` grids) are left out.
    gray_psnr : float or None
        The gray baseline's PSNR on the set, None when the set is absent.
    """
    curves = {"paper": [], "vivid": [], "unbalanced": [], "mix": []}
    gray_psnr, mixed_at = None, set()
    for name, prefix in (("paper", "ab x"), ("vivid", "T=")):
        rows = report.get("models", {}).get(name, {}).get("sets", {}).get(set_name, {})
        for label, (mean, gray, _count) in rows.items():
            knob = label.removeprefix(prefix)
            key = name
            if knob.endswith(" no rebal."):
                knob, key = knob.removesuffix(" no rebal."), "unbalanced"
            if " mix " in knob:
                mixed_at.add(knob.split(" mix ")[0])
                knob, key = knob.split(" mix ")[1], "mix"
            try:
                value = float(knob)
            except ValueError:
                continue
            curves[key].append((value, mean["cf_ratio"], mean["psnr"]))
            gray_psnr = gray["psnr"]
    if curves["mix"] and len(mixed_at) == 1:  # the two ends of one mix curve
        at = float(mixed_at.pop())
        curves["mix"] += [(0.0, cf, psnr) for k, cf, psnr in curves["paper"] if k == 1.0]
        curves["mix"] += [(1.0, cf, psnr) for t, cf, psnr in curves["vivid"] if t == at]
    return {key: sorted(points) for key, points in curves.items()}, gray_psnr


def plot_vividness(report, set_name, ax, title=None):
    """Plot PSNR against CF ratio for one set: the vivid model's temperatures against the boosted MSE model.

    The knob is worth having where the vivid curve lies above the boost curve (more accurate at the same
    colourfulness). Parameters as :func:`vividness_curves`; ``ax`` is a matplotlib Axes. Returns the curves.
    """
    curves, gray_psnr = vividness_curves(report, set_name)
    for key, label, style, letter in (("paper", "paper (MSE), ab × k", "s--", "k"),
                                      ("vivid", "vivid, temperature T", "o-", "T"),
                                      ("mix", "paper + a × (vivid − paper)", "^-", "a")):
        if curves[key]:
            _, cf, psnr = zip(*curves[key], strict=True)
            ax.plot(cf, psnr, style, label=label)
            for value, x, y in curves[key]:
                if key == "mix" and value in (0.0, 1.0):
                    continue  # the ends are the paper and vivid points, labelled already
                ax.annotate(f"{letter} = {value:g}", (x, y), fontsize=7, textcoords="offset points", xytext=(4, 4))
    for value, x, y in curves["unbalanced"]:
        ax.plot(x, y, "kx")
        ax.annotate(f"T = {value:g}, rebalancing out", (x, y), fontsize=7, textcoords="offset points", xytext=(4, -9))
    if gray_psnr is not None:
        ax.axhline(gray_psnr, color="gray", linestyle=":", label="gray baseline")
    ax.set_xlabel("CF ratio (colourfulness of the colorizations / of the real photos)")
    ax.set_ylabel("PSNR (dB)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return curves
