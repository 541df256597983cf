"""The shipped models: load offline, beat the gray baseline, and the checks would catch random weights."""

import keras
import numpy as np
import pytest

from koala_utils import data, pretrained
from koala_utils.evaluate import evaluate_records
from koala_utils.model import PARAMS_1000, build_model

SUBSET = 48  # the first photos of imagenet_val_1300, in sorted order: a small fixed validation subset


@pytest.fixture(scope="module")
def val_subset(tmp_path_factory, val_folder, lite0):
    photos = sorted(val_folder.glob("*.JPEG"))[:SUBSET]
    out = tmp_path_factory.mktemp("val_subset")
    data.prepare(photos, out, backbone=lite0, val_fraction=1.0, progress=False)
    return out


def beats_gray(model, records):
    """The acceptance check: lower ab error AND higher mean PSNR than the gray baseline (ab = 0)."""
    result = evaluate_records(model, records, "val")
    ours, gray = result["mean"], result["gray_mean"]
    return ours["mse_ab"] < gray["mse_ab"] and ours["psnr"] > gray["psnr"], result


def vivid_is_useful(model, records):
    """The vivid model's check: over half the real colourfulness (the paper model has about a third), with its
    ab still closer to the truth than gray's (lower MSE on ab). Its PSNR is below gray's today (MODEL_CARD.md)."""
    result = evaluate_records(model, records, "val")
    ours, gray = result["mean"], result["gray_mean"]
    return ours["cf_ratio"] >= 0.5 and ours["mse_ab"] < gray["mse_ab"], result


def _strings(obj):
    """Every string inside a JSON-like object."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_shipped_models_load_offline(name):
    assert pretrained.available(name), f"{pretrained.weights_path(name)} is missing: the package must ship it"
    model, card = pretrained.load(name, return_info=True)
    assert card["backbone"] == "efficientnet_lite0" and card["name"] == name
    assert pretrained.weights_path(name).stat().st_size < 15e6
    assert not [v for v in _strings(card) if v.startswith("/")], "the card holds absolute paths of the trainer"
    if name == "paper":
        assert model.count_params() == PARAMS_1000 and card["head"] == "regression"
    else:
        assert card["head"] == "classification" and model.output_shape[-1] == card["num_bins"]


def test_paper_model_beats_the_gray_baseline(val_subset):
    ok, result = beats_gray(pretrained.load("paper"), val_subset)
    assert result["n_images"] == data.read_manifest(val_subset)["counts"]["val"] >= SUBSET - 2  # gray ones skipped
    assert ok, f"ours {result['mean']} vs gray {result['gray_mean']}"


def test_vivid_model_gives_colour_closer_to_the_truth_than_gray(val_subset):
    ok, result = vivid_is_useful(pretrained.load("vivid"), val_subset)
    assert ok, f"ours {result['mean']} vs gray {result['gray_mean']}"


def test_the_checks_fail_with_random_weights(val_subset):
    keras.utils.set_random_seed(0)
    ok, result = beats_gray(build_model(), val_subset)
    assert not ok, f"random weights passed: {result['mean']}"
    ok, result = vivid_is_useful(build_model(head="classification"), val_subset)
    assert not ok, f"random weights passed: {result['mean']}"


def test_best_available_prefers_the_shipped_model(tmp_path, capsys):
    model, what = pretrained.best_available(tmp_path / "none.keras")
    assert "shipped" in what and "shipped" in capsys.readouterr().out
    assert model.count_params() == PARAMS_1000


def test_best_available_trains_a_stand_in_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "absent")
    target = tmp_path / "03_model.keras"
    with pytest.raises(FileNotFoundError, match="no trained model"):
        pretrained.best_available(target)
    model, what = pretrained.best_available(target, train_if_missing=True)
    assert target.is_file() and "notebook 03" in what
    out = model.predict_on_batch({"l": np.zeros((1, 16, 16, 1), np.float32), "embedding": np.zeros((1, 1000))})
    assert out.shape == (1, 16, 16, 2)
