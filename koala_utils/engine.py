"""Colorize with onnxruntime (no TensorFlow, no Keras) or with Keras: the engine choice.

``engine="onnx"`` runs the ONNX files that :mod:`koala_utils.onnx_export`
writes (``koala_utils/pretrained/<name>.onnx`` for a shipped model, with the
backbone beside it as ``efficientnet_lite0.onnx``); it imports numpy, Pillow
and onnxruntime only, so it works in the light install
``pip install "koalarization[colorize]"``. ``engine="keras"`` runs the Keras
model. ``engine="auto"`` (the default) takes onnx when onnxruntime is
installed and the model has an ONNX file, else Keras.

:class:`OnnxColorizer` and :class:`OnnxBackbone` stand in for a Keras model
and a :class:`koala_utils.backbones.Backbone`, so
:func:`koala_utils.colorize.colorize` and ``colorize_files`` take them as they
are.
"""

import importlib.util
import inspect
import json
import os
from pathlib import Path

import numpy as np

from . import images, pretrained

ENGINES = ("auto", "onnx", "keras")
STRIDE = 8  # the colorizer's total downsampling: its inputs are padded to a multiple of this
_SESSIONS = {}  # onnxruntime sessions by file
_LOADED = {}  # (engine, model) -> (model, backbone) for colorize()


class OnnxModelError(ValueError):
    """An ONNX file that cannot be used: unreadable, not a Koalarization file, or built from other weights.

    The message names the file.
    """


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


def _session(path):
    """An onnxruntime session for ``path``, made once per file; unreadable files raise OnnxModelError."""
    path = Path(path)
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _SESSIONS:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Idle threads sleep rather than spin: with other work on the cores (a training run, a second photo
        # in another process) spinning costs more than it saves (benchmarks/colorize_latency.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            _SESSIONS[key] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise OnnxModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    return _SESSIONS[key]


def _metadata(session, path, kind):
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("koala.kind") != kind:
        found = meta.get("koala.kind", "no koala metadata")
        raise OnnxModelError(f"{path}: not a Koalarization {kind} ONNX file ({found}); export one with `koala export`")
    return meta


class OnnxColorizer:
    """A colorization network run by onnxruntime; stands in for the Keras model.

    Parameters
    ----------
    path : path
        An ONNX file written by :func:`koala_utils.onnx_export.export_colorizer`.
    source : path, optional
        The Keras weights file it must have been built from: when the file
        exists and its SHA-256 differs from the one recorded at export, the
        ONNX file is stale and refused.
    """

    def __init__(self, path, source=None):
        self.path = Path(path)
        self.session = _session(self.path)
        meta = _metadata(self.session, self.path, "colorizer")
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if set(inputs) != {"l", "embedding"} or len(inputs["l"]) != 4 or len(inputs["embedding"]) != 2:
            raise OnnxModelError(f"{self.path}: expected inputs l (N, H, W, 1) and embedding (N, D), got {inputs}")
        self.name = meta.get("koala.model", self.path.stem)
        if "koala.backbone" not in meta:
            raise OnnxModelError(f"{self.path}: the file does not record which backbone it goes with "
                                 "(no koala.backbone in its metadata); re-export it with `koala export`")
        self.backbone_name = meta["koala.backbone"]
        self.embed_dim = int(meta["koala.embed_dim"])
        self.head = meta.get("koala.head", "regression")
        self.output = self.session.get_outputs()[0].name
        self.bins = np.asarray(json.loads(meta["koala.ab_bins"]), np.float32) if "koala.ab_bins" in meta else None
        if self.head == "classification" and self.bins is None:
            raise OnnxModelError(f"{self.path}: a classification head without its ab bins in the metadata")
        recorded = meta.get("koala.source_sha256")
        if source is not None and recorded and Path(source).is_file():
            from .onnx_export import sha256_file

            if sha256_file(source) != recorded:
                raise OnnxModelError(
                    f"{self.path}: built from other weights than {source} (stale ONNX file); "
                    "rebuild it with: python scripts/export_onnx.py"
                )

    def __repr__(self):
        return f"OnnxColorizer({str(self.path)!r}, head={self.head!r})"

    def predict(self, l_scaled, embedding, temperature=None):
        """Scaled ab for a batch, as :class:`koala_utils.model.Predictor` gives it.

        Parameters
        ----------
        l_scaled : ndarray of float32, shape (N, H, W, 1), in [-1, 1]
            Any H and W (edge-padded to a multiple of 8, cropped back).
        embedding : ndarray of float32, shape (N, D)
        temperature : float, optional
            Annealed-mean temperature of a classification head (default 0.2).

        Returns
        -------
        ab : ndarray of float32, shape (N, H, W, 2), about [-1, 1] (ab / 127)
        """
        l_scaled = np.asarray(l_scaled, dtype=np.float32)
        h, w = l_scaled.shape[1], l_scaled.shape[2]
        pad = ((0, 0), (0, (-h) % STRIDE), (0, (-w) % STRIDE), (0, 0))
        padded = np.pad(l_scaled, pad, mode="edge") if any(p[1] for p in pad) else l_scaled
        feeds = {"l": np.ascontiguousarray(padded), "embedding": np.asarray(embedding, dtype=np.float32)}
        out = self.session.run([self.output], feeds)[0]
        if self.head != "classification":
            return out[:, :h, :w, :].astype(np.float32, copy=False)
        from .classification import TEMPERATURE, annealed_mean

        # Logits at H/2: decode, then the final nearest-neighbour x2 upsampling (as model.Predictor does).
        ab = annealed_mean(out, TEMPERATURE if temperature is None else temperature, bins=self.bins)
        return ab.repeat(2, axis=1).repeat(2, axis=2)[:, :h, :w, :]

    def onnx_predictor(self, temperature=None):
        """``predict`` with a fixed temperature: what :mod:`koala_utils.colorize` calls instead of Predictor."""
        return lambda l_scaled, embedding: self.predict(l_scaled, embedding, temperature)


class OnnxBackbone:
    """An ImageNet backbone run by onnxruntime; stands in for :class:`koala_utils.backbones.Backbone`.

    Parameters
    ----------
    path : path
        An ONNX file written by :func:`koala_utils.onnx_export.export_backbone`.
    """

    pretrained = True

    def __init__(self, path):
        self.path = Path(path)
        self.session = _session(self.path)
        meta = _metadata(self.session, self.path, "backbone")
        self.name = meta["koala.backbone"]
        self.input_size = int(meta["koala.input_size"])
        self.mean, self.std = float(meta["koala.mean"]), float(meta["koala.std"])
        self.dim = int(meta["koala.embed_dim"])

    def __repr__(self):
        return f"OnnxBackbone({str(self.path)!r}, name={self.name!r})"

    def preprocess(self, x):
        """uint8 ``(N, S, S, 3)`` -> float32 ``(x - mean) / std``."""
        return (np.asarray(x, dtype=np.float32) - np.float32(self.mean)) / np.float32(self.std)

    def embed(self, gray_images, batch_size=32):
        """Logits ``(N, dim)`` float32 for gray photos, as ``Backbone.embed``.

        Parameters
        ----------
        gray_images : ndarray or list of ndarray
            uint8 ``(H, W)`` photos of any size (``(H, W, 1)`` and RGB are made
            gray, other dtypes converted, by :func:`koala_utils.images.gray_uint8`
            as in ``Backbone.embed``); a single 2-D array counts as one photo.
        """
        if isinstance(gray_images, np.ndarray) and gray_images.ndim == 2:
            gray_images = [gray_images]
        squares = [images.resize_pad(images.gray_uint8(image), self.input_size)[0] for image in gray_images]
        out = [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(squares), batch_size):
            chunk = np.repeat(np.stack(squares[start : start + batch_size])[..., None], 3, axis=-1)
            out.append(self.session.run(None, {"image": self.preprocess(chunk)})[0].astype(np.float32))
        return np.concatenate(out, axis=0)


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


def load_keras(model=None):
    """A Keras model and its :class:`~koala_utils.backbones.Backbone` for a shipped name or a path."""
    from . import backbone_record, backbones

    if model is None or model == "pretrained" or str(model) in shipped_models():
        kwargs = {} if model in (None, "pretrained") or not getattr(pretrained, "NAMES", None) else {"name": model}
        net, card = pretrained.load(return_info=True, **kwargs)
        return net, backbones.get_backbone(card["backbone"])
    net, backbone, _ = backbone_record.load_file(model)  # refuses a file whose backbone is not recorded
    return net, backbones.get_backbone(backbone)


def load(engine="auto", model=None):
    """``(model, backbone, engine)`` for an engine choice and a ``--model`` value (see :func:`choose`)."""
    chosen = choose(engine, model)
    return (*(load_onnx(model) if chosen == "onnx" else load_keras(model)), chosen)


def colorize(image, model=None, backbone=None, size=224, return_timings=False, temperature=None, engine="auto"):
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
    temperature : float, optional
        Annealed-mean temperature for a classification head.
    engine : {"auto", "onnx", "keras"}

    Returns
    -------
    rgb : ndarray of uint8, shape (H, W, 3)
    timings : dict, only if ``return_timings``
    """
    from .colorize import colorize as run

    if model is None or isinstance(model, (str, os.PathLike)):
        key = (engine, None if model is None else str(model))
        if key not in _LOADED:
            _LOADED[key] = load(engine, model)[:2]
        model, default_backbone = _LOADED[key]
        backbone = default_backbone if backbone is None else backbone
    if backbone is None:
        raise ValueError("pass the backbone that goes with a loaded model")
    return run(image, model, backbone, size, return_timings, temperature=temperature)
