"""Colorize with onnxruntime (no TensorFlow, no Keras) or with Keras: the engine choice.

``engine="onnx"`` runs the ONNX files that :mod:`koala_utils.onnx_export`
writes (``koala_utils/pretrained/<name>.onnx`` for a shipped model, with the
backbone beside it as ``efficientnet_lite0.onnx``); it imports numpy, Pillow
and onnxruntime only, so it works in the light install
``pip install "koalarization[colorize]"``. ``engine="keras"`` runs the Keras
model. ``engine="auto"`` (the default) takes onnx when onnxruntime is
installed and the model has an ONNX file, else Keras.

:class:`OnnxColorizer` and :class:`OnnxBackbone` (in :mod:`koala_utils.onnx_models`,
re-exported here with its other public names) stand in for a Keras model and
a :class:`koala_utils.backbones.Backbone`, so
:func:`koala_utils.colorize.colorize` and ``colorize_files`` take them as they
are.
"""

import importlib.util
import inspect
import os
from pathlib import Path

from . import pretrained
from .onnx_models import (  # noqa: F401 - re-exported: engine.OnnxColorizer and the rest keep working
    STRIDE,
    OnnxBackbone,
    OnnxColorizer,
    OnnxModelError,
)

ENGINES = ("auto", "onnx", "keras")
_LOADED = {}  # (engine, model) -> (model, backbone) for colorize()


def onnxruntime_available():
    """True when onnxruntime can be imported (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def shipped_models():
    """The shipped models whose Keras weights are present: ``{name: weights file}``.

    Names from ``pretrained.NAMES`` when it exists, else the single shipped model.
    """
    names = getattr(pretrained, "NAMES", None)
    if not names:
        return {pretrained.WEIGHTS.name.replace(".weights.h5", ""): pretrained.WEIGHTS}
    files = {name: pretrained.PRETRAINED_DIR / f"{name}.weights.h5" for name in names}
    return {name: path for name, path in files.items() if path.is_file()}


def default_model_name():
    """The name of the model ``pretrained.load()`` gives."""
    default = getattr(pretrained, "DEFAULT", None)
    if default is None:
        parameter = inspect.signature(pretrained.load).parameters.get("name")
        default = None if parameter is None else parameter.default
    models = shipped_models()
    return default if default in models or not models else next(iter(models))


def shipped_onnx_path(name):
    """``koala_utils/pretrained/<name>.onnx``."""
    return pretrained.PRETRAINED_DIR / f"{name}.onnx"


def onnx_file_for(model=None):
    """The ONNX file for a ``--model`` value, or None when it has none.

    ``None`` or ``"pretrained"``: the default shipped model; a shipped name: its
    file; a path ending in ``.onnx``: that path. Anything else (a ``.keras``
    file, a run folder) has no ONNX file.
    """
    if model is None or model == "pretrained":
        return shipped_onnx_path(default_model_name())
    if str(model) in shipped_models():
        return shipped_onnx_path(str(model))
    if str(model).lower().endswith(".onnx"):
        return Path(model)
    return None


def choose(engine="auto", model=None):
    """Decide which engine runs ``model``: ``"onnx"`` or ``"keras"``.

    Raises
    ------
    ValueError
        An unknown engine, or ``"keras"`` for an ``.onnx`` file.
    ImportError
        ``"onnx"`` asked for (or an ``.onnx`` file given) without onnxruntime.
    FileNotFoundError
        ``"onnx"`` asked for a model that has no ONNX file.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    path = onnx_file_for(model)
    explicit_file = model is not None and str(model).lower().endswith(".onnx")
    if engine == "keras":
        if explicit_file:
            raise ValueError(f"{model}: an ONNX file runs on the onnx engine, not keras")
        return "keras"
    if engine == "onnx" or explicit_file:
        if not onnxruntime_available():
            raise ImportError('the onnx engine needs onnxruntime: pip install "koalarization[colorize]"')
        if path is None:
            raise FileNotFoundError(f"{model}: no ONNX file for this model; write one with `koala export`")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file (the shipped ones: python scripts/export_onnx.py)")
        return "onnx"
    return "onnx" if path is not None and path.is_file() and onnxruntime_available() else "keras"


def load_onnx(model=None):
    """The colorizer and backbone ONNX files for a ``--model`` value, checked against each other.

    Returns
    -------
    (OnnxColorizer, OnnxBackbone)
    """
    path = onnx_file_for(model)
    if path is None:
        raise FileNotFoundError(f"{model}: no ONNX file for this model")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    # A shipped ONNX file must come from the shipped weights beside it.
    sources = {shipped_onnx_path(name).resolve(): weights for name, weights in shipped_models().items()}
    colorizer = OnnxColorizer(path, source=sources.get(path.resolve()))
    backbone_file = path.parent / f"{colorizer.backbone_name}.onnx"
    if not backbone_file.is_file():
        raise FileNotFoundError(f"{backbone_file}: the backbone file {path.name} needs is missing")
    backbone = OnnxBackbone(backbone_file)
    if backbone.name != colorizer.backbone_name or backbone.dim != colorizer.embed_dim:
        raise OnnxModelError(
            f"{backbone_file}: backbone {backbone.name} ({backbone.dim}-d) does not match {path.name}, "
            f"which needs {colorizer.backbone_name} ({colorizer.embed_dim}-d)"
        )
    return colorizer, backbone


def resolve_keras(model=None):
    """The Keras model for a ``--model`` value and the backbone it records, refusing to guess one.

    Parameters
    ----------
    model : str or path, optional
        A shipped name (None or ``"pretrained"``: the default one), a ``.keras`` file, or a run folder (its
        ``best.keras``, else ``last.keras``).

    Returns
    -------
    net : keras.Model
    backbone : str
        From the shipped model's card, or what the file (or its run folder's ``config.json``) records.
    where : str
        The card of a shipped model, else the ``.keras`` file; names the model in messages.
    description : str
        One line for the user: which model, its backbone, and where that is recorded.

    Raises
    ------
    koala_utils.backbone_record.BackboneMismatchError
        A card or file that names no backbone, or a file and ``config.json`` that disagree.
    """
    from . import backbone_record

    if model in (None, "pretrained") or str(model) in pretrained.NAMES:
        name = pretrained.DEFAULT if model in (None, "pretrained") else str(model)
        net, card = pretrained.load(name, return_info=True)
        card_file = pretrained.card_path(name)
        if not card.get("backbone"):
            raise backbone_record.BackboneMismatchError(f"{card_file}: the card names no backbone")
        backbone = card["backbone"]
        return net, backbone, str(card_file), (f"shipped '{name}' ({card.get('head', 'regression')} head, "
                                               f"backbone {backbone}); card: {card_file}")
    path = Path(model)
    if path.is_dir():
        path = path / "best.keras" if (path / "best.keras").is_file() else path / "last.keras"
    net, backbone, source = backbone_record.load_file(path)
    return net, backbone, str(path), f"{path} (backbone {backbone}, recorded in {source})"


def load_keras(model=None):
    """A Keras model and its :class:`~koala_utils.backbones.Backbone` for a ``--model`` value
    (see :func:`resolve_keras`)."""
    from .backbones import get_backbone

    net, backbone, _, _ = resolve_keras(model)
    return net, get_backbone(backbone)


def load(engine="auto", model=None):
    """``(model, backbone, engine)`` for an engine choice and a ``--model`` value (see :func:`choose`)."""
    chosen = choose(engine, model)
    return (*(load_onnx(model) if chosen == "onnx" else load_keras(model)), chosen)


def _load_once(engine, model):
    """``(model, backbone)`` for an engine choice and a ``--model`` value, loaded on the first call only."""
    key = (engine, None if model is None else str(model))
    if key not in _LOADED:
        _LOADED[key] = load(engine, model)[:2]
    return _LOADED[key]


def colorize(image, model=None, backbone=None, size=224, return_timings=False, temperature=None, engine="auto",
             cast_guard=None, mix=None):
    """:func:`koala_utils.colorize.colorize` with an engine choice.

    Parameters
    ----------
    image : path, PIL image or ndarray
    model : None, str, path, keras.Model or OnnxColorizer
        None or a shipped name: the shipped model on the chosen ``engine``; a
        path: a ``.onnx`` or ``.keras`` file; a loaded model is used as it is.
    backbone : Backbone or OnnxBackbone, optional
        Default: the one that goes with ``model``.
    size, return_timings
        As in :func:`koala_utils.colorize.colorize`.
    temperature, cast_guard : float, optional
        Decoding knobs of a classification head (:func:`koala_utils.colorize.colorize`).
    engine : {"auto", "onnx", "keras"}
    mix : float, optional
        In [0, 1], for a classification model: mix its colour into the shipped ``paper`` model's, loaded on the
        same ``engine`` (:func:`koala_utils.colorize.mix_ab`). Default: no mixing.

    Returns
    -------
    rgb : ndarray of uint8, shape (H, W, 3)
    timings : dict, only if ``return_timings``
    """
    from .colorize import colorize as run

    if model is None or isinstance(model, (str, os.PathLike)):
        model, default_backbone = _load_once(engine, model)
        backbone = default_backbone if backbone is None else backbone
    if backbone is None:
        raise ValueError("pass the backbone that goes with a loaded model")
    partner = None if mix is None else _load_once(engine, "paper")[0]
    return run(image, model, backbone, size, return_timings, temperature=temperature, cast_guard=cast_guard,
               mix=mix, partner=partner)
