"""Checkpoints and the log of a run folder: atomic, NaN-free, resumable.

The callbacks :func:`koala_utils.train.train` writes a run folder with (see
that module for the folder's layout): the log line of each epoch
(``log.csv``), the resume point (``backup/``, :class:`SafeBackupAndRestore`),
``best.keras`` (:class:`BestCheckpoint`) and ``last.keras``
(:class:`LastGoodCheckpoint`). Every file is written under a temporary name
and renamed, so a kill at any moment leaves the previous one whole, and
nothing is saved while the loss or the weights are not finite
(:class:`StopOnNaN`). :func:`trim_log` and :func:`read_history` keep the log
in step with the backup on resume.
"""

import csv
import json
import math
import os
from pathlib import Path

import keras
import numpy as np


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Keras' ``TerminateOnNaN`` that also remembers that it fired.

    It also checks the weights at each epoch's end: a NaN weight behind a
    ReLU can leave the loss finite while the network is already broken.
    """

    diverged = False

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = True
        super().on_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if not _finite_weights(self.model):
            self.diverged = True
            self.model.stop_training = True


class LastGoodCheckpoint(keras.callbacks.Callback):
    """Save the model each epoch, atomically, only while the loss and the weights are finite."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        self._save(logs)

    def _save(self, logs):
        loss = (logs or {}).get("loss")
        if loss is None or not math.isfinite(loss) or not _finite_weights(self.model):
            return False
        tmp = self.path.with_name(self.path.stem + ".tmp.keras")
        self.model.save(tmp)
        os.replace(tmp, self.path)
        return True


class BestCheckpoint(LastGoodCheckpoint):
    """Save the model, atomically, when ``val_loss`` beats the best so far.

    Keras' ``ModelCheckpoint(save_best_only=True)`` saves the first epoch
    whatever its ``val_loss`` (NaN included), and after a resume it forgets
    the best of the earlier attempts. Here a NaN never counts, and ``best``
    starts from the run's log.
    """

    def __init__(self, path, best=math.inf):
        super().__init__(path)
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get("val_loss")
        if current is not None and math.isfinite(current) and current < self.best and self._save(logs):
            self.best = current


def _best_val_loss(run_dir):
    """The lowest finite val_loss logged so far, when best.keras exists (a resumed run must beat it)."""
    if not (Path(run_dir) / "best.keras").is_file():
        return math.inf
    return min((v for v in read_history(run_dir).get("val_loss", []) if math.isfinite(v)), default=math.inf)


def _finite_loss(logs):
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


def _finite_weights(model):
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.trainable_weights)


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' ``BackupAndRestore``, safe against a kill at any moment.

    Keras writes the weights and the epoch number in place (a kill mid-write
    leaves a backup that cannot be loaded), and with an integer ``save_freq``
    does not save at an epoch's end (the last finished epoch was redone after
    a restart). This callback writes both files under temporary names and
    renames them, also saves at every epoch's end, and saves nothing while the
    loss or the weights are not finite.
    """

    def on_train_batch_end(self, batch, logs=None):
        if _finite_loss(logs):
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        self._batches_seen_since_last_saving = 0
        if _finite_loss(logs):
            self._save_model()

    def _save_model(self):
        if not _finite_weights(self.model):
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = self._weights_path[: -len(".weights.h5")] + ".tmp.weights.h5"
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, self._weights_path)
        tmp = self._training_metadata_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, fh)
        os.replace(tmp, self._training_metadata_path)


def trim_log(run_dir):
    """Drop the log lines of epochs newer than the backup (a resume redoes them).

    Returns the number of lines dropped.
    """
    run_dir = Path(run_dir)
    log, meta = run_dir / "log.csv", run_dir / "backup" / "training_metadata.json"
    if not log.is_file():
        return 0
    try:
        done = int(json.loads(meta.read_text())["epoch"]) if meta.is_file() else 0
    except (OSError, ValueError, KeyError):
        return 0  # Keras' own restore will report an unreadable backup
    with open(log, newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        return 0
    column = rows[0].index("epoch")
    keep = [row for row in rows[1:] if row and int(row[column]) < done]
    dropped = len(rows) - 1 - len(keep)
    if dropped:
        tmp = log.with_name(log.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows([rows[0]] + keep)
        os.replace(tmp, log)
    return dropped


def read_history(run_dir):
    """The run's per-epoch log as a dict of lists (last line wins per epoch)."""
    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        return {}
    rows = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows[int(row["epoch"])] = row
    history = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            history.setdefault(key, []).append(int(value) if key == "epoch" else float(value))
    return history


def run_callbacks(run_dir, backup_every_steps, tensorboard, nan_guard, write_dir=None):
    """Checkpoint/log callbacks writing into ``write_dir`` (a temp dir on non-chief workers)."""
    write_dir = run_dir if write_dir is None else write_dir
    backup_freq = backup_every_steps if backup_every_steps else "epoch"
    backup_args = {"save_freq": backup_freq, "delete_checkpoint": False}
    if write_dir == run_dir:
        backup = SafeBackupAndRestore(str(run_dir / "backup"), **backup_args)
    else:  # a non-chief worker resumes from the chief's backup, like the chief
        from .distribute import RestoreFromChief

        backup = RestoreFromChief(str(run_dir / "backup"), str(write_dir / "backup"), **backup_args)
    callbacks = [
        nan_guard,
        # The log line of an epoch is written before its backup: a kill between the two leaves a
        # line that trim_log drops on resume, never a gap.
        keras.callbacks.CSVLogger(str(write_dir / "log.csv"), append=True),
        backup,
        BestCheckpoint(write_dir / "best.keras", best=_best_val_loss(write_dir)),
        LastGoodCheckpoint(write_dir / "last.keras"),
    ]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(write_dir / "tensorboard"), update_freq="epoch"))
    return callbacks
