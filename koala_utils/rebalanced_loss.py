"""The classification head's loss: rebalanced cross-entropy against soft-encoded ab (Zhang et al., 2016).

Written with ``keras.ops`` (TensorFlow and JAX). The soft encoding happens inside the loss, on the batch the
``tf.data`` pipeline already gives (``ab / 127`` at full resolution), so the records and the pipeline are the
same for both heads. The nearest bins of a pixel come from a precomputed table of candidates per 2-unit cell of
the ab plane (:func:`neighbour_candidates`), so a step measures distances to about a dozen bins, not all Q.

Sparse supervision: with ``supervision_stride=2`` the network's :class:`SupervisedPixels` layer keeps, while
training, one pixel of every 2×2 block of ``decoder_4``'s output before the logits conv, and the loss keeps the
same pixels of the target (:func:`phase_subsample`), so the head's conv, softmax and their gradients cost a
quarter. Neighbouring pixels carry nearly the same colour, so little is lost; each example of a batch takes
another of the four offsets, so over a batch every output phase of the decoder's two ×2 upsamplings is trained.
Validation and prediction see every pixel.
"""

import keras
import numpy as np
from keras import ops

from .classification import AB_SCALE, NEIGHBOURS, SIGMA

CELL = 2.0  # side of the candidate table's ab cells, Lab units
AB_LIMIT = 128.0  # the table covers a and b in [-AB_LIMIT, AB_LIMIT]; targets are ab / 127 in [-1, 1]


def neighbour_candidates(bins, neighbours=NEIGHBOURS, cell=CELL):
    """For every cell of a grid over the ab plane, the bins that can be among the nearest of a point in it.

    A bin can be one of the ``neighbours`` nearest bins of a point p in a cell with centre c only if its distance
    to c is at most ``r(c) + 2 h``, where ``r(c)`` is c's own ``neighbours``-th nearest distance and ``h`` the
    cell's half diagonal (p is within h of c, so p's ``neighbours``-th distance is at most ``r(c) + h``). Exact
    nearest bins among these candidates are therefore exact among all bins.

    Parameters
    ----------
    bins : ndarray, shape (Q, 2), Lab units
    neighbours : int
    cell : float
        Cell side, Lab units.

    Returns
    -------
    candidates : ndarray of int32, shape (G * G, K)
        Bin indices, nearest to the cell centre first; rows with fewer than K candidates repeat their first.
    padding : ndarray of float32, shape (G * G, K)
        0 for a real candidate, 1e9 (added to its squared distance) for a repeat.
    G is ``2 * AB_LIMIT / cell + 1``; the cell of ``(a, b)`` is ``round((a + AB_LIMIT) / cell) * G +
    round((b + AB_LIMIT) / cell)``.
    """
    bins = np.asarray(bins, np.float32)
    axis = np.arange(-AB_LIMIT, AB_LIMIT + cell / 2, cell, dtype=np.float32)
    centres = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    dist = np.sqrt(((centres[:, None, :] - bins[None]) ** 2).sum(-1))  # (G*G, Q)
    order = np.argsort(dist, axis=-1)
    sorted_dist = np.take_along_axis(dist, order, axis=-1)
    keep = sorted_dist <= sorted_dist[:, neighbours - 1 : neighbours] + cell * np.sqrt(2.0) + 1e-4
    width = int(keep.sum(-1).max())
    candidates = np.where(keep[:, :width], order[:, :width], order[:, :1]).astype(np.int32)
    padding = np.where(keep[:, :width], 0.0, 1e9).astype(np.float32)
    return candidates, padding


def phase_subsample(x, stride):
    """Keep one pixel of every ``stride`` × ``stride`` block, at an offset that cycles over a batch's examples.

    Example n keeps the pixels ``(i, j)`` with ``i % stride == p // stride`` and ``j % stride == p % stride``,
    where ``p = n % stride**2``. Written as a mask and a sum (not a gather) so that both its forward and
    backward passes are elementwise.

    Parameters
    ----------
    x : tensor, shape (N, H, W, C), H and W multiples of ``stride``
    stride : int

    Returns
    -------
    tensor, shape (N, H / stride, W / stride, C), the dtype of ``x``
    """
    n, h, w, c = (ops.shape(x)[i] for i in range(4))
    phase = ops.arange(n, dtype="int32") % (stride * stride)
    # rows, then columns: TensorFlow's CPU kernels broadcast up to rank 5 only
    rows = ops.one_hot(phase // stride, stride, dtype=x.dtype)[:, None, :, None, None]
    x = ops.sum(ops.reshape(x, (n, h // stride, stride, w, c)) * rows, axis=2)
    cols = ops.one_hot(phase % stride, stride, dtype=x.dtype)[:, None, None, :, None]
    return ops.sum(ops.reshape(x, (n, h // stride, w // stride, stride, c)) * cols, axis=3)


@keras.saving.register_keras_serializable(package="koala")
class SupervisedPixels(keras.layers.Layer):
    """While training, keep the pixels the loss supervises (:func:`phase_subsample`); otherwise the identity.

    It sits before the classification head's logits conv when the network is built with
    ``supervision_stride > 1``; it has no weights, so the weights are those of the network without it.
    """

    def __init__(self, stride=2, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, x, training=None):
        return phase_subsample(x, self.stride) if training and self.stride > 1 else x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, None, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


def pick_logits(logits, idx):
    """``take_along_axis(logits, idx, axis=-1)`` as one gather from the flattened logits.

    Same values; on TensorFlow its backward pass is a single scatter, which makes a training step of the
    classification head about 5 % faster on CPU than ``ops.take_along_axis`` (``benchmarks/head_step_cost.py``).

    Parameters
    ----------
    logits : tensor, shape (..., Q)
    idx : int tensor, shape (..., K), values in [0, Q)

    Returns
    -------
    tensor, shape (..., K), the dtype of ``logits``
    """
    q = ops.shape(logits)[-1]
    k = ops.shape(idx)[-1]
    rows = ops.reshape(idx, (-1, k))
    offsets = ops.arange(ops.shape(rows)[0], dtype="int32")[:, None] * q
    return ops.reshape(ops.take(ops.reshape(logits, (-1,)), rows + offsets), ops.shape(idx))


@keras.saving.register_keras_serializable(package="koala")
class RebalancedCrossEntropy(keras.losses.Loss):
    """Cross-entropy of the logits against each pixel's soft-encoded ab, times its rebalancing weight.

    Parameters
    ----------
    bins : array, shape (Q, 2)
        Bin centres, Lab units.
    weights : array, shape (Q,)
        Rebalancing weight of each bin (:func:`koala_utils.classification.rebalancing_weights`); a pixel gets
        the weight of its nearest bin. All ones for plain cross-entropy.
    sigma : float
        Width of the Gaussian soft encoding, Lab units.
    neighbours : int
        Bins each target is spread over.
    supervision_stride : int
        The stride of the network's :class:`SupervisedPixels` layer (1: none).

    Notes
    -----
    ``y_true`` is ``ab / 127`` of shape (N, H, W, 2); ``y_pred`` the logits (N, H/2, W/2, Q), or, from a
    network training with ``supervision_stride`` s, (N, H/2s, W/2s, Q). The targets are averaged over 2×2
    blocks to the H/2 grid and, in the second case, the supervised pixels kept; the two cases are told apart
    by the static heights, which must be known.
    """

    def __init__(self, bins, weights, sigma=SIGMA, neighbours=NEIGHBOURS, supervision_stride=1,
                 name="rebalanced_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bins = np.asarray(bins, np.float32)
        self.weights = np.asarray(weights, np.float32)
        self.sigma = float(sigma)
        self.neighbours = int(neighbours)
        self.supervision_stride = int(supervision_stride)
        self.candidates, self.padding = neighbour_candidates(self.bins, self.neighbours)
        self.grid_side = int(round(2 * AB_LIMIT / CELL)) + 1

    def sampled(self, y_true, y_pred):
        """True if ``y_pred`` holds only the supervised pixels (a network training with a stride > 1)."""
        if self.supervision_stride == 1:
            return False
        h_true, h_pred = y_true.shape[1], y_pred.shape[1]
        if h_true is None or h_pred is None:
            raise ValueError("supervision_stride > 1 needs the static heights of targets and logits; "
                             f"got {h_true} and {h_pred}")
        if h_pred * 2 * self.supervision_stride == h_true:
            return True
        if h_pred * 2 == h_true:
            return False
        raise ValueError(f"logits of height {h_pred} fit neither every pixel nor every "
                         f"{self.supervision_stride}th pixel of targets of height {h_true} at half resolution")

    def encode(self, y_true, sampled=False):
        """Soft-encode a batch: (indices (N, h, w, K'), soft weights (N, h, w, K'), pixel weights (N, h, w));
        ``sampled``: only the supervised pixels (:func:`phase_subsample`)."""
        ab = ops.average_pool(ops.cast(y_true, "float32"), 2, strides=2, padding="valid") * AB_SCALE
        if sampled:
            ab = phase_subsample(ab, self.supervision_stride)
        cell = ops.cast(ops.round((ops.clip(ab, -AB_LIMIT, AB_LIMIT) + AB_LIMIT) / CELL), "int32")
        flat = cell[..., 0] * self.grid_side + cell[..., 1]
        cand = ops.take(ops.convert_to_tensor(self.candidates), flat, axis=0)  # (N, h, w, K)
        near = ops.take(ops.convert_to_tensor(self.bins), cand, axis=0)  # (N, h, w, K, 2)
        d2 = ops.sum(ops.square(near - ab[..., None, :]), axis=-1) + ops.take(
            ops.convert_to_tensor(self.padding), flat, axis=0)
        neg_near, pick = ops.top_k(-d2, self.neighbours)  # nearest first
        idx = ops.take_along_axis(cand, pick, axis=-1)
        soft = ops.exp((neg_near - neg_near[..., :1]) / (2 * self.sigma**2))
        soft = soft / ops.sum(soft, axis=-1, keepdims=True)
        pixel_weight = ops.take(ops.convert_to_tensor(self.weights), idx[..., 0])
        return idx, ops.stop_gradient(soft), ops.stop_gradient(pixel_weight)

    def call(self, y_true, y_pred):
        idx, soft, pixel_weight = self.encode(y_true, self.sampled(y_true, y_pred))
        logits = ops.cast(y_pred, "float32")
        # -sum_k soft_k log_softmax(z)_idx_k = logsumexp(z) - sum_k soft_k z_idx_k (the soft weights sum to 1)
        picked = pick_logits(logits, idx)
        return (ops.logsumexp(logits, axis=-1) - ops.sum(soft * picked, axis=-1)) * pixel_weight

    def get_config(self):
        return {**super().get_config(), "bins": self.bins.tolist(), "weights": self.weights.tolist(),
                "sigma": self.sigma, "neighbours": self.neighbours, "supervision_stride": self.supervision_stride}


def prior_from_records(records_dir, bins, photos=2000, side=56):
    """Estimate the ab prior of a record set's training photos (the white padding left out).

    Parameters
    ----------
    records_dir : path
        Output of :func:`koala_utils.data.prepare`.
    bins : ndarray, shape (Q, 2)
    photos : int
        About this many photos are read, the same number from every shard (shards hold names in sorted
        order, so the first photos of the split would be one source only).
    side : int
        Each photo's area is resized to about this side before counting, to bound the work.

    Returns
    -------
    prior : ndarray of float64, shape (Q,)
    """
    import tensorflow as tf
    from PIL import Image

    from . import color, data
    from .classification import estimate_prior

    files = data.shard_files(records_dir, "train", verify=False)
    per_shard = max(1, -(-photos // len(files)))
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "box": tf.io.FixedLenFeature([4], tf.int64)}
    pixels = []
    for path in files:
        for serialized in tf.data.TFRecordDataset(path).take(per_shard):
            example = tf.io.parse_single_example(serialized, spec)
            rgb = tf.io.decode_jpeg(example["image"], channels=3).numpy()
            top, left, h, w = example["box"].numpy()
            crop = Image.fromarray(rgb[top : top + h, left : left + w])
            scale = side / max(h, w)
            crop = crop.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
            pixels.append(color.rgb_to_lab(np.asarray(crop))[..., 1:].reshape(-1, 2))
    return estimate_prior(np.concatenate(pixels), bins)
