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

import functools
import math
import shutil
from pathlib import Path

import keras

from . import backbone_record, data, run_config
from .checkpoints import (
    BestCheckpoint,
    LastGoodCheckpoint,
    SafeBackupAndRestore,
    StopOnNaN,
    read_history,
    run_callbacks,
    trim_log,
)
from .model import build_model, compile_model, copy_matching_weights

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


LOSSES = ("mse", "classification")
# Classification head: logits and loss at one pixel of every 2×2 block while training (benchmarks/head_step_cost.py).
SUPERVISION_STRIDE = 2


def _classification_setup(records_dir, supervision_stride=1):
    """Bins, the prior of the training photos, and the rebalanced loss for ``loss="classification"``."""
    from .classification import ab_bins, rebalancing_weights
    from .rebalanced_loss import RebalancedCrossEntropy, prior_from_records

    bins = ab_bins()
    prior = prior_from_records(records_dir, bins)
    return bins, prior, RebalancedCrossEntropy(bins, rebalancing_weights(prior), supervision_stride=supervision_stride)


def _build(embed_dim, policy, learning_rate, initial_model, loss="mse", records_dir=None, backbone=None,
           supervision_stride=1):
    """The compiled network, recording ``backbone``; ``initial_model``'s weights copied in (it must match)."""
    if loss == "classification":
        bins, prior, loss_fn = _classification_setup(records_dir, supervision_stride)
        model = build_model(embed_dim, dtype_policy=policy, head="classification", bins=bins, prior=prior,
                            backbone=backbone, supervision_stride=supervision_stride)
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
    supervision_stride=None,
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
    supervision_stride : int, optional
        Classification only: while training, the head computes its logits
        and loss at one pixel of every ``s`` × ``s`` block of its H/2 grid
        (:class:`koala_utils.rebalanced_loss.SupervisedPixels`), which makes a
        step cheaper; validation and prediction use every pixel. Default
        :data:`SUPERVISION_STRIDE`.
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
    if loss != "classification":
        supervision_stride = 1  # the MSE head has no SupervisedPixels layer
    elif supervision_stride is None:
        supervision_stride = SUPERVISION_STRIDE
    supervision_stride = int(supervision_stride)
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
        "supervision_stride": supervision_stride,
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
    build_args = (manifest["embed_dim"], policy, learning_rate, initial_model, loss, records_dir, manifest["backbone"],
                  supervision_stride)
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
        callbacks=run_callbacks(run_dir, backup_every_steps, tensorboard, nan_guard, write_dir) + list(callbacks),
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


__all__ = [
    "train", "read_history", "trim_log", "resolve_policy", "TrainingDivergedError", "copy_matching_weights",
    "SafeBackupAndRestore", "BestCheckpoint", "LastGoodCheckpoint", "StopOnNaN",
]
