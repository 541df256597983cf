"""scripts/train_shipped.py: each phase gets its own data order (a phase that stops after part of an epoch's worth of
photos must not see the same first photos as the phase before it)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def train_shipped():
    spec = importlib.util.spec_from_file_location("train_shipped", ROOT / "scripts" / "train_shipped.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seed_of_phase(train_shipped, monkeypatch, tmp_path, *extra):
    import koala_utils.train

    seen = {}
    def fake_train(records, run_dir, **kwargs):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        seen.update(kwargs)

    monkeypatch.setattr(koala_utils.train, "train", fake_train)
    train_shipped.main(["--model", "paper", "--runs", str(tmp_path), "--init", "none", *extra])
    return seen["seed"]


def test_each_phase_shuffles_differently(train_shipped, monkeypatch, tmp_path):
    first = _seed_of_phase(train_shipped, monkeypatch, tmp_path, "--phase", "s3p1")
    second = _seed_of_phase(train_shipped, monkeypatch, tmp_path, "--phase", "s3p2")
    again = _seed_of_phase(train_shipped, monkeypatch, tmp_path, "--phase", "s3p1")
    assert first != second
    assert first == again  # resuming a phase keeps its order
    assert _seed_of_phase(train_shipped, monkeypatch, tmp_path, "--phase", "s3p1", "--seed", "7") == 7


def test_recalibrating_the_shipped_vivid_model_moves_only_its_bias_and_records_it(train_shipped, monkeypatch,
                                                                                     tmp_path):
    """--recalibrate F sets the export's rebalancing_removed to F: only decoder_logits' bias moves, by
    -(F - before) * log w, and the card keeps the old and new fractions (run on a copy of the shipped files)."""
    import json
    import shutil

    import numpy as np

    from koala_utils import classification, pretrained

    shutil.copy(pretrained.weights_path("vivid"), tmp_path / "vivid.weights.h5")
    shutil.copy(pretrained.card_path("vivid"), tmp_path / "vivid.json")
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    before_model, card = pretrained.load("vivid", return_info=True)
    before = card["rebalancing_removed"]
    train_shipped.main(["--model", "vivid", "--recalibrate", str(before + 0.1), "--summary", "test"])
    after_model, after_card = pretrained.load("vivid", return_info=True)
    assert after_card["rebalancing_removed"] == pytest.approx(before + 0.1)
    assert after_card["calibrations"][-1]["rebalancing_removed"] == [before, pytest.approx(before + 0.1)]
    assert classification.model_rebalancing_kept(after_model) == pytest.approx(1 - before - 0.1)
    log_w = np.log(classification.rebalancing_weights(classification.model_prior(before_model)))
    for old, new in zip(before_model.weights, after_model.weights, strict=True):
        if old.path == "decoder_logits/bias":
            assert np.allclose(np.asarray(new) - np.asarray(old), -0.1 * log_w, atol=2e-2)  # float16 rounding
        else:
            assert np.array_equal(np.asarray(new), np.asarray(old)), old.path
    assert json.loads((tmp_path / "vivid.json").read_text())["calibrations"][-1]["why"] == "test"
