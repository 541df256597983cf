"""The trained model shipped inside the package, loaded without network.

The weights live in ``koala_utils/pretrained/`` as float16 arrays in an HDF5
file (plain arrays, nothing executable), with a JSON card of how they were
trained. See MODEL_CARD.md at the repository's root.
"""

import json
from pathlib import Path

import numpy as np

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
WEIGHTS = PRETRAINED_DIR / "koalarization_lite0.weights.h5"
CARD = PRETRAINED_DIR / "koalarization_lite0.json"
NOTEBOOK_MODEL = Path("outputs") / "03_model.keras"


def available():
    """True when the shipped weights file is present."""
    return WEIGHTS.is_file() and CARD.is_file()


def info():
    """The shipped model's card (a dict): backbone, data, steps, metrics."""
    if not CARD.is_file():
        raise FileNotFoundError(f"{CARD}: no shipped model card")
    return json.loads(CARD.read_text())


def export(model, card, weights_path=WEIGHTS, card_path=CARD):
    """Write a model's weights as float16 HDF5 arrays, and its card as JSON."""
    import h5py

    weights_path, card_path = Path(weights_path), Path(card_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights_path.with_name(weights_path.name + ".tmp")
    with h5py.File(tmp, "w") as fh:
        for i, w in enumerate(model.weights):
            fh.create_dataset(f"{i:03d}", data=np.asarray(w.numpy(), dtype=np.float16))
            fh[f"{i:03d}"].attrs["name"] = w.path
    tmp.replace(weights_path)
    card_path.write_text(json.dumps(card, indent=1))
    return weights_path


def load(return_info=False, weights_path=WEIGHTS, card_path=CARD):
    """Build the network and load the shipped weights (float32 in memory).

    Parameters
    ----------
    return_info : bool
        Also return the model card as a dict.

    Returns
    -------
    model : keras.Model
    card : dict, only if ``return_info``

    Raises
    ------
    FileNotFoundError
        The package was installed without its weights file.
    """
    import h5py

    from .model import build_model

    weights_path, card_path = Path(weights_path), Path(card_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: the shipped model is missing from this installation")
    card = json.loads(Path(card_path).read_text())
    model = build_model(card.get("embed_dim", 1000))
    with h5py.File(weights_path, "r") as fh:
        arrays = [np.asarray(fh[key], dtype=np.float32) for key in sorted(fh.keys())]
    if len(arrays) != len(model.weights):
        raise ValueError(f"{weights_path}: holds {len(arrays)} arrays, the model needs {len(model.weights)}")
    model.set_weights(arrays)
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


def best_available(notebook_model=NOTEBOOK_MODEL, verbose=True, train_if_missing=False, photos=None):
    """The best trained model at hand, and a sentence saying which one it is.

    The shipped model when present; otherwise the model notebook 03 saved at
    ``notebook_model``. When there is neither, raises ``FileNotFoundError``,
    or with ``train_if_missing`` trains :func:`train_quick_model` (on
    ``photos``) into ``notebook_model`` first, and says so.
    """
    from .model import load_model

    if train_if_missing and not available() and not Path(notebook_model).is_file():
        print(f"No trained model: training a few-second stand-in into {notebook_model} (expect poor colours).")
        train_quick_model(notebook_model, photos)

    if available():
        model, card = load(return_info=True)
        what = f"the shipped model ({card.get('summary', 'trained on ImageNet samples')})"
    elif Path(notebook_model).is_file():
        model = load_model(notebook_model)
        what = f"the model trained in notebook 03 ({notebook_model}), a few-minute model"
    else:
        raise FileNotFoundError(
            f"no trained model: neither the shipped weights ({WEIGHTS}) nor {notebook_model}; run notebook 03 first"
        )
    if verbose:
        print(f"Using {what}.")
    return model, what
