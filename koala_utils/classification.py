"""Colour as classification (Zhang et al., ECCV 2016): ab bins, soft encoding, class rebalancing, annealed mean.

An MSE head predicts the mean of every plausible colour, which is brownish gray. The classification head instead
predicts a distribution over Q bins of the ab plane; training uses a cross-entropy against soft-encoded targets,
reweighted so that rare saturated colours count as much as common dull ones; decoding takes the *annealed mean*
of the distribution, a knob between its mean (T = 1) and its mode (T -> 0, boldest). Because the training
weights rare colours up, the predicted distribution already leans to saturated colour, so even T = 1 is
colourful; :func:`remove_rebalancing` divides the weights back out for the muted, MSE-like mean.

The bins are computed from the sRGB gamut here (nothing downloaded); a trained model carries its own bins and
prior in an :class:`AbBins` layer, so a ``.keras`` file or shipped weights decode without recomputing them.
The decoding functions are numpy-only so that the onnxruntime engine can use them without Keras.
"""

import functools

import numpy as np

GRID = 10.0  # ab cell side, Lab units (Zhang et al.)
AB_SCALE = 127.0  # the network's ab targets are ab / 127
SIGMA = 5.0  # soft encoding and prior smoothing, Lab units
NEIGHBOURS = 5
LAMBDA = 0.5
TEMPERATURE = 0.2  # chosen on the held-out selection slice (MODEL_CARD.md); Zhang et al. used 0.38
CAST_GUARD = 1.0  # chosen on the held-out selection slice (MODEL_CARD.md); 0 turns the guard off


@functools.cache
def ab_bins(grid=GRID):
    """Centres of the ab cells that some sRGB colour falls into.

    The rule: every one of the 256**3 8-bit sRGB colours is converted to CIE Lab (D65) with scikit-image; the
    cell of a colour is its ab rounded to the nearest multiple of ``grid``; the bins are the centres of the
    cells that hold at least one colour. So every sRGB colour lies within half a cell diagonal of a bin, and
    every bin is reached by some colour. 261 bins for ``grid = 10`` (Zhang et al. report 313 with an
    unpublished rule). Takes a few seconds; cached per process.

    Returns
    -------
    bins : ndarray of float32, shape (Q, 2)
        a and b of each bin centre in Lab units, sorted by a then b.
    """
    from skimage.color import rgb2lab

    half = int(np.ceil(130 / grid))
    occupied = np.zeros((2 * half + 1, 2 * half + 1), dtype=bool)
    levels = np.arange(256)
    for red in range(0, 256, 16):
        cube = np.stack(np.meshgrid(np.arange(red, red + 16), levels, levels, indexing="ij"), axis=-1)
        lab = rgb2lab(cube.reshape(-1, 1, 3) / 255.0).reshape(-1, 3)
        cells = np.round(lab[:, 1:] / grid).astype(int) + half
        occupied[cells[:, 0], cells[:, 1]] = True
    a_idx, b_idx = np.nonzero(occupied)
    return (np.stack([a_idx, b_idx], axis=-1) - half).astype(np.float32) * grid


def nearest_bin(ab, bins):
    """Index of the nearest bin of each ab pair.

    Parameters
    ----------
    ab : ndarray of float, shape (..., 2), Lab units
    bins : ndarray of float, shape (Q, 2)

    Returns
    -------
    ndarray of int64, shape (...)
    """
    ab = np.asarray(ab, dtype=np.float32)
    flat = ab.reshape(-1, 2)
    out = np.empty(len(flat), dtype=np.int64)
    for start in range(0, len(flat), 65536):  # bounded memory: 65536 x Q distances at a time
        d2 = ((flat[start : start + 65536, None, :] - bins[None]) ** 2).sum(-1)
        out[start : start + 65536] = d2.argmin(-1)
    return out.reshape(ab.shape[:-1])


def soft_encode(ab, bins, sigma=SIGMA, neighbours=NEIGHBOURS):
    """Spread each ab over its nearest bins with a Gaussian (numpy reference; the loss does the same in Keras).

    Parameters
    ----------
    ab : ndarray of float, shape (..., 2), Lab units
    bins : ndarray, shape (Q, 2)

    Returns
    -------
    ndarray of float32, shape (..., Q)
        Non-negative, summing to 1 over the last axis; non-zero on ``neighbours`` bins only.
    """
    flat = np.asarray(ab, dtype=np.float32).reshape(-1, 2)
    d2 = ((flat[:, None, :] - bins[None]) ** 2).sum(-1)
    idx = np.argsort(d2, axis=-1)[:, :neighbours]
    near = np.take_along_axis(d2, idx, axis=-1)
    w = np.exp(-(near - near[:, :1]) / (2 * sigma**2))  # shifted by the nearest distance: no underflow
    out = np.zeros_like(d2)
    np.put_along_axis(out, idx, w / w.sum(-1, keepdims=True), axis=-1)
    return out.reshape(*np.shape(ab)[:-1], len(bins))


def estimate_prior(ab_pixels, bins, sigma=SIGMA):
    """Empirical distribution of ab over the bins, smoothed with a Gaussian across bins.

    Parameters
    ----------
    ab_pixels : ndarray of float, shape (N, 2), Lab units
        Pixels of the training photos.
    bins : ndarray, shape (Q, 2)

    Returns
    -------
    prior : ndarray of float64, shape (Q,), summing to 1, every entry > 0
    """
    counts = np.bincount(nearest_bin(ab_pixels, bins).ravel(), minlength=len(bins)).astype(np.float64)
    d2 = ((bins[:, None, :] - bins[None]) ** 2).sum(-1)
    smoothed = np.exp(-d2 / (2 * sigma**2)) @ (counts / counts.sum())
    smoothed = np.maximum(smoothed, 1e-12)
    return smoothed / smoothed.sum()


def rebalancing_weights(prior, lam=LAMBDA):
    """Per-bin loss weights ``((1 - lam) * p + lam / Q) ** -1``, scaled so that ``sum(p * w) == 1``.

    Returns
    -------
    ndarray of float32, shape (Q,)
    """
    prior = np.asarray(prior, dtype=np.float64)
    w = 1.0 / ((1 - lam) * prior + lam / len(prior))
    return (w / (prior * w).sum()).astype(np.float32)


def remove_rebalancing(logits, prior, lam=LAMBDA, kept=1.0):
    """Logits of the photos' own colour distribution, from a head trained with class rebalancing.

    The rebalanced loss weighs a pixel whose colour falls in bin q by ``w_q`` (:func:`rebalancing_weights`), so
    the distribution it trains the head to predict is the true one times ``w``, renormalised: rare saturated
    colours are boosted, which is where the head's colour comes from. Subtracting ``log w`` divides that back
    out; the annealed mean at T = 1 of the result estimates the mean colour, what an MSE model predicts.

    Parameters
    ----------
    logits : array, shape (..., Q)
    prior : array, shape (Q,)
        The ab prior the weights were computed from (the model's ``ab_bins`` layer holds it).
    lam : float
        The rebalancing's mixing weight, 0.5 in training.
    kept : float
        How much of ``log w`` the logits still hold: 1 as trained; ``1 - removed`` for a model whose
        rebalancing was partly divided out at export (:func:`adjust_rebalancing`; the shipped ``vivid`` card
        says how much).

    Returns
    -------
    ndarray of float32, shape (..., Q)
    """
    log_w = np.log(rebalancing_weights(prior, lam)).astype(np.float32)
    return np.asarray(logits, dtype=np.float32) - np.float32(kept) * log_w


def adjust_rebalancing(model, removed, lam=LAMBDA):
    """Divide the fraction ``removed`` of the class rebalancing out of a classification model, in place.

    The rebalanced loss trains the head toward the true colour distribution times the weights ``w``; a longer
    trained head follows that tilt closely and overshoots the photos' colourfulness. Subtracting
    ``removed * log w`` from the bias of its logits layer (``decoder_logits``) leaves ``p * w ** (1 - removed)``:
    0 keeps the model as trained, 1 gives the photos' own distribution (:func:`remove_rebalancing` at decode
    time does the same to logits). A bias change, so the saved weights, the ONNX files and both engines carry it.

    Parameters
    ----------
    model : keras.Model
        With the classification head (an ``ab_bins`` layer holding its prior).
    removed : float
        In [-1, 1]. A negative value puts back what an earlier call removed: a phase that resumes training from the
        shipped ``vivid`` weights starts from the head as trained (``-rebalancing_removed`` of its card).

    Returns
    -------
    keras.Model
        ``model``.
    """
    if not -1.0 <= removed <= 1.0:
        raise ValueError(f"removed must be in [-1, 1], got {removed}")
    layer = model.get_layer("decoder_logits")
    kernel, bias = layer.get_weights()
    # The bias is a logit per bin: removing the fraction from it is remove_rebalancing with kept = removed.
    layer.set_weights([kernel, remove_rebalancing(bias, model_prior(model), lam, kept=removed).astype(bias.dtype)])
    model.get_layer("ab_bins").rebalancing_removed += float(removed)  # saved with the model's config
    return model


def annealed_mean(logits, temperature=TEMPERATURE, bins=None):
    """Decode logits to ab: ``sum_q softmax(z / T)_q * bin_q``, scaled by 1/127.

    T = 1 gives the distribution's mean; smaller T moves toward the mode (bolder; patchy as T -> 0). For a head
    trained with rebalancing the distribution leans to rare, saturated colours, so T = 1 is already colourful. The
    shipped ``vivid`` model as it decodes by default (:func:`decode_logits` with the cast guard) on 400 held-out
    photos: colourfulness ratio 0.73 at T = 1 (0.25 dB below gray's PSNR), 0.86 at T = 0.2 (0.56 dB below), 0.88
    at T = 0.1 (0.65 dB below); with all of its rebalancing removed first (:func:`remove_rebalancing`), T = 1
    gives 0.50 at +0.79 dB (MODEL_CARD.md). Numpy only.

    Parameters
    ----------
    logits : array, shape (..., Q)
    temperature : float > 0
    bins : ndarray, shape (Q, 2), optional
        Default :func:`ab_bins` (pass the model's own, see :func:`model_bins`).

    Returns
    -------
    ndarray of float32, shape (..., 2)
        ab / 127, in about [-1, 1].
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    bins = ab_bins() if bins is None else np.asarray(bins, dtype=np.float32)
    z = np.asarray(logits, dtype=np.float32) / np.float32(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ bins / AB_SCALE).astype(np.float32)


def guard_cast(ab, anchor_ab, strength=CAST_GUARD, region=None):
    """Move each photo's average colour a fraction ``strength`` of the way to that of ``anchor_ab``.

    The colour cast guard: the annealed mean of a rebalanced head is vivid but may tint a whole photo; the mean
    of the head's distribution with the rebalancing divided out (what :func:`decode_logits` passes as the anchor)
    estimates the photo's average colour without that lean. Only the average moves; the variation of ``ab``
    around it, where the vivid colour lies, is kept.

    Parameters
    ----------
    ab, anchor_ab : ndarray of float32, shape (N, H, W, 2)
        Scaled ab (ab / 127).
    strength : float
        In [0, 1]: 0 returns ``ab``, 1 gives it ``anchor_ab``'s average.
    region : ndarray of bool, shape (N, H, W), optional
        The pixels that count toward the averages (e.g. not the white padding); default all.

    Returns
    -------
    ndarray of float32, shape (N, H, W, 2)
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"cast guard strength must be in [0, 1], got {strength}")
    ab = np.asarray(ab, dtype=np.float32)
    if strength == 0.0:
        return ab
    weight = np.ones(ab.shape[:3], np.float32) if region is None else np.asarray(region, np.float32)
    count = np.maximum(weight.sum(axis=(1, 2)), 1.0)[:, None]  # (N, 1): an all-padding photo moves by 0
    shift = ((np.asarray(anchor_ab, np.float32) - ab) * weight[..., None]).sum(axis=(1, 2)) / count
    return ab + np.float32(strength) * shift[:, None, None, :]


def logit_region(l_scaled, white=0.998):
    """The pixels of the logits' grid that belong to the photo, not to its white padding.

    Parameters
    ----------
    l_scaled : ndarray, shape (N, H, W, 1), in [-1, 1]
        The network's input, H and W even (padded to the network's stride).
    white : float
        Scaled L from which a pixel counts as white padding (0.998 is L = 99.9).

    Returns
    -------
    ndarray of bool, shape (N, H / 2, W / 2)
    """
    return np.asarray(l_scaled)[:, ::2, ::2, 0] < white


def decode_logits(logits, temperature=TEMPERATURE, bins=None, prior=None, kept=1.0, cast_guard=0.0, region=None):
    """Logits to ab: the annealed mean at ``temperature``, its average colour guarded by :func:`guard_cast`.

    The guard's anchor is the mean (T = 1) of the distribution with the rebalancing divided out
    (:func:`remove_rebalancing`). On the 400 held-out photos of the selection slice, the shipped ``vivid`` model at
    T = 0.2 has a colour cast of 9.0 Lab units with the guard at 1 (the ``paper`` model's: 8.8; gray's: 12.1) and
    11.1 without it; decoded without the guard at the same colourfulness (more of the rebalancing removed), about
    10.5, at a PSNR within 0.1 dB (MODEL_CARD.md). Numpy only.

    Parameters
    ----------
    logits : array, shape (N, H, W, Q)
    temperature : float > 0
    bins : ndarray, shape (Q, 2), optional
    prior : ndarray, shape (Q,)
        The model's prior (:func:`model_prior`); needed when ``cast_guard > 0``.
    kept : float
        How much of the rebalancing the logits hold (1 minus the model's ``rebalancing_removed``).
    cast_guard : float
        In [0, 1], see :func:`guard_cast`.
    region : ndarray of bool, shape (N, H, W), optional

    Returns
    -------
    ndarray of float32, shape (N, H, W, 2)
        ab / 127 at the logits' resolution.
    """
    ab = annealed_mean(logits, temperature, bins)
    if not cast_guard:
        return ab
    if prior is None:
        raise ValueError("the cast guard needs the model's prior (classification.model_prior)")
    anchor = annealed_mean(remove_rebalancing(logits, prior, kept=kept), 1.0, bins)
    return guard_cast(ab, anchor, cast_guard, region)


def is_classification(model):
    """True when a Keras model has the classification head (more than 2 output channels)."""
    return model.output_shape[-1] != 2


def model_bins(model):
    """The bins a classification model was trained with, from its :class:`AbBins` layer ((Q, 2) float32)."""
    from keras import ops

    return np.asarray(ops.convert_to_numpy(model.get_layer("ab_bins").bins), dtype=np.float32)


def model_rebalancing_kept(model):
    """How much of its class rebalancing a classification model's logits hold: 1 as trained, less after
    :func:`adjust_rebalancing` (the ``ab_bins`` layer records it)."""
    return 1.0 - float(getattr(model.get_layer("ab_bins"), "rebalancing_removed", 0.0))


def model_prior(model):
    """The ab prior a classification model was trained with, from its :class:`AbBins` layer ((Q,) float64)."""
    from keras import ops

    return np.asarray(ops.convert_to_numpy(model.get_layer("ab_bins").prior), dtype=np.float64)
