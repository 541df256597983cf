"""Colorize photos of any size with a trained model.

The network runs at a small size (224 px, white-padded as in training); its ab
prediction is cropped to the photo, upsampled bilinearly to full resolution and
merged with the photo's own full-resolution L. So the output keeps every detail
of the input; only the colour comes from the network.

Backend-agnostic: runs on TensorFlow and JAX.
"""

import time
from pathlib import Path

import numpy as np
from PIL import Image

from . import backbone_record, color, images

OUTPUT_SUFFIX = "_colorized"
BILINEAR = Image.Resampling.BILINEAR


def upsample_ab(ab, height, width):
    """Bilinear resize of an ab map (h, w, 2) float32 to (height, width, 2)."""
    if ab.shape[:2] == (height, width):
        return ab.astype(np.float32)
    planes = [Image.fromarray(np.ascontiguousarray(ab[..., k], dtype=np.float32)) for k in range(ab.shape[-1])]
    channels = [np.asarray(plane.resize((width, height), BILINEAR)) for plane in planes]
    return np.stack(channels, axis=-1)


def predictor_for(model, temperature=None, cast_guard=None):
    """The ab predictor of a model: an ONNX engine model brings its own; a Keras one gets a Predictor.

    Keras is imported here only, so that the onnx engine runs without it. ``temperature`` and ``cast_guard``
    are the decoding knobs of a classification ("vivid") model; a regression model ignores them.
    """
    if hasattr(model, "onnx_predictor"):
        knobs = (temperature,) if cast_guard is None else (temperature, cast_guard)
        return model.onnx_predictor(*knobs)
    from .model import Predictor

    return Predictor(model, temperature, cast_guard)  # Keras keeps the compiled function on the model


def ab_predictor(model, temperature=None, cast_guard=None, mix=None, partner=None):
    """The scaled-ab predictor ``(l_scaled, embedding) -> ab`` that photos and video frames go through.

    :func:`predictor_for` of ``model`` with its decoding knobs; with ``mix``, its ab mixed into that of the
    regression model ``partner`` (:func:`mix_ab`; both networks see the same input and embedding).
    """
    predict = predictor_for(model, temperature, cast_guard)
    if mix is None:
        return predict
    base = predictor_for(partner)
    return lambda l_scaled, embedding: mix_ab(base(l_scaled, embedding), predict(l_scaled, embedding), mix)


def has_classification_head(model):
    """True for a vivid (classification) model, Keras or ONNX engine; False for a regression one."""
    if hasattr(model, "onnx_predictor"):
        return model.head == "classification"
    from .classification import is_classification

    return is_classification(model)


def mix_ab(base_ab, vivid_ab, amount):
    """Mix a vivid model's colour into a regression model's: ``base_ab + amount * (vivid_ab - base_ab)``.

    The ``paper`` (MSE) model predicts each pixel's mean colour: right more often, but muted. The ``vivid``
    model predicts bolder colour at some cost in accuracy. Measured with the vivid model at T = 0.2
    (``benchmarks/quality.py --mixes``, MODEL_CARD.md): on 1284 ImageNet-val photos, amount 0.5 gives a
    colourfulness ratio of 0.55 at +0.52 dB over gray and 0.75 gives 0.64 at +0.17 dB (vivid alone at T = 1:
    0.66 at -0.11 dB; the paper model's ab multiplied to CF 0.64: about +0.07 dB); 1 is vivid alone (0.75 at
    -0.26 dB). On the Prokudin-Gorskii plates the mix is no better than the temperature (0.55 at +0.83 dB for
    0.75; T = 1: 0.56 at +0.82 dB), and both lie below the multiplied paper model.

    Parameters
    ----------
    base_ab, vivid_ab : ndarray of float32, shape (..., 2)
        ab of the same photo from the two models, in the same units (scaled or Lab).
    amount : float
        In [0, 1]: 0 gives ``base_ab``, 1 gives ``vivid_ab``.

    Returns
    -------
    ndarray of float32, shape (..., 2)
    """
    _check_amount(amount)
    base_ab = np.asarray(base_ab, np.float32)
    return base_ab + np.float32(amount) * (np.asarray(vivid_ab, np.float32) - base_ab)


def _check_amount(amount):
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"mix amount must be in [0, 1], got {amount}")


def check_models(model, backbone, mix=None, partner=None):
    """Refuse, before any photo or frame is read, a backbone ``model`` was not trained with (see
    :func:`check_backbone`) and a mix that cannot be made."""
    check_backbone(model, backbone)
    if mix is None:
        return
    if partner is None:
        raise ValueError("mix needs partner: the regression (paper) model whose colour the vivid one is mixed into")
    if not has_classification_head(model) or has_classification_head(partner):
        raise ValueError("mix takes a vivid (classification) model as model and a regression (paper) model as partner")
    _check_amount(mix)
    check_backbone(partner, backbone)


def predict_small_ab(gray, model, backbone, size=224, temperature=None, cast_guard=None, mix=None, partner=None):
    """Run backbone and network on a gray photo at ``size``; ab for the photo.

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)
    model : keras.Model or engine.OnnxColorizer
    backbone : backbones.Backbone or engine.OnnxBackbone
    size : int
        Network input side (a multiple of 8; 224 as in training).
    temperature, cast_guard, mix, partner : optional
        See :func:`colorize`.

    Returns
    -------
    ab : ndarray of float32, shape (h, w, 2)
        Unscaled a and b for the photo's area inside the padded square (the
        white padding is cropped away), at the network's resolution.
    timings : dict
        Seconds spent in ``backbone`` and ``network``.

    Raises
    ------
    koala_utils.backbone_record.BackboneMismatchError
        The model records another backbone, or takes embeddings of another width.
    """
    check_models(model, backbone, mix, partner)
    start = time.perf_counter()
    padded, (top, left, h, w) = images.resize_pad(gray, size)
    # The backbone pads the photo into its own square: when that is `size` too, the padded photo
    # is the very same input, and the full-resolution photo need not be resized twice.
    same_square = getattr(backbone, "input_size", None) == size
    embedding = backbone.embed([padded if same_square else gray])
    mid = time.perf_counter()
    l_scaled = color.scale_l(color.lightness(images.gray_to_rgb(padded)))[None, ..., None]
    ab_scaled = ab_predictor(model, temperature, cast_guard, mix, partner)(l_scaled, embedding)[0]
    end = time.perf_counter()
    ab = color.unscale_ab(ab_scaled[top : top + h, left : left + w])
    return ab, {"backbone": mid - start, "network": end - mid}


def check_backbone(model, backbone):
    """Refuse a ``backbone`` (``.name``, ``.dim``) other than the one ``model`` records (see
    :func:`koala_utils.backbone_record.check`)."""
    backbone_record.check(model, getattr(backbone, "name", None), getattr(backbone, "dim", None),
                          against=f"the backbone given ({getattr(backbone, 'name', type(backbone).__name__)})")


def colorize(image, model, backbone, size=224, return_timings=False, temperature=None, cast_guard=None, mix=None,
             partner=None):
    """Colorize one photo at its full resolution.

    Parameters
    ----------
    image : path, PIL image or ndarray
        Any photo :func:`koala_utils.images.load_image` reads. A colour photo
        is converted to gray first.
    model : keras.Model
        A trained colorization network.
    backbone : backbones.Backbone
        The backbone the model was trained with.
    size : int
        Network input side.
    return_timings : bool
        Also return seconds per stage: load, backbone, network, merge.
    temperature : float, optional
        Only for a classification ("vivid") model: the annealed-mean
        temperature T, default 0.2 (chosen on held-out photos). T = 1 decodes the predicted colour
        distribution's mean; lower T moves toward its mode: bolder, patchier as T -> 0. The shipped
        vivid model on 400 held-out photos: colourfulness ratio 0.73 at T = 1, 0.86 at 0.2, 0.88 at 0.1, each
        step costing PSNR (0.25, 0.56, 0.65 dB below gray's; MODEL_CARD.md). Ignored by the paper's regression
        model.
    cast_guard : float, optional
        Only for a classification model: how far, in [0, 1], the photo's average colour is moved to the mean
        of the model's distribution with its class rebalancing divided out (a guard against a tint over the
        whole photo; :func:`koala_utils.classification.guard_cast`). Default
        :data:`koala_utils.classification.CAST_GUARD`; 0 turns it off.
    mix : float, optional
        Only for a classification model, with ``partner``: mix its colour into the regression model
        ``partner``'s, in [0, 1] (0: ``partner``'s colour; 1: the vivid model's). Both networks run. See
        :func:`mix_ab` for what it does to accuracy and colour. Default: no mixing.
    partner : keras.Model or engine.OnnxColorizer, optional
        The regression (``paper``) model, on the same backbone, that ``mix`` needs.

    Returns
    -------
    rgb : ndarray of uint8, shape (H, W, 3)
        The same H and W as the input.
    timings : dict, only if ``return_timings``
    """
    start = time.perf_counter()
    rgb = images.load_image(image)
    # images.to_gray and color.lightness in one pass (and a shortcut for black-and-white photos).
    gray, full_l = color.gray_and_lightness(rgb)
    loaded = time.perf_counter()
    ab, timings = predict_small_ab(gray, model, backbone, size, temperature, cast_guard, mix, partner)
    merge_start = time.perf_counter()
    ab_full = upsample_ab(ab, gray.shape[0], gray.shape[1])
    out = color.lab_to_rgb_fast(full_l, ab_full)
    timings = {"load": loaded - start, **timings, "merge": time.perf_counter() - merge_start}
    return (out, timings) if return_timings else out


def output_path(source, out_dir, suffix=OUTPUT_SUFFIX):
    """Where the colorized copy of ``source`` goes: ``OUT_DIR/<stem><suffix>.png``."""
    return Path(out_dir) / f"{Path(source).stem}{suffix}.png"


def _save_png(rgb, path):
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(rgb).save(tmp, format="PNG")
    tmp.replace(path)


def colorize_files(paths, out_dir, model, backbone, size=224, overwrite=False, log=print, temperature=None,
                   cast_guard=None, mix=None, partner=None):
    """Colorize many files; go on past bad ones and report them.

    Never writes over an input file, never over an existing output unless
    ``overwrite`` is set, and never twice to the same output in one batch
    (``a.jpg`` and ``a.png`` both map to ``a_colorized.png``: the second fails).

    Parameters
    ----------
    paths : iterable of path
    out_dir : path
        Created if missing.
    model, backbone, size, temperature, cast_guard, mix, partner
        See :func:`colorize`.
    overwrite : bool
        Replace outputs that already exist (inputs are never replaced).
    log : callable
        Receives one line per file.

    Returns
    -------
    dict
        ``written``: list of (input, output) paths; ``failed``: list of
        (input, reason).

    Raises
    ------
    koala_utils.backbone_record.BackboneMismatchError
        Before any file is read: the model and the backbone do not go together.
    ValueError
        Before any file is read: a ``mix`` that cannot be made (see :func:`colorize`).
    """
    check_models(model, backbone, mix, partner)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in paths]
    inputs = {p.resolve() for p in paths if p.exists()}
    written, failed, claimed = [], [], {}
    for path in paths:
        target = output_path(path, out_dir)
        try:
            if target.resolve() in inputs:
                raise FileExistsError(f"{target}: output would overwrite an input file")
            if target.resolve() in claimed:
                raise FileExistsError(f"{target}: output name already taken by {claimed[target.resolve()]}")
            if target.exists() and not overwrite:
                raise FileExistsError(f"{target}: output exists (use --overwrite to replace it)")
            _save_png(colorize(path, model, backbone, size, temperature=temperature, cast_guard=cast_guard, mix=mix,
                               partner=partner), target)
        except (OSError, ValueError) as exc:
            reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            failed.append((str(path), reason))
            log(f"error: {reason}")
            continue
        written.append((str(path), str(target)))
        claimed[target.resolve()] = path
        log(f"{path} -> {target}")
    return {"written": written, "failed": failed}
