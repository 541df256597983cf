"""Which backbone a model goes with: read from the model, its card or its run folder, and checked.

A colorization network only makes sense with the backbone whose embeddings it was trained on. Every model this
package makes records it:

* a ``.keras`` file in the config of its ``fusion_tile`` layer (``FusionLayer(backbone=...)``, a plain string that
  saves and loads with ``safe_mode=True``), written by :func:`koala_utils.train.train` and
  :func:`koala_utils.pretrained.load`;
* a run folder also in its ``config.json`` (``"backbone"``, ``"embed_dim"``);
* a shipped model in its card (``koala_utils/pretrained/<name>.json``).

:func:`check` refuses a model whose record differs from the backbone or the records it is given;
:func:`load_file` refuses a file that records no backbone at all, rather than guess one. Nothing here imports
Keras at import time (the onnx engine's command line imports this module).
"""

import json
from pathlib import Path

FUSION_LAYER = "fusion_tile"


class BackboneMismatchError(ValueError):
    """A model and a backbone or records that do not go together, or a model file that does not say which
    backbone it needs. The message names the model and what it was checked against."""


def recorded(model):
    """The backbone a model records, and the width of the embedding it takes.

    Parameters
    ----------
    model : keras.Model or engine.OnnxColorizer

    Returns
    -------
    name : str or None
        E.g. ``"efficientnet_lite0"``; None when the model records none (built without
        ``build_model(backbone=...)``, or saved before models recorded it).
    embed_dim : int or None
        Width D of the ``embedding`` input (N, D); None when the model has no such input.
    """
    if hasattr(model, "backbone_name"):  # the onnx engine's colorizer carries both in its metadata
        return model.backbone_name, getattr(model, "embed_dim", None)
    layer = _fusion_layer(model)
    try:
        inputs = model.input
    except (AttributeError, ValueError):
        inputs = None
    dim = inputs["embedding"].shape[-1] if isinstance(inputs, dict) and "embedding" in inputs else None
    return getattr(layer, "backbone", None), None if dim is None else int(dim)


def _fusion_layer(model):
    for layer in getattr(model, "layers", ()):
        if layer.name == FUSION_LAYER and hasattr(layer, "backbone"):
            return layer
    return None


def stamp(model, name):
    """Record ``name`` as the model's backbone (kept by ``model.save``); returns the model.

    For a model whose backbone is known from elsewhere (its run folder's ``config.json``, the notes of whoever
    trained it). Raises ``ValueError`` for a model without a ``fusion_tile`` layer.
    """
    layer = _fusion_layer(model)
    if layer is None:
        raise ValueError(f"the model has no {FUSION_LAYER!r} layer to record its backbone in")
    layer.backbone = str(name)
    return model


def check(model, backbone=None, embed_dim=None, what="the model", against="the backbone given"):
    """Refuse a model whose recorded backbone or embedding width differs from the given ones.

    A model that records no backbone is checked on its embedding width only (the caller named the backbone;
    nothing is assumed for it).

    Parameters
    ----------
    model : keras.Model or engine.OnnxColorizer
    backbone : str, optional
        The backbone's name (``Backbone.name``, a manifest's ``"backbone"``).
    embed_dim : int, optional
        Its embedding width D.
    what, against : str
        How the message names the model (e.g. its file) and what it was checked against.

    Raises
    ------
    BackboneMismatchError
        The names or the widths differ; the message names both sides.
    """
    name, dim = recorded(model)
    if backbone is not None and name is not None and name != backbone:
        raise BackboneMismatchError(f"{what} was trained with backbone {name}, but {against} is {backbone}; "
                                    "its colours would be meaningless. Use the matching backbone or records.")
    if embed_dim is not None and dim is not None and int(dim) != int(embed_dim):
        raise BackboneMismatchError(f"{what} takes {dim}-d embeddings, but {against} gives {int(embed_dim)}-d ones "
                                    f"({backbone or 'another backbone'})")


def load_file(path):
    """Load a ``.keras`` file and the backbone it goes with, refusing to guess.

    The backbone is the one the model records, else the one in ``config.json`` beside it (a run folder);
    both must agree when both are there.

    Parameters
    ----------
    path : path
        A ``.keras`` file.

    Returns
    -------
    model : keras.Model
        With the backbone recorded in it (from ``config.json`` when the file itself had none).
    backbone : str
    source : str
        Where the backbone came from, for messages: the file, or the ``config.json``.

    Raises
    ------
    BackboneMismatchError
        Neither the file nor a ``config.json`` beside it names a backbone, or the two disagree.
    FileNotFoundError, ValueError
        From :func:`koala_utils.model.load_model`.
    """
    from .model import load_model

    path = Path(path)
    model = load_model(path)
    own, _ = recorded(model)
    config_path = path.parent / "config.json"
    beside = _config_backbone(config_path)
    if own and beside and own != beside:
        raise BackboneMismatchError(f"{path} records backbone {own}, but {config_path} says {beside}; refusing a "
                                    "model whose backbone is in doubt")
    if own:
        return model, own, str(path)
    if beside:
        return stamp(model, beside), beside, str(config_path)
    raise BackboneMismatchError(
        f"{path}: the model does not record which backbone it was trained with, and there is no config.json with "
        "a backbone beside it; refusing to guess. Pass its run folder, or record it once: "
        "model = koala_utils.model.load_model(path); koala_utils.backbone_record.stamp(model, 'efficientnet_lite0'); "
        "model.save(path)"
    )


def _config_backbone(config_path):
    """The ``"backbone"`` of a run folder's ``config.json``; None when there is no such file or entry."""
    if not config_path.is_file():
        return None
    try:
        return json.loads(config_path.read_text()).get("backbone")
    except (OSError, ValueError, AttributeError) as exc:
        raise BackboneMismatchError(f"{config_path}: unreadable ({exc}); cannot tell the model's backbone") from exc
