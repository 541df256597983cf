"""Training: Adam 1e-3 on the MSE of scaled ab, with resume after interruption.

A run folder holds everything a run writes::

    RUN_DIR/config.json          the arguments
    RUN_DIR/log.csv              one line per epoch (loss, val_loss, ...)
    RUN_DIR/tensorboard/         TensorBoard logs
    RUN_DIR/backup/              BackupAndRestore state (resume point)
    RUN_DIR/best.keras           best model by val_loss
    RUN_DIR/last.keras           last model whose loss was finite

Calling :func:`train` again on the same ``RUN_DIR`` after a crash resumes from
the backup: the epoch counter continues and the log is appended to. The backup
is written atomically (a kill at any moment leaves the previous one whole), at
each epoch's end and, with ``backup_every_steps``, every N steps; log lines of
epochs newer than the backup are dropped on resume (those epochs are redone),
so the log never has gaps or duplicates. NaN weights are never backed up.
"""

import csv
import functools
import json
import math
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from . import backbone_record, data, run_config
from .model import build_model, compile_model

POLICIES = {"fp32": None, "float32": None, "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; training stopped."""


def resolve_policy(mixed_precision):
    """Map a user's switch to a Keras dtype policy name (or None for float32).

    ``"auto"`` / ``True`` picks ``mixed_float16`` on a GPU and
    ``mixed_bfloat16`` on a CPU. Also accepts ``"fp32"``, ``"bf16"``,
    ``"fp16"`` and Keras' own policy names.
    """
    if mixed_precision in (None, False, "none", "off"):
        return None
    if mixed_precision in (True, "auto", "on"):
        gpus = [d for d in keras.distribution.list_devices() if "gpu" in d.lower() or "cuda" in d.lower()]
        return "mixed_float16" if gpus else "mixed_bfloat16"
    if mixed_precision in POLICIES:
        return POLICIES[mixed_precision]
    if mixed_precision in ("mixed_bfloat16", "mixed_float16"):
        return mixed_precision
    raise ValueError(f"unknown mixed precision setting {mixed_precision!r}: use auto, fp32, bf16 or fp16")


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


def _callbacks(run_dir, backup_every_steps, tensorboard, nan_guard, write_dir=None):
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


LOSSES = ("mse", "classification")


def _classification_setup(records_dir):
    """Bins, the prior of the training photos, and the rebalanced loss for ``loss="classification"``."""
    from .classification import ab_bins, rebalancing_weights
    from .rebalanced_loss import RebalancedCrossEntropy, prior_from_records

    bins = ab_bins()
    prior = prior_from_records(records_dir, bins)
    return bins, prior, RebalancedCrossEntropy(bins, rebalancing_weights(prior))


def copy_matching_weights(source, target):
    """Copy the weights of every layer that both models have, by name and shape (e.g. the trunk of an MSE
    model into a classification model). Returns the names of the layers copied."""
    copied = []
    for layer in target.layers:
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            continue
        mine, theirs = layer.get_weights(), other.get_weights()
        if mine and len(mine) == len(theirs) and all(a.shape == b.shape for a, b in zip(mine, theirs, strict=True)):
            layer.set_weights(theirs)
            copied.append(layer.name)
    return copied


def _build(embed_dim, policy, learning_rate, initial_model, loss="mse", records_dir=None, backbone=None):
    """The compiled network, recording ``backbone``; ``initial_model``'s weights copied in (it must match)."""
    if loss == "classification":
        bins, prior, loss_fn = _classification_setup(records_dir)
        model = build_model(embed_dim, dtype_policy=policy, head="classification", bins=bins, prior=prior,
                            backbone=backbone)
    else:
        model, loss_fn = build_model(embed_dim, dtype_policy=policy, backbone=backbone), "mse"
    if initial_model is not None:
        backbone_record.check(initial_model, backbone, embed_dim, what="initial_model",
                              against=f"the backbone of {records_dir}")
        if initial_model.output_shape[-1] == model.output_shape[-1]:
            model.set_weights(initial_model.get_weights())
        else:
            copy_matching_weights(initial_model, model)
    return compile_model(model, learning_rate, loss_scaling=policy == "mixed_float16", loss=loss_fn)


def train(
    records_dir,
    run_dir,
    epochs=10,
    batch_size=100,
    learning_rate=1e-3,
    mixed_precision=None,
    strategy=None,
    image_size=None,
    augment=True,
    steps_per_epoch=None,
    validation_steps=None,
    backup_every_steps=None,
    seed=0,
    verbose=1,
    tensorboard=True,
    initial_model=None,
    callbacks=(),
    val_records_dir=None,
    embedding_dropout=0.0,
    min_crop=0.75,
    deterministic=False,
    loss="mse",
    lr_decay=False,
    force=False,
):
    """Train the colorization network on prepared records.

    Parameters
    ----------
    records_dir : path
        Output of :func:`koala_utils.data.prepare`.
    run_dir : path
        Where logs, backups and checkpoints go (see the module docstring).
        Re-running with the same ``run_dir`` resumes an interrupted run.
    epochs : int
        Total epochs, counting those already done before an interruption.
    batch_size : int
        Per replica; the global batch is ``batch_size * replicas`` (the paper
        used 100 on one GPU). The learning rate is not rescaled.
    learning_rate : float
        Adam's learning rate (paper: 1e-3).
    mixed_precision : None, bool or str
        See :func:`resolve_policy`. The output layer stays float32.
    strategy : tf.distribute.Strategy, optional
        Build and train under this strategy (TensorFlow backend), e.g. from
        :func:`koala_utils.distribute.make_strategy`. With several workers
        only the chief writes into ``run_dir``; the others write into a
        temporary folder, deleted at the end, and resume from the chief's
        backup (so ``run_dir`` must be on storage every worker sees).
    image_size : int, optional
        Train at a lower resolution (a multiple of 8): the net is fully
        convolutional.
    augment : bool
        Random flips and crops on the training split.
    embedding_dropout, min_crop : float
        Augmentation strength, see :func:`koala_utils.data.load`.
    steps_per_epoch, validation_steps : int, optional
        Limit each epoch (quick runs); default: one pass over the split.
    backup_every_steps : int, optional
        Save the resume point every N steps, not only at each epoch's end.
    seed : int
        ``keras.utils.set_random_seed`` and the data pipeline's seed.
    verbose : int
        Keras' progress bar (1), one line per epoch (2) or silent (0).
    tensorboard : bool
    initial_model : keras.Model, optional
        Start from these weights (fine-tuning).
    callbacks : sequence of keras.callbacks.Callback
        Extra callbacks (e.g. a live plot in a notebook).
    val_records_dir : path, optional
        Validate on the "val" split of other records (e.g. ImageNet-val)
        instead of the held-out 10 % of ``records_dir``.
    deterministic : bool
        Also call ``tf.config.experimental.enable_op_determinism()`` (for the
        whole process; TensorFlow backend), which makes the data pipeline's
        parallel map keep its order: two runs with the same ``seed`` on the
        same machine then give bit-identical losses. Slower input pipeline.
    loss : {"mse", "classification"}
        ``"mse"``: the paper's head and loss. ``"classification"``: the
        classification head with the rebalanced cross-entropy of Zhang et al.
        (:mod:`koala_utils.rebalanced_loss`); the ab prior is estimated on
        ``records_dir``'s training photos and stored in the model.
    lr_decay : bool
        Cosine decay of the learning rate over this call's steps, down to
        a tenth of ``learning_rate``.
    force : bool
        Resume ``run_dir`` even with another records folder, image size,
        learning rate, loss or backbone than it was started with; the change
        is recorded in ``config.json`` as a new phase (see
        :func:`koala_utils.run_config.check_resume`).

    Returns
    -------
    model : keras.Model
    history : dict of lists
        Every epoch of the run, earlier interrupted attempts included.

    Raises
    ------
    TrainingDivergedError
        The loss became NaN; ``last.keras`` keeps the last good weights.
    koala_utils.run_config.SettingsDriftError
        ``run_dir`` holds a run started with other settings and ``force`` is
        not set. The message names each setting.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_dir, workers = run_dir, 1
    if strategy is not None:
        from . import distribute

        write_dir, workers = distribute.write_dir(run_dir, strategy), distribute.num_workers(strategy)
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    policy = resolve_policy(mixed_precision)
    manifest = data.read_manifest(records_dir)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    global_batch = batch_size * replicas
    config = {
        "records_dir": str(records_dir),
        "val_records_dir": str(val_records_dir or records_dir),
        "epochs": epochs,
        "batch_size": batch_size,
        "global_batch": global_batch,
        "learning_rate": learning_rate,
        "dtype_policy": policy or "float32",
        "image_size": image_size or manifest["image_size"],
        "augment": augment,
        "embedding_dropout": embedding_dropout,
        "min_crop": min_crop,
        "backbone": manifest["backbone"],
        "embed_dim": manifest["embed_dim"],
        "replicas": replicas,
        "seed": seed,
        "deterministic": deterministic,
        "loss": loss,
        "lr_decay": lr_decay,
    }
    run_config.write(write_dir, run_config.check_resume(write_dir, config, force=force))

    # Several workers: each reads its own shards (a dataset per worker, batched per replica).
    load = data.load if workers == 1 else functools.partial(distribute.load_sharded, strategy)
    train_ds = load(records_dir, "train", global_batch, augment=augment, image_size=image_size, seed=seed,
                    repeat=True, embedding_dropout=embedding_dropout, min_crop=min_crop)
    val_ds = load(val_records_dir or records_dir, "val", global_batch, image_size=image_size)
    if steps_per_epoch is None:
        steps_per_epoch = max(1, math.ceil(manifest["counts"]["train"] / global_batch))
    if validation_steps is None:
        val_manifest = data.read_manifest(val_records_dir) if val_records_dir else manifest
        val_count = val_manifest["counts"]["val"]
        validation_steps = max(1, math.ceil(val_count / global_batch))
    if lr_decay:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, steps_per_epoch * epochs, alpha=0.1)
    build_args = (manifest["embed_dim"], policy, learning_rate, initial_model, loss, records_dir, manifest["backbone"])
    if strategy is not None:
        with strategy.scope():
            model = _build(*build_args)
            distribute.fit_workarounds(model, strategy)
    else:
        model = _build(*build_args)
    nan_guard = StopOnNaN()
    if write_dir == run_dir:
        trim_log(run_dir)
        done = len(read_history(run_dir).get("epoch", []))
        if done and verbose:
            more = f"training epochs {done + 1}-{epochs}" if done < epochs else "nothing left to train"
            print(f"Resuming {run_dir}: {done} of {epochs} epochs already done; {more}.")
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        callbacks=_callbacks(run_dir, backup_every_steps, tensorboard, nan_guard, write_dir) + list(callbacks),
        verbose=verbose,
        shuffle=False,  # the dataset shuffles itself
    )
    history = read_history(write_dir)
    if write_dir != run_dir:
        shutil.rmtree(write_dir, ignore_errors=True)
    if nan_guard.diverged:
        last = run_dir / "last.keras"
        kept = f"the last good model is {last}" if last.is_file() else "no epoch ended with finite weights"
        raise TrainingDivergedError(
            f"training diverged (NaN loss or weights) in {run_dir}; {kept}. Lower the learning rate or check the data."
        )
    return model, history


__all__ = ["train", "read_history", "resolve_policy", "TrainingDivergedError"]
