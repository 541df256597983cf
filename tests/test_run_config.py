"""Settings that must not drift when a run folder is resumed (koala_utils.run_config)."""

import json

import pytest

from koala_utils import _io, run_config
from koala_utils.run_config import SettingsDriftError

SETTINGS = {"records_dir": "recs", "image_size": 224, "learning_rate": 1e-3, "loss": "mse",
            "backbone": "efficientnet_lite0", "embed_dim": 1000, "epochs": 10}


def _started(run_dir, settings=SETTINGS, epoch=3):
    """A run folder as train() leaves it: a config, a log and a resume point at ``epoch``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run_config.write(run_dir, settings)
    (run_dir / "backup").mkdir(exist_ok=True)
    (run_dir / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": epoch, "batch": 0}))
    (run_dir / "log.csv").write_text("epoch,loss\n0,1.0\n")
    return run_dir


def test_a_new_folder_takes_any_settings(tmp_path):
    assert run_config.check_resume(tmp_path / "new", SETTINGS) == SETTINGS
    # A config left by an attempt that never trained an epoch holds nothing to protect.
    run_config.write(tmp_path, {**SETTINGS, "learning_rate": 0.5})
    assert run_config.check_resume(tmp_path, SETTINGS) == SETTINGS


def test_same_settings_resume(tmp_path):
    run = _started(tmp_path / "run")
    assert run_config.check_resume(run, {**SETTINGS, "epochs": 20}) == {**SETTINGS, "epochs": 20}  # more epochs is fine


@pytest.mark.parametrize("key, value", [("learning_rate", 1e-4), ("image_size", 128), ("records_dir", "other"),
                                        ("loss", "classification"), ("backbone", "inception_resnet_v2"),
                                        ("embed_dim", 1001)])
def test_each_guarded_setting_is_named(tmp_path, key, value):
    run = _started(tmp_path / "run")
    with pytest.raises(SettingsDriftError, match=rf"{key}: recorded .*, asked {value!r}") as info:
        run_config.check_resume(run, {**SETTINGS, key: value})
    assert str(run) in str(info.value) and "--force" in str(info.value)


def test_an_old_record_without_a_loss_meant_mse(tmp_path):
    old = {k: v for k, v in SETTINGS.items() if k != "loss"}
    run = _started(tmp_path / "run", old)
    assert run_config.check_resume(run, SETTINGS) == SETTINGS
    with pytest.raises(SettingsDriftError, match="loss"):
        run_config.check_resume(run, {**SETTINGS, "loss": "classification"})


def test_the_same_records_folder_by_another_path(tmp_path, monkeypatch):
    (tmp_path / "recs").mkdir()
    run = _started(tmp_path / "run", {**SETTINGS, "records_dir": str(tmp_path / "recs")})
    monkeypatch.chdir(tmp_path)
    assert run_config.check_resume(run, {**SETTINGS, "records_dir": "recs"})["records_dir"] == "recs"


def test_force_records_a_new_phase_and_keeps_the_old_record(tmp_path):
    run = _started(tmp_path / "run", epoch=3)
    new = run_config.check_resume(run, {**SETTINGS, "learning_rate": 1e-4}, force=True)
    assert new["learning_rate"] == 1e-4 and new["from_epoch"] == 3
    assert new["phases"] == [{**SETTINGS, "from_epoch": 0}]
    run_config.write(run, new)
    (run / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": 5, "batch": 0}))
    # Going on with the phase's settings is a plain resume; a third change adds a third record.
    assert run_config.check_resume(run, {**SETTINGS, "learning_rate": 1e-4})["phases"] == new["phases"]
    third = run_config.check_resume(run, {**SETTINGS, "learning_rate": 1e-5}, force=True)
    assert third["from_epoch"] == 5
    assert third["phases"] == [{**SETTINGS, "from_epoch": 0}, {k: v for k, v in new.items() if k != "phases"}]


def test_an_unreadable_config_is_named(tmp_path):
    run = _started(tmp_path / "run")
    (run / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        run_config.check_resume(run, SETTINGS)


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "config.json"
    _io.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        _io.write_json_atomic(path, {"a": object()})  # not JSON
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left behind
