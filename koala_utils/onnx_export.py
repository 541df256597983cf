"""Export a colorization network and its backbone to ONNX, for the onnxruntime engine.

The conversion is Keras 3's own ``model.export(path, format="onnx")``: the
public Keras API, which on the TensorFlow backend hands the traced function to
``tf2onnx`` (so ``tf2onnx`` must be installed to export; running the files
needs only ``onnxruntime``). This module then tidies the graph: readable input
and output names, named dynamic axes, optional float16 storage of the weights
(cast back to float32 inside the graph, so arithmetic stays float32), and
``koala.*`` metadata that :mod:`koala_utils.engine` checks before it runs a
file.

Files written
-------------
colorizer : inputs ``l`` float32 ``(batch, height, width, 1)`` (L scaled to
    [-1, 1], height and width multiples of 8) and ``embedding`` float32
    ``(batch, D)``; output ``ab`` ``(batch, height, width, 2)`` (ab / 127) for
    the regression head, or ``logits`` ``(batch, height, width, Q)`` for the
    classification head (the bins are in the metadata).
backbone : input ``image`` float32 ``(batch, S, S, 3)``, already scaled as
    ``(x - mean) / std`` (both in the metadata); output ``embedding``
    ``(batch, D)``.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ._io import sha256_file

# Keep tf2onnx's opset fixed, so that one set of Keras weights always gives the same file.
OPSET = 15
# Initializers smaller than this stay float32 (shape tensors, biases of a few values).
FLOAT16_MIN_SIZE = 64
FORMAT_VERSION = "1"


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - exercised only without the dev extra
        raise ImportError("exporting to ONNX needs the onnx and tf2onnx packages: pip install onnx tf2onnx") from exc
    return onnx


def _keras_to_onnx(model, input_signature):
    """Run Keras' ONNX export into a temporary file and load it back (an ``onnx.ModelProto``)."""
    onnx = _onnx()
    with tempfile.TemporaryDirectory(prefix="koala_onnx_") as tmp:
        path = os.path.join(tmp, "model.onnx")
        model.export(path, format="onnx", verbose=False, input_signature=input_signature, opset_version=OPSET)
        return onnx.load(path)


def _rename_value(graph, old, new):
    """Rename a tensor everywhere in a graph (node inputs and outputs, graph inputs and outputs)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new


def _name_dims(value, names):
    """Give the dynamic axes of a graph input or output readable names (``None`` keeps a fixed size)."""
    for dim, name in zip(value.type.tensor_type.shape.dim, names, strict=True):
        if name is not None:
            dim.dim_param = name


def canonical_names(proto):
    """Rename nodes, intermediate tensors and weights by position, and order the weights by first use.

    tf2onnx numbers its names with process-wide counters, so the same model
    exported twice gives different bytes; after this it gives the same file.
    Graph inputs and outputs keep their names. Changes ``proto`` in place.
    """
    graph = proto.graph
    keep = {value.name for value in list(graph.input) + list(graph.output)}
    inits = {init.name: init for init in graph.initializer}
    names, order = {}, []
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name in inits and name not in names:
                names[name] = f"w{len(order)}"
                order.append(inits[name])
        for k, name in enumerate(node.output):
            if name and name not in keep:
                names[name] = f"t{index}_{k}"
        node.name = f"n{index}_{node.op_type}"
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    for init in order:
        init.name = names[init.name]
    del graph.initializer[:]
    graph.initializer.extend(order)
    del graph.value_info[:]
    graph.name = "koalarization"
    graph.doc_string = ""  # tf2onnx writes the traced function's numbered name here
    return proto


def weights_to_float16(proto, min_size=FLOAT16_MIN_SIZE):
    """Store large float32 initializers as float16, cast back to float32 at the top of the graph.

    onnxruntime folds the casts once when it loads the file, so inference runs
    in float32 as before; only the file halves. Changes ``proto`` in place and
    returns it.
    """
    onnx = _onnx()
    from onnx import helper, numpy_helper

    graph = proto.graph
    kept, casts = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype != np.float32 or array.size < min_size:
            kept.append(init)
            continue
        kept.append(numpy_helper.from_array(array.astype(np.float16), init.name + "__fp16"))
        casts.append(helper.make_node("Cast", [init.name + "__fp16"], [init.name], to=onnx.TensorProto.FLOAT,
                                      name=init.name + "__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def _finish(proto, path, metadata, float16):
    """Float16 weights if asked, metadata, a check, and an atomic write to ``path``."""
    onnx = _onnx()
    canonical_names(proto)
    if float16:
        weights_to_float16(proto)
    metadata = {**metadata, "koala.format": FORMAT_VERSION, "koala.weights_dtype": "float16" if float16 else "float32"}
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        proto.metadata_props.add(key=key, value=str(value))
    proto.producer_name = "koalarization"
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(proto.SerializeToString())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_colorizer(model, path, float16=True, name="", backbone="efficientnet_lite0", source=None, bins=None):
    """Write a colorization network as ONNX, with dynamic batch, height and width.

    Parameters
    ----------
    model : keras.Model
        Inputs ``{"l": (None, None, None, 1), "embedding": (None, D)}``.
    path : path
        The ``.onnx`` file to write (replaced atomically).
    float16 : bool
        Store the weights as float16 (computation stays float32).
    name : str
        The model's name, recorded in the metadata.
    backbone : str
        Name of the backbone the model was trained with.
    source : path, optional
        The Keras weights file this came from: its SHA-256 is recorded, and
        the engine refuses the ONNX file once that file has changed.
    bins : ndarray of float32, shape (Q, 2), optional
        The ab bins of a classification head, in Lab units (default: read
        from the model when it has the classification head).

    Returns
    -------
    Path
    """
    import keras

    embed_dim = int({tensor.name: tensor.shape for tensor in model.inputs}["embedding"][-1])
    signature = [{
        "l": keras.InputSpec(shape=(None, None, None, 1), dtype="float32", name="l"),
        "embedding": keras.InputSpec(shape=(None, embed_dim), dtype="float32", name="embedding"),
    }]
    proto = _keras_to_onnx(model, signature)
    channels = int(model.output_shape[-1])
    head = "regression" if channels == 2 else "classification"
    graph = proto.graph
    _rename_value(graph, graph.output[0].name, "ab" if head == "regression" else "logits")
    for value in graph.input:
        _name_dims(value, ("batch", "height", "width", None) if value.name == "l" else ("batch", None))
    _name_dims(graph.output[0], ("batch", "height", "width", None))
    metadata = {"koala.kind": "colorizer", "koala.model": name, "koala.backbone": backbone,
                "koala.head": head, "koala.embed_dim": embed_dim, "koala.channels": channels}
    if head == "classification":
        if bins is None:
            from .classification import model_bins

            bins = model_bins(model)
        metadata["koala.ab_bins"] = json.dumps(np.asarray(bins, dtype=np.float32).tolist())
        from .classification import model_prior, model_rebalancing_kept  # for the colour cast guard

        metadata["koala.ab_prior"] = json.dumps(model_prior(model).tolist())
        metadata["koala.rebalancing_kept"] = repr(model_rebalancing_kept(model))
    if source is not None:
        metadata["koala.source_sha256"] = sha256_file(source)
        metadata["koala.source"] = Path(source).name
    return _finish(proto, path, metadata, float16)


def export_backbone(backbone, path, float16=False):
    """Write a :class:`koala_utils.backbones.Backbone`'s network as ONNX (dynamic batch).

    Parameters
    ----------
    backbone : backbones.Backbone
    path : path
    float16 : bool
        Store the weights as float16 (computation stays float32).

    Returns
    -------
    Path
    """
    import keras

    size = backbone.input_size
    signature = [keras.InputSpec(shape=(None, size, size, 3), dtype="float32", name="image")]
    proto = _keras_to_onnx(backbone.model, signature)
    graph = proto.graph
    _rename_value(graph, graph.input[0].name, "image")
    _rename_value(graph, graph.output[0].name, "embedding")
    _name_dims(graph.input[0], ("batch", None, None, None))
    _name_dims(graph.output[0], ("batch", None))
    metadata = {"koala.kind": "backbone", "koala.backbone": backbone.name, "koala.input_size": size,
                "koala.mean": backbone.mean, "koala.std": backbone.std, "koala.embed_dim": backbone.dim}
    return _finish(proto, path, metadata, float16)


def backbone_path(folder, backbone_name):
    """Where the backbone's ONNX file lies beside the colorizers: ``folder/<backbone>.onnx``."""
    return Path(folder) / f"{backbone_name}.onnx"


def export(model, path, backbone="efficientnet_lite0", float16=True, backbone_float16=False, name="", source=None,
           overwrite=True):
    """Write a colorizer as ``path`` and its backbone beside it as ``<backbone>.onnx``.

    What ``koala export`` runs. The two files together are what
    :func:`koala_utils.engine.load_onnx` needs.

    Parameters
    ----------
    model : keras.Model
    path : path
        The colorizer's ``.onnx`` file.
    backbone : str
        The backbone's name (built with its ImageNet weights).
    float16, backbone_float16 : bool
        Float16 weight storage for each file.
    name : str
    source : path, optional
        See :func:`export_colorizer`.
    overwrite : bool
        Replace an existing ``path``. Without it, an existing file is an
        error, and an existing backbone file of the same backbone is reused.

    Returns
    -------
    (Path, Path)
        The colorizer's and the backbone's files.

    Raises
    ------
    FileExistsError
        ``path``, or a backbone file that is not this backbone's, exists.
    """
    from .backbones import get_backbone

    path = Path(path)
    target = backbone_path(path.parent, backbone)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"{path}: the output must end in .onnx")
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: exists (use --overwrite to replace it)")
    reuse = not overwrite and target.exists()
    if reuse and _metadata(target).get("koala.backbone") != backbone:
        raise FileExistsError(f"{target}: exists and is not a {backbone} backbone file (use --overwrite)")
    out = export_colorizer(model, path, float16=float16, name=name or path.stem, backbone=backbone, source=source)
    if not reuse:
        export_backbone(get_backbone(backbone), target, float16=backbone_float16)
    return out, target


def _metadata(path):
    """The ``metadata_props`` of an ONNX file as a dict (empty for a file onnx cannot read)."""
    onnx = _onnx()
    try:
        return {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    except Exception:  # not an ONNX file: treated as foreign
        return {}
