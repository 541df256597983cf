"""The processes of a distributed run: who writes the run folder, what each reads, what ``fit`` needs.

Under several workers every worker runs the same program. Only the chief
(worker 0, or the task of type ``"chief"``, :func:`is_chief`) writes into the
run folder; the others write their copies of checkpoints and logs into a
temporary folder (:func:`write_dir`) that is deleted afterwards, and resume
from the chief's backup (:class:`RestoreFromChief`). :func:`load_sharded`
gives each worker its own shards; :func:`fit_workarounds` side-steps two Keras
bugs of ``fit`` under a strategy. The strategies themselves are built by
:mod:`koala_utils.distribute`, which re-exports all of these.

This module uses TensorFlow directly: the strategies are TensorFlow's.
"""

import tempfile
from pathlib import Path

import keras

from ._io import tf as _tf


def task_of(strategy=None):
    """``(task_type, task_id)`` of this process in its cluster, ``(None, None)`` when alone."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy=None):
    """Whether this process is the one that writes the run's files.

    True without a strategy, under a one-machine strategy, for the ``"chief"``
    task, and for worker 0 of a cluster that has no ``"chief"`` task.
    """
    task_type, task_id = task_of(strategy)
    if task_type is None or task_type == "chief" or _is_tpu(strategy):
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in _cluster(strategy)


def write_dir(run_dir, strategy=None):
    """Where this process writes checkpoints and logs.

    ``run_dir`` itself on the chief; on any other worker a fresh temporary
    folder (the caller deletes it), so that workers never overwrite the
    chief's files yet run exactly the same saving code (a save may need every
    worker to take part).
    """
    if is_chief(strategy):
        return Path(run_dir)
    task_type, task_id = task_of(strategy)
    return Path(tempfile.mkdtemp(prefix=f"koala-{task_type}{task_id}-"))


class RestoreFromChief(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` for a non-chief worker.

    It saves into its own (temporary) ``backup_dir`` like every worker, but
    restores from the chief's backup, so that after an interruption every
    worker resumes from the same epoch and weights. The chief's run folder
    must therefore be on storage all workers see (NFS, a bucket).
    """

    def __init__(self, chief_backup_dir, backup_dir, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self._chief = keras.callbacks.BackupAndRestore(chief_backup_dir, **kwargs)

    def set_model(self, model):
        super().set_model(model)
        self._chief.set_model(model)

    def on_train_begin(self, logs=None):
        self._chief.on_train_begin(logs)


def num_workers(strategy=None):
    """Number of worker processes (machines) taking part: 1 for one-machine strategies."""
    if _is_tpu(strategy):
        return 1  # one program drives the TPU
    spec = _cluster(strategy)
    return max(1, sum(len(spec.get(kind, [])) for kind in ("chief", "worker")))


def _is_tpu(strategy):
    return strategy is not None and isinstance(strategy, _tf().distribute.TPUStrategy)


def _cluster(strategy):
    """The cluster as a dict of task type -> addresses ({} without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec() if resolver is not None else None
    return spec.as_dict() if spec else {}


def fit_workarounds(model, strategy):
    """Make ``model.fit``/``evaluate`` work under ``strategy`` with Keras 3 (checked on 3.15).

    Two Keras bugs are side-stepped on this one model instance:

    - Before training, Keras fetches a first batch and reduces it across
      replicas only to learn the input shapes. That fails for dict inputs
      under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20329) and for a
      last, partial batch under ``MirroredStrategy`` (unequal shapes). The
      model's own symbolic inputs and output carry those shapes: they are used
      instead.
    - Under ``MultiWorkerMirroredStrategy`` Keras averages each step's logs
      with ``strategy.reduce("MEAN", value, axis=0)``, which rejects scalars
      ("Invalid reduction dimension 0", tensorflow/tensorflow#72388). The
      step's scalar logs are given a length-1 axis, which the reduction
      removes again.

    Parameters
    ----------
    model : keras.Model
        A functional model built under ``strategy.scope()``.
    strategy : tf.distribute.Strategy

    Returns
    -------
    keras.Model
        The same model.
    """
    build = getattr(model, "_maybe_symbolic_build", None)
    if build is not None:  # absent in other Keras versions: nothing to work around
        symbolic_batch = (model.input, model.output)
        model._maybe_symbolic_build = lambda iterator=None, data_batch=None: build(
            data_batch=symbolic_batch if data_batch is None else data_batch
        )
    if num_workers(strategy) > 1 and isinstance(strategy, _tf().distribute.MultiWorkerMirroredStrategy):
        model.train_step = _with_vector_logs(model.train_step)
        model.test_step = _with_vector_logs(model.test_step)
    return model


def _with_vector_logs(step):
    tf = _tf()

    def vector_step(data):
        logs = step(data)
        return {k: tf.reshape(v, [1]) if getattr(v, "shape", None) == () else v for k, v in logs.items()}

    return vector_step


def load_sharded(strategy, records_dir, split, global_batch, **kwargs):
    """:func:`koala_utils.data.load` for several workers: each reads its own shards.

    Every worker builds its own pipeline (``distribute_datasets_from_function``),
    reading one shard in N (or one record in N when there are fewer shards than
    workers), batched per replica, so the global batch is ``global_batch``.

    Parameters
    ----------
    strategy : tf.distribute.Strategy
    records_dir, split : as for :func:`koala_utils.data.load`
    global_batch : int
        Photos per step over all replicas of all workers.
    **kwargs
        Passed on to :func:`koala_utils.data.load`.

    Returns
    -------
    tf.distribute.DistributedDataset
        Accepted by ``model.fit``.
    """
    from . import data

    def dataset_fn(context):
        return data.load(
            records_dir,
            split,
            context.get_per_replica_batch_size(global_batch),
            num_workers=context.num_input_pipelines,
            worker_index=context.input_pipeline_id,
            **kwargs,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)
