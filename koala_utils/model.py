"""The Deep Koalarization network: encoder, fusion and decoder (paper, Table 1).

Inputs are the scaled L channel ``(H, W, 1)`` in [-1, 1] and the backbone's
embedding ``(D,)`` (logits before the softmax). The output is ``ab / 127``
``(H, W, 2)`` in [-1, 1]. H and W must be multiples of 8 for the network
itself; :func:`predict_ab` pads any size and crops back.

Written with Keras layers and ``keras.ops`` only, so it runs on the TensorFlow
and JAX backends and saves as ``.keras`` that loads with ``safe_mode=True``.
"""

import keras
import numpy as np
from keras import layers, ops

from .rebalanced_loss import SupervisedPixels

EMBED_DIM = 1000
ENCODER = ((64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 1), (256, 1))
FUSION_FILTERS = 256
STRIDE = 8  # total downsampling of the encoder
# Expected size with a 1000-d embedding (1256 fusion channels).
PARAMS_1000 = 6_573_794


@keras.saving.register_keras_serializable(package="koala")
class FusionLayer(layers.Layer):
    """Tile a global embedding over a feature grid and concatenate it.

    Call with ``[features, embedding]``: features ``(N, h, w, C)`` and embedding
    ``(N, D)`` give ``(N, h, w, C + D)``. Works for any ``h`` and ``w``.

    ``backbone`` names the network whose embeddings the model was trained on; it
    is saved in the layer's config, so a ``.keras`` file says which backbone it
    needs (see :mod:`koala_utils.backbone_record`). None: not recorded.
    """

    def __init__(self, backbone=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}

    def call(self, inputs):
        features, embedding = inputs
        shape = ops.shape(features)
        grid = ops.reshape(embedding, (shape[0], 1, 1, -1))
        grid = ops.broadcast_to(grid, (shape[0], shape[1], shape[2], ops.shape(embedding)[-1]))
        return ops.concatenate([features, ops.cast(grid, features.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        features, embedding = input_shape
        channels = None if features[-1] is None or embedding[-1] is None else features[-1] + embedding[-1]
        return tuple(features[:-1]) + (channels,)


def _conv(filters, name, dtype, strides=1, activation="relu", kernel=3):
    return layers.Conv2D(
        filters, kernel, strides=strides, padding="same", activation=activation, name=name, dtype=dtype
    )


@keras.saving.register_keras_serializable(package="koala")
class AbBins(layers.Layer):
    """The classification head's last layer: passes the logits through and carries the ab bins and prior.

    ``bins`` (Q, 2) in Lab units and ``prior`` (Q,) are non-trainable weights, so a saved model decodes
    with exactly the bins it was trained with (see :mod:`koala_utils.classification`). ``rebalancing_removed``
    records how much of the class rebalancing was divided out of the logits after training
    (:func:`koala_utils.classification.adjust_rebalancing`), which the colour cast guard needs.
    """

    def __init__(self, num_bins, rebalancing_removed=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_bins = int(num_bins)
        self.rebalancing_removed = float(rebalancing_removed)

    def build(self, input_shape):
        self.bins = self.add_weight(shape=(self.num_bins, 2), initializer="zeros", trainable=False, name="bins")
        self.prior = self.add_weight(shape=(self.num_bins,), initializer="zeros", trainable=False, name="prior")

    def call(self, logits):
        return logits

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins, "rebalancing_removed": self.rebalancing_removed}


def build_model(embed_dim=EMBED_DIM, dtype_policy=None, name="koalarization", head="regression", bins=None,
                prior=None, backbone=None, supervision_stride=1):
    """Build the colorization network.

    Parameters
    ----------
    embed_dim : int
        Width of the backbone embedding (1000 for both backbones).
    dtype_policy : str or None
        ``None`` (float32), ``"mixed_bfloat16"`` (CPU) or ``"mixed_float16"``
        (GPU). The output layers stay float32.
    name : str
    head : {"regression", "classification"}
        ``"regression"``: the paper's 2-channel tanh conv and final ×2
        upsampling (Table 1). ``"classification"``: everything up to
        ``decoder_4`` is the same; a 1×1 conv gives Q logits over ab bins at
        H/2 (Zhang et al.). Its final ×2 upsampling is applied to the decoded
        ab by :class:`Predictor`: with the paper's nearest-neighbour upsampling
        that is exactly the same as upsampling the logits, at 1/Q the memory.
    bins, prior : ndarray, shape (Q, 2) and (Q,), optional
        Classification head only: the ab bins (default
        :func:`koala_utils.classification.ab_bins`) and their prior, stored
        in the model.
    backbone : str, optional
        The backbone whose ``embed_dim``-wide embeddings the model takes
        (e.g. ``"efficientnet_lite0"``), recorded in the ``fusion_tile``
        layer and in every ``.keras`` file saved from the model. None records
        none: the command line then refuses the saved file.
    supervision_stride : int
        Classification head only: while training, compute the logits at one
        pixel of every ``supervision_stride`` × ``supervision_stride`` block
        (:class:`koala_utils.rebalanced_loss.SupervisedPixels`; the loss
        must have the same stride). Prediction is unchanged.

    Returns
    -------
    keras.Model
        Inputs ``{"l": (None, None, None, 1), "embedding": (None, embed_dim)}``.
        Regression: output ``(None, None, None, 2)`` float32 in [-1, 1];
        classification: logits ``(None, None, None, Q)`` float32 at H/2.
    """
    if head not in ("regression", "classification"):
        raise ValueError(f"head must be 'regression' or 'classification', got {head!r}")
    dtype = dtype_policy
    l_input = keras.Input((None, None, 1), name="l")
    embedding = keras.Input((embed_dim,), name="embedding")

    x = l_input
    for i, (filters, strides) in enumerate(ENCODER, start=1):
        x = _conv(filters, f"encoder_{i}", dtype, strides=strides)(x)

    x = FusionLayer(backbone=backbone, name="fusion_tile", dtype=dtype)([x, embedding])
    x = _conv(FUSION_FILTERS, "fusion_conv", dtype, kernel=1)(x)

    x = _conv(128, "decoder_1", dtype)(x)
    x = layers.UpSampling2D(2, name="decoder_up_1", dtype=dtype)(x)
    x = _conv(64, "decoder_2", dtype)(x)
    x = _conv(64, "decoder_3", dtype)(x)
    x = layers.UpSampling2D(2, name="decoder_up_2", dtype=dtype)(x)
    x = _conv(32, "decoder_4", dtype)(x)
    if head == "classification":
        from .classification import ab_bins

        bins = ab_bins() if bins is None else np.asarray(bins, np.float32)
        if supervision_stride > 1:
            x = SupervisedPixels(supervision_stride, name="supervised_pixels", dtype=dtype)(x)
        logits = _conv(len(bins), "decoder_logits", "float32", activation=None, kernel=1)(x)
        carrier = AbBins(len(bins), name="ab_bins", dtype="float32")
        out = carrier(logits)
        carrier.bins.assign(bins)
        carrier.prior.assign(np.full(len(bins), 1 / len(bins), np.float32) if prior is None else prior)
        return keras.Model({"l": l_input, "embedding": embedding}, out, name=name)
    # The output stays float32 under mixed precision; the authors upsample after the tanh.
    x = _conv(2, "decoder_ab", "float32", activation="tanh")(x)
    ab = layers.UpSampling2D(2, name="decoder_up_3", dtype="float32")(x)
    return keras.Model({"l": l_input, "embedding": embedding}, ab, name=name)


def compile_model(model, learning_rate=1e-3, loss_scaling=False, loss="mse"):
    """Compile with the paper's Adam (lr 1e-3) and MSE on scaled ab.

    ``loss_scaling`` wraps Adam in a ``LossScaleOptimizer``, as float16
    training needs. ``loss`` may be a Keras loss object instead (the
    classification head's :class:`koala_utils.rebalanced_loss.RebalancedCrossEntropy`);
    ``learning_rate`` may be a schedule.
    """
    optimizer = keras.optimizers.Adam(learning_rate)
    if loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss=loss)
    return model


def load_model(path):
    """Load a saved ``.keras`` model with ``safe_mode=True``.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not a valid Keras archive, or needs unsafe deserialisation
        (a ``Lambda`` layer, say). The message names the file.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # keras raises ValueError, TypeError, OSError, zipfile errors...
        raise ValueError(f"{path}: refused to load model ({type(exc).__name__}: {exc})") from exc


def copy_matching_weights(source, target):
    """Copy the weights of every layer that both models have, by name and shape (e.g. the trunk of an MSE
    model into a classification model). Returns the names of the layers copied."""
    copied = []
    for layer in target.layers:
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            continue
        mine, theirs = layer.get_weights(), other.get_weights()
        if mine and len(mine) == len(theirs) and all(a.shape == b.shape for a, b in zip(mine, theirs, strict=True)):
            layer.set_weights(theirs)
            copied.append(layer.name)
    return copied


def pad_to_multiple(array, multiple=STRIDE):
    """Pad the H and W axes of ``(N, H, W, C)`` at the bottom/right to a multiple, repeating the edge pixels."""
    h, w = array.shape[1], array.shape[2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return array
    return np.pad(array, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")


class Predictor:
    """Scaled ab for any H×W from either head, through ``model.predict_on_batch``.

    Keras' ``model.predict`` builds a data pipeline on every call, which costs
    far more than the network for one photo; ``predict_on_batch`` reuses the
    model's compiled predict function. A classification model's logits are
    decoded with the annealed mean at ``temperature`` (default 0.2), its average colour held by the colour cast
    guard of strength ``cast_guard`` (default :data:`koala_utils.classification.CAST_GUARD`; 0 turns it off).
    """

    def __init__(self, model, temperature=None, cast_guard=None):
        from . import classification as cls

        self.model = model
        self.bins = self.prior = None
        self.kept = 1.0
        if cls.is_classification(model):
            self.bins, self.prior = cls.model_bins(model), cls.model_prior(model)
            self.kept = cls.model_rebalancing_kept(model)
        self.temperature = cls.TEMPERATURE if temperature is None else float(temperature)
        self.cast_guard = cls.CAST_GUARD if cast_guard is None else float(cast_guard)

    def __call__(self, l_scaled, embedding, temperature=None):
        """Predict scaled ab for a batch.

        Parameters
        ----------
        l_scaled : ndarray of float32, shape (N, H, W, 1), in [-1, 1]
            Any H and W: they are padded to a multiple of 8 and cropped back.
        embedding : ndarray of float32, shape (N, D)
        temperature : float, optional
            Classification head only; default: the one given at construction.

        Returns
        -------
        ab : ndarray of float32, shape (N, H, W, 2), in [-1, 1]
        """
        from .classification import logit_region

        h, w = np.shape(l_scaled)[1], np.shape(l_scaled)[2]
        region = logit_region(pad_to_multiple(np.asarray(l_scaled, np.float32))) if self.bins is not None else None
        return self.decode(self.raw(l_scaled, embedding), h, w, temperature, region)

    def raw(self, l_scaled, embedding):
        """The network's own output for a batch: scaled ab, or the logits (N, H'/2, W'/2, Q) of the padded size."""
        padded = pad_to_multiple(np.asarray(l_scaled, dtype=np.float32))
        out = self.model.predict_on_batch({"l": padded, "embedding": np.asarray(embedding, np.float32)})
        return np.asarray(ops.convert_to_numpy(out), dtype=np.float32)

    def decode(self, raw, h, w, temperature=None, region=None, cast_guard=None):
        """Scaled ab (N, h, w, 2) from :meth:`raw`'s output: for a classification model the annealed mean, the
        cast guard (averages over ``region``, :func:`koala_utils.classification.logit_region`; default the whole
        grid) and the final ×2 upsampling (nearest neighbour, as the paper's last layer); then the crop to h×w."""
        if self.bins is not None:
            from .classification import decode_logits

            t = self.temperature if temperature is None else float(temperature)
            guard = self.cast_guard if cast_guard is None else float(cast_guard)
            raw = decode_logits(raw, t, self.bins, self.prior, self.kept, guard, region)
            raw = raw.repeat(2, axis=1).repeat(2, axis=2)
        return raw[:, :h, :w, :]


def predict_ab(model, l_scaled, embedding, temperature=None, cast_guard=None):
    """Predict scaled ab for any H×W (see :class:`Predictor`)."""
    return Predictor(model, temperature, cast_guard)(l_scaled, embedding)
