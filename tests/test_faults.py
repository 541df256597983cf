"""Faults: SIGKILL during training and during prepare, corrupt shards, NaN.

Training and prepare are killed with SIGKILL in a subprocess (no clean-up code
can run), then resumed; the tests check what a user would see: the epoch
counter and the loss history continue without gaps or duplicates, at most one
backup interval of work is lost, no record is duplicated or truncated.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from koala_utils import cli, data
from koala_utils.model import build_model, load_model
from koala_utils.train import TrainingDivergedError, train

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 6, 2  # steps per epoch, backup interval in steps
QUICK = dict(batch_size=4, image_size=32, steps_per_epoch=STEPS, verbose=0, tensorboard=False, augment=False)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}


def records_dir(small_records):
    return small_records[0]


def _start(script, tmp_path):
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(script))
    log = open(tmp_path / "child.log", "w")  # noqa: SIM115 (closed by _stop)
    proc = subprocess.Popen([sys.executable, str(path)], cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)
    proc.log.close()
    return proc.returncode


def _wait_for(condition, proc, tmp_path, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    _stop(proc)
    pytest.fail(f"child never reached the kill point:\n{(tmp_path / 'child.log').read_text()[-3000:]}")


def _log_rows(run):
    path = run / "log.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _steps(path):
    text = path.read_text() if path.is_file() else ""
    return [int(v) for v in text.split()]


class _Iterations(keras.callbacks.Callback):
    """Remember the optimizer's step count right after the backup was restored."""

    def on_train_begin(self, logs=None):
        self.restored = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))


# ----------------------------------------------------------------- training killed
TRAIN_CHILD = """
    import time, keras
    from koala_utils.train import train

    class Steps(keras.callbacks.Callback):  # one line per finished step, after the backup callback ran
        def on_train_batch_end(self, batch, logs=None):
            with open({steps!r}, "a") as fh:
                fh.write(f"{{int(self.model.optimizer.iterations.numpy())}}\\n")
            time.sleep(0.1)

    train({records!r}, {run!r}, epochs=1000, backup_every_steps={every}, callbacks=[Steps()], **{quick!r})
"""


def test_training_killed_mid_epoch_resumes(small_records, tmp_path):
    records = records_dir(small_records)
    run, steps_file = tmp_path / "run", tmp_path / "steps.txt"
    child = TRAIN_CHILD.format(records=str(records), run=str(run), steps=str(steps_file), every=EVERY, quick=QUICK)
    proc = _start(child, tmp_path)

    def mid_epoch_after_one():
        done = _steps(steps_file)
        return len(_log_rows(run)) >= 1 and done and done[-1] > STEPS and done[-1] % STEPS == 3

    _wait_for(mid_epoch_after_one, proc, tmp_path)
    proc.send_signal(signal.SIGKILL)
    assert _stop(proc) == -signal.SIGKILL
    done = _steps(steps_file)[-1]
    before = _log_rows(run)
    assert [int(r["epoch"]) for r in before] == list(range(len(before)))
    backup = json.loads((run / "backup" / "training_metadata.json").read_text())

    probe = _Iterations()
    _, history = train(records, run, epochs=backup["epoch"] + 1, backup_every_steps=EVERY, callbacks=[probe], **QUICK)
    # The weights come back from the last backup: at most one interval of steps is lost.
    assert done - probe.restored <= EVERY, (done, probe.restored)
    assert probe.restored <= done + 1  # + the step that was running when the kill came
    assert probe.restored // STEPS == backup["epoch"]
    # The epoch counter continues: every epoch once, the earlier losses untouched.
    after = _log_rows(run)
    assert [int(r["epoch"]) for r in after] == list(range(backup["epoch"] + 1))
    assert history["epoch"] == list(range(backup["epoch"] + 1))
    assert after[: backup["epoch"]] == before[: backup["epoch"]]
    assert all(np.isfinite(history["loss"]))
    assert load_model(run / "last.keras").count_params() == build_model().count_params()


def test_backup_every_steps_from_the_cli(small_records, tmp_path, monkeypatch):
    """`koala train --backup-every-steps 2` backs up every 2 steps and at each epoch's end."""
    from koala_utils import train as train_mod

    saves = []
    original = train_mod.SafeBackupAndRestore._save_model

    def spy(self):
        original(self)
        saves.append(json.loads(Path(self._training_metadata_path).read_text()))

    monkeypatch.setattr(train_mod.SafeBackupAndRestore, "_save_model", spy)
    args = ["train", str(records_dir(small_records)), str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4"]
    args += ["--image-size", "32", "--steps-per-epoch", "3", "--backup-every-steps", "2", "--verbose", "0"]
    assert cli.main(args) == cli.EXIT_OK
    # After step 2 (batch index 1), then at the epoch's end (Keras alone would not save there).
    assert [(s["epoch"], s["batch"]) for s in saves] == [(0, 1), (1, 0)]


def test_backup_is_written_atomically(small_records, tmp_path, monkeypatch):
    """A crash while the backup is being written leaves the previous backup whole."""
    from koala_utils import train as train_mod

    run, quick = tmp_path / "run", {**QUICK, "steps_per_epoch": 2}
    train(records_dir(small_records), run, epochs=1, **quick)  # backed up at the epoch's end
    weights = (run / "backup" / "latest.weights.h5").read_bytes()
    meta = (run / "backup" / "training_metadata.json").read_text()

    def crash(self, filepath, overwrite=True, **kwargs):
        Path(filepath).write_bytes(b"half a file")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(keras.Model, "save_weights", crash)
    with pytest.raises(KeyboardInterrupt):
        train(records_dir(small_records), run, epochs=3, **quick)
    monkeypatch.undo()
    assert (run / "backup" / "latest.weights.h5").read_bytes() == weights
    assert (run / "backup" / "training_metadata.json").read_text() == meta
    # Epoch 1's log line was written just before its backup failed; a resume drops it and redoes epoch 1.
    assert train_mod.read_history(run)["epoch"] == [0, 1]
    assert train_mod.trim_log(run) == 1 and train_mod.read_history(run)["epoch"] == [0]
    build_model().load_weights(run / "backup" / "latest.weights.h5")  # still loadable


# ----------------------------------------------------------------- prepare killed
PREPARE_CHILD = """
    import os, signal
    from koala_utils import data, record_writer

    example, calls = record_writer._example, []

    def example_then_die(*args, **kwargs):  # SIGKILL while the second shard's records are being written
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return example(*args, **kwargs)

    record_writer._example = example_then_die
    data.prepare({photos!r}, {out!r}, size=64, shard_size=2, val_fraction=0.25, progress=False)
"""


def _names_in_shards(folder):
    import tensorflow as tf

    names = {}
    for shard in sorted(Path(folder).glob("*.tfrecord")):
        for serialized in tf.data.TFRecordDataset(str(shard)):
            name = tf.io.parse_single_example(serialized, {"name": tf.io.FixedLenFeature([], tf.string)})["name"]
            names.setdefault(name.numpy().decode(), []).append(shard.name)
    return names


def test_prepare_killed_midway_then_rerun(sample_photos, lite0, tmp_path):
    photos = [str(p) for p in sample_photos]
    out = tmp_path / "records"
    proc = _start(PREPARE_CHILD.format(photos=photos, out=str(out)), tmp_path)
    try:
        proc.wait(timeout=240)
    finally:
        _stop(proc)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "child.log").read_text()[-3000:]
    assert not (out / data.MANIFEST).exists()
    complete = sorted(p.stem for p in out.glob("*-?????.json"))
    assert len(complete) == 1  # the first shard; the second was being written
    assert list(out.glob(".*.tmp")), "the interrupted shard was being written to a temporary file"
    first = (out / f"{complete[0]}.tfrecord").read_bytes()

    manifest = data.prepare(photos, out, backbone=lite0, size=64, shard_size=2, val_fraction=0.25, progress=False)
    clean = data.prepare(photos, tmp_path / "clean", backbone=lite0, size=64, shard_size=2, val_fraction=0.25,
                         progress=False)  # fmt: skip
    assert manifest["reused_images"] == 2 and (out / f"{complete[0]}.tfrecord").read_bytes() == first
    names = _names_in_shards(out)
    assert sorted(names) == sorted(Path(p).name for p in photos)
    assert all(len(shards) == 1 for shards in names.values()), names
    assert names == _names_in_shards(tmp_path / "clean")
    assert [(s["file"], s["count"]) for s in manifest["shards"]] == [(s["file"], s["count"]) for s in clean["shards"]]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    for shard in manifest["shards"]:  # the manifest records each shard's checksum, and they hold
        assert len(shard["sha256"]) == 64 and data.sha256_file(out / shard["file"]) == shard["sha256"]
    assert sum(len(data.shard_files(out, split)) for split in data.SPLITS) == len(manifest["shards"])


# ----------------------------------------------------------------- corrupt shards
def _damaged_copy(records, tmp_path, how):
    copy = tmp_path / f"records_{how}"
    shutil.copytree(records, copy)
    manifest = data.read_manifest(copy)
    shard = copy / next(s["file"] for s in manifest["shards"] if s["split"] == "train" and s["count"])
    raw = bytearray(shard.read_bytes())
    if how == "truncated":
        shard.write_bytes(bytes(raw[: len(raw) // 2]))
    elif how == "flipped":
        raw[len(raw) // 2] ^= 0xFF
        shard.write_bytes(bytes(raw))
    else:
        shard.unlink()
    return copy, shard


@pytest.mark.parametrize("how, reason", [("truncated", "corrupt"), ("flipped", "corrupt"), ("missing", "missing")])
def test_damaged_shard_is_named(small_records, tmp_path, capsys, how, reason):
    copy, shard = _damaged_copy(records_dir(small_records), tmp_path, how)
    for read in (lambda: data.load(copy, "train"), lambda: data.load_arrays(copy, "train")):
        with pytest.raises(data.ShardError, match=reason) as info:
            read()
        assert str(shard) in str(info.value)
    with pytest.raises(data.ShardError):
        train(copy, tmp_path / "run", epochs=1, **QUICK)
    args = ["train", str(copy), str(tmp_path / "run_cli"), "--epochs", "1", "--image-size", "32", "--verbose", "0"]
    assert cli.main(args) == cli.EXIT_USAGE
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(shard) in lines[0] and reason in lines[0], err


def test_unverified_truncated_shard_still_fails_loudly(small_records, tmp_path):
    """Without the checksum check, TFRecord's own CRC still stops the read: no silent skip."""
    import tensorflow as tf

    copy, _ = _damaged_copy(records_dir(small_records), tmp_path, "truncated")
    with pytest.raises(tf.errors.DataLossError):
        for _ in data.load(copy, "train", verify=False, batch_size=2):
            pass


# ----------------------------------------------------------------- NaN
class _PoisonWeights(keras.callbacks.Callback):
    """Set a layer's kernel to NaN before the second step of epoch 1."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            layer = self.model.get_layer(self.layer)
            kernel, bias = layer.get_weights()
            layer.set_weights([np.full_like(kernel, np.nan), bias])


@pytest.mark.parametrize("layer", ["decoder_ab", "encoder_1"])
def test_nan_stops_training_and_keeps_the_last_good_model(small_records, tmp_path, layer):
    """NaN in the output layer makes the loss NaN; NaN in the first layer hides behind a ReLU
    (the loss stays finite) and is caught by the weight check at the epoch's end."""
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="diverged") as info:
        train(records_dir(small_records), run, epochs=3, backup_every_steps=1, callbacks=[_PoisonWeights(layer)],
              **{**QUICK, "steps_per_epoch": 3})  # fmt: skip
    assert str(run / "last.keras") in str(info.value)
    rows = _log_rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # stopped in epoch 1, did not go on to epoch 2
    assert np.isfinite(float(rows[0]["loss"]))
    assert np.isfinite(float(rows[1]["loss"])) == (layer == "encoder_1")
    for name in ("last.keras", "best.keras"):
        model = load_model(run / name)
        assert all(np.isfinite(w).all() for w in model.get_weights()), name
    # The resume point is finite too: after step 1 of epoch 1, before the poison.
    assert json.loads((run / "backup" / "training_metadata.json").read_text()) == {"epoch": 1, "batch": 0}
    restored = build_model()
    restored.load_weights(run / "backup" / "latest.weights.h5")
    assert all(np.isfinite(w).all() for w in restored.get_weights())


def test_cli_train_divergence_exit_code(small_records, tmp_path, capsys):
    """An absurd learning rate: NaN within the first epoch, exit code 3, one line, no model saved."""
    args = ["train", str(records_dir(small_records)), str(tmp_path / "run"), "--epochs", "3", "--batch-size", "4"]
    args += ["--image-size", "32", "--steps-per-epoch", "4", "--learning-rate", "1e30", "--verbose", "0"]
    assert cli.main(args) == cli.EXIT_DIVERGED
    _, err = capsys.readouterr()
    (line,) = [ln for ln in err.splitlines() if ln.startswith("koala: error:")]
    assert "diverged" in line and "no epoch ended with finite weights" in line
    assert not (tmp_path / "run" / "best.keras").exists() and not (tmp_path / "run" / "last.keras").exists()
