"""The classification head's loss: rebalanced cross-entropy against soft-encoded ab (Zhang et al., 2016).

Written with ``keras.ops`` (TensorFlow and JAX). The soft encoding happens inside the loss, on the batch the
``tf.data`` pipeline already gives (``ab / 127`` at full resolution), so the records and the pipeline are the
same for both heads.
"""

import keras
import numpy as np
from keras import ops

from .classification import AB_SCALE, NEIGHBOURS, SIGMA


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

    Notes
    -----
    ``y_true`` is ``ab / 127`` of shape (N, H, W, 2); ``y_pred`` the logits (N, H/2, W/2, Q). The targets are
    averaged over 2×2 blocks to the logits' grid.
    """

    def __init__(self, bins, weights, sigma=SIGMA, neighbours=NEIGHBOURS, name="rebalanced_cross_entropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.bins = np.asarray(bins, np.float32)
        self.weights = np.asarray(weights, np.float32)
        self.sigma = float(sigma)
        self.neighbours = int(neighbours)

    def call(self, y_true, y_pred):
        ab = ops.average_pool(ops.cast(y_true, "float32"), 2, strides=2, padding="valid") * AB_SCALE
        bins = ops.convert_to_tensor(self.bins)
        # |ab - bin|^2 = |ab|^2 - 2 ab.bin + |bin|^2: one (N, h, w, 2) x (2, Q) product, no (N, h, w, Q, 2) tensor.
        d2 = (ops.sum(ops.square(ab), axis=-1, keepdims=True) - 2.0 * ops.matmul(ab, ops.transpose(bins))
              + ops.sum(ops.square(bins), axis=-1))  # (N, h, w, Q)
        neg_near, idx = ops.top_k(-d2, self.neighbours)  # nearest first
        soft = ops.exp((neg_near - neg_near[..., :1]) / (2 * self.sigma**2))
        soft = soft / ops.sum(soft, axis=-1, keepdims=True)
        log_p = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        picked = ops.take_along_axis(log_p, idx, axis=-1)
        pixel_weight = ops.take(ops.convert_to_tensor(self.weights), idx[..., 0])
        return -ops.sum(ops.stop_gradient(soft) * picked, axis=-1) * ops.stop_gradient(pixel_weight)

    def get_config(self):
        return {**super().get_config(), "bins": self.bins.tolist(), "weights": self.weights.tolist(),
                "sigma": self.sigma, "neighbours": self.neighbours}


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
