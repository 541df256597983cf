"""The onnxruntime side of :mod:`koala_utils.engine`: sessions, metadata checks, the colorizer and the backbone.

Imports numpy, Pillow (through :mod:`koala_utils.images`) and, when a file is
opened, onnxruntime; never TensorFlow or Keras. :class:`OnnxColorizer` and
:class:`OnnxBackbone` stand in for a Keras model and a
:class:`koala_utils.backbones.Backbone`, so :func:`koala_utils.colorize.colorize`
and ``colorize_files`` take them as they are. :mod:`koala_utils.engine`
re-exports its public names.
"""

import json
import warnings
from pathlib import Path

import numpy as np

from . import images

STRIDE = 8  # the colorizer's total downsampling: its inputs are padded to a multiple of this
_SESSIONS = {}  # onnxruntime sessions by file


class OnnxModelError(ValueError):
    """An ONNX file that cannot be used: unreadable, not a Koalarization file, or built from other weights.

    The message names the file.
    """


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
        # The colour cast guard needs the prior and how much rebalancing the logits keep (files exported since
        # the guard was added hold both); without them, only cast_guard=0 decodes.
        self.prior = np.asarray(json.loads(meta["koala.ab_prior"]), np.float64) if "koala.ab_prior" in meta else None
        self.kept = float(meta.get("koala.rebalancing_kept", 1.0))
        recorded = meta.get("koala.source_sha256")
        if source is not None and recorded and Path(source).is_file():
            from ._io import sha256_file

            if sha256_file(source) != recorded:
                raise OnnxModelError(
                    f"{self.path}: built from other weights than {source} (stale ONNX file); "
                    "rebuild it with: python scripts/export_onnx.py"
                )

    def __repr__(self):
        return f"OnnxColorizer({str(self.path)!r}, head={self.head!r})"

    def predict(self, l_scaled, embedding, temperature=None, cast_guard=None):
        """Scaled ab for a batch, as :class:`koala_utils.model.Predictor` gives it.

        Parameters
        ----------
        l_scaled : ndarray of float32, shape (N, H, W, 1), in [-1, 1]
            Any H and W (edge-padded to a multiple of 8, cropped back).
        embedding : ndarray of float32, shape (N, D)
        temperature : float, optional
            Annealed-mean temperature of a classification head (default 0.2).
        cast_guard : float, optional
            Strength of the colour cast guard in [0, 1] (default
            :data:`koala_utils.classification.CAST_GUARD`). A file exported before the guard existed lacks the
            prior it needs: the default then decodes without it, with a warning; asking for it raises.

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
        from .classification import TEMPERATURE, decode_logits, logit_region

        guard = self._cast_guard(cast_guard)
        # Logits at H/2: decode, then the final nearest-neighbour x2 upsampling (as model.Predictor does).
        ab = decode_logits(out, TEMPERATURE if temperature is None else temperature, self.bins, self.prior,
                           self.kept, guard, logit_region(padded))
        return ab.repeat(2, axis=1).repeat(2, axis=2)[:, :h, :w, :]

    def _cast_guard(self, asked):
        from .classification import CAST_GUARD

        if self.prior is not None:
            return CAST_GUARD if asked is None else float(asked)
        if asked:
            raise OnnxModelError(f"{self.path}: no ab prior in its metadata, so no colour cast guard; re-export it "
                                 "with: python scripts/export_onnx.py (or pass cast_guard=0)")
        if asked is None and CAST_GUARD and not getattr(self, "_warned", False):
            warnings.warn(f"{self.path}: exported before the colour cast guard (no ab prior in its metadata): "
                          "decoding without it; re-export it with: python scripts/export_onnx.py", stacklevel=3)
            self._warned = True
        return 0.0

    def onnx_predictor(self, temperature=None, cast_guard=None):
        """``predict`` with a fixed temperature and guard: what :mod:`koala_utils.colorize` calls instead of
        Predictor."""
        return lambda l_scaled, embedding: self.predict(l_scaled, embedding, temperature, cast_guard)


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
