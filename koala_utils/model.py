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
    """

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


def build_model(embed_dim=EMBED_DIM, dtype_policy=None, name="koalarization"):
    """Build the colorization network.

    Parameters
    ----------
    embed_dim : int
        Width of the backbone embedding (1000 for both backbones).
    dtype_policy : str or None
        ``None`` (float32), ``"mixed_bfloat16"`` (CPU) or ``"mixed_float16"``
        (GPU). The tanh output layer and the last upsampling stay float32.
    name : str

    Returns
    -------
    keras.Model
        Inputs ``{"l": (None, None, None, 1), "embedding": (None, embed_dim)}``,
        output ``(None, None, None, 2)`` float32 in [-1, 1].
    """
    dtype = dtype_policy
    l_input = keras.Input((None, None, 1), name="l")
    embedding = keras.Input((embed_dim,), name="embedding")

    x = l_input
    for i, (filters, strides) in enumerate(ENCODER, start=1):
        x = _conv(filters, f"encoder_{i}", dtype, strides=strides)(x)

    x = FusionLayer(name="fusion_tile", dtype=dtype)([x, embedding])
    x = _conv(FUSION_FILTERS, "fusion_conv", dtype, kernel=1)(x)

    x = _conv(128, "decoder_1", dtype)(x)
    x = layers.UpSampling2D(2, name="decoder_up_1", dtype=dtype)(x)
    x = _conv(64, "decoder_2", dtype)(x)
    x = _conv(64, "decoder_3", dtype)(x)
    x = layers.UpSampling2D(2, name="decoder_up_2", dtype=dtype)(x)
    x = _conv(32, "decoder_4", dtype)(x)
    # The output stays float32 under mixed precision; the authors upsample after the tanh.
    x = _conv(2, "decoder_ab", "float32", activation="tanh")(x)
    ab = layers.UpSampling2D(2, name="decoder_up_3", dtype="float32")(x)
    return keras.Model({"l": l_input, "embedding": embedding}, ab, name=name)


def compile_model(model, learning_rate=1e-3, loss_scaling=False):
    """Compile with the paper's Adam (lr 1e-3) and MSE on scaled ab.

    ``loss_scaling`` wraps Adam in a ``LossScaleOptimizer``, as float16
    training needs.
    """
    optimizer = keras.optimizers.Adam(learning_rate)
    if loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="mse")
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


def pad_to_multiple(array, multiple=STRIDE, value=0.0):
    """Pad the H and W axes of ``(N, H, W, C)`` at the bottom/right to a multiple."""
    h, w = array.shape[1], array.shape[2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return array
    return np.pad(array, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge" if value is None else "constant")


class Predictor:
    """A compiled inference function for one model, reused across calls.

    Keras' ``model.predict`` builds a data pipeline on every call, which costs
    far more than the network for one photo. This keeps one traced function per
    input shape.
    """

    def __init__(self, model):
        self.model = model

    def __call__(self, l_scaled, embedding):
        """Predict scaled ab for a batch.

        Parameters
        ----------
        l_scaled : ndarray of float32, shape (N, H, W, 1), in [-1, 1]
            Any H and W: they are padded to a multiple of 8 and cropped back.
        embedding : ndarray of float32, shape (N, D)

        Returns
        -------
        ab : ndarray of float32, shape (N, H, W, 2), in [-1, 1]
        """
        l_scaled = np.asarray(l_scaled, dtype=np.float32)
        h, w = l_scaled.shape[1], l_scaled.shape[2]
        padded = pad_to_multiple(l_scaled, value=None)
        out = self.model.predict_on_batch({"l": padded, "embedding": np.asarray(embedding, np.float32)})
        return np.asarray(ops.convert_to_numpy(out), dtype=np.float32)[:, :h, :w, :]


def predict_ab(model, l_scaled, embedding):
    """Predict scaled ab for any H×W (see :class:`Predictor`)."""
    return Predictor(model)(l_scaled, embedding)
