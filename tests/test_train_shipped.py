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
