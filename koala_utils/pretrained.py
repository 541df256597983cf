"""The trained models shipped inside the package, loaded without network.

Two models, both the paper's network (Table 1) on the EfficientNet-Lite0 backbone, trained on the same photos:

- ``"paper"``: the paper's MSE head and loss; accurate, muted colours;
- ``"vivid"``: the classification head with class rebalancing (Zhang et al., 2016), decoded with the annealed
  mean; more colourful (see :mod:`koala_utils.classification`).

The weights live in ``koala_utils/pretrained/<name>.weights.h5`` as float16 arrays in an HDF5 file (plain arrays,
nothing executable), with a JSON card ``<name>.json`` of how they were trained. See MODEL_CARD.md at the
repository's root.
"""

import json
from pathlib import Path

import numpy as np

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
NAMES = ("paper", "vivid")
DEFAULT = "paper"
NOTEBOOK_MODEL = Path("outputs") / "03_model.keras"


def weights_path(name=None):
    """Path of a shipped model's weights file (``name`` in :data:`NAMES`, default :data:`DEFAULT`)."""
    return PRETRAINED_DIR / f"{_check(name)}.weights.h5"


def card_path(name=None):
    """Path of a shipped model's JSON card."""
    return PRETRAINED_DIR / f"{_check(name)}.json"


def _check(name):
    name = DEFAULT if name is None else name
    if name not in NAMES:
        raise ValueError(f"unknown shipped model {name!r}: choose one of {', '.join(NAMES)}")
    return name


WEIGHTS = weights_path()
CARD = card_path()


def available(name=None):
    """True when the shipped model's weights and card are present."""
    return weights_path(name).is_file() and card_path(name).is_file()


def info(name=None):
    """A shipped model's card (a dict): backbone, head, data, training phases, metrics."""
    path = card_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shipped model card")
    return json.loads(path.read_text())


def export(model, card, weights_path=WEIGHTS, card_path=CARD):
    """Write a model's weights as float16 HDF5 arrays (bins and prior in float32), and its card as JSON.

    The card's ``"backbone"`` and ``"embed_dim"`` must be there and match what the model records
    (:func:`koala_utils.backbone_record.check`).
    """
    import h5py

    from . import backbone_record

    if not card.get("backbone"):
        raise ValueError(f"{card_path}: the card must name the model's backbone")
    backbone_record.check(model, card["backbone"], card.get("embed_dim"), against=f"the card {card_path}")

    weights_path, card_path = Path(weights_path), Path(card_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights_path.with_name(weights_path.name + ".tmp")
    with h5py.File(tmp, "w") as fh:
        for i, w in enumerate(model.weights):
            keep = w.path.startswith("ab_bins/")  # bin centres must stay exact
            fh.create_dataset(f"{i:03d}", data=np.asarray(w.numpy(), dtype=np.float32 if keep else np.float16))
            fh[f"{i:03d}"].attrs["name"] = w.path
    tmp.replace(weights_path)
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=1))
    tmp.replace(card_path)
    return weights_path


def load(name=None, return_info=False, weights_path=None, card_path=None):
    """Build the network and load a shipped model's weights (float32 in memory).

    Parameters
    ----------
    name : {"paper", "vivid"}, optional
        Default :data:`DEFAULT`.
    return_info : bool
        Also return the model card as a dict.
    weights_path, card_path : path, optional
        Other files in the same format (default: the shipped ones of ``name``).

    Returns
    -------
    model : keras.Model
    card : dict, only if ``return_info``

    Raises
    ------
    FileNotFoundError
        The package was installed without this weights file.
    ValueError
        The file does not hold the arrays this network needs (the message names it).
    """
    import h5py

    from .model import build_model

    weights_path = Path(weights_path) if weights_path else globals()["weights_path"](name)
    card_path = Path(card_path) if card_path else globals()["card_path"](name)
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: the shipped model is missing from this installation")
    card = json.loads(Path(card_path).read_text())
    head = card.get("head", "regression")
    bins = np.zeros((card["num_bins"], 2), np.float32) if head == "classification" else None
    model = build_model(card.get("embed_dim", 1000), head=head, bins=bins, backbone=card.get("backbone"))
    with h5py.File(weights_path, "r") as fh:
        arrays = [np.asarray(fh[key], dtype=np.float32) for key in sorted(fh.keys())]
    shapes = [tuple(w.shape) for w in model.weights]
    if [a.shape for a in arrays] != shapes:
        raise ValueError(f"{weights_path}: holds {len(arrays)} arrays that do not fit the {head} network's "
                         f"{len(model.weights)} weights")
    model.set_weights(arrays)
    if head == "classification":  # the export's calibration, for the cast guard (classification.decode_logits)
        model.get_layer("ab_bins").rebalancing_removed = float(card.get("rebalancing_removed", 0.0))
    return (model, card) if return_info else model


def _wheel_photos():
    """The photos inside the scikit-image wheel, and their mirror images (no download)."""
    import skimage.data

    names = ("astronaut", "coffee", "chelsea", "rocket")
    return [(f"{n}{suffix}.png", getattr(skimage.data, n)()[:, ::step]) for n in names
            for suffix, step in (("", 1), ("_mirrored", -1))]


def train_quick_model(path=NOTEBOOK_MODEL, photos=None, seed=42):
    """Train a few-second model (like notebook 03's quick mode) and save it to ``path``.

    Only a stand-in so that a notebook runs from top to bottom when there is no
    trained model at all: expect poor colours.

    Parameters
    ----------
    path : path
        Where the ``.keras`` file goes; its folder also receives the records
        and the run (``records_quick/``, ``runs/quick/``).
    photos : list, optional
        Inputs for :func:`koala_utils.data.prepare`; default: the photos inside
        the scikit-image wheel and their mirror images.
    seed : int
    """
    import shutil

    from . import data, train

    path = Path(path)
    workdir = path.parent
    records, run_dir = workdir / "records_quick", workdir / "runs" / "quick"
    data.prepare(photos if photos is not None else _wheel_photos(), records, val_fraction=0.25, progress=False)
    shutil.rmtree(run_dir, ignore_errors=True)  # start afresh rather than resume an old run
    model, _ = train.train(records, run_dir, epochs=2, batch_size=8, image_size=64, steps_per_epoch=3,
                           validation_steps=1, seed=seed, tensorboard=False, verbose=0)
    model.save(path)
    return path


def best_available(notebook_model=NOTEBOOK_MODEL, verbose=True, train_if_missing=False, photos=None, name=None):
    """The best trained model at hand, and a sentence saying which one it is.

    The shipped model when present; otherwise the model notebook 03 saved at
    ``notebook_model``. When there is neither, raises ``FileNotFoundError``,
    or with ``train_if_missing`` trains :func:`train_quick_model` (on
    ``photos``) into ``notebook_model`` first, and says so. ``name`` picks
    the shipped model ("paper" or "vivid"; default :data:`DEFAULT`).
    """
    from .model import load_model

    if train_if_missing and not available(name) and not Path(notebook_model).is_file():
        print(f"No trained model: training a few-second stand-in into {notebook_model} (expect poor colours).")
        train_quick_model(notebook_model, photos)

    if available(name):
        model, card = load(name, return_info=True)
        what = f"the shipped model '{_check(name)}' ({card.get('summary', '')})"
    elif Path(notebook_model).is_file():
        model = load_model(notebook_model)
        what = f"the model trained in notebook 03 ({notebook_model}), a few-minute model"
    else:
        raise FileNotFoundError(
            f"no trained model: neither the shipped weights ({weights_path(name)}) nor {notebook_model}; "
            "run notebook 03 first"
        )
    if verbose:
        print(f"Using {what}.")
    return model, what
