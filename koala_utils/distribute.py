"""Scale training out with ``tf.distribute``: several GPUs, several machines, a TPU.

:func:`make_strategy` builds the strategy that :func:`koala_utils.train.train`
(and ``koala train --strategy``) trains under:

========================  ==================================================
``"default"``             no distribution: ``tf.distribute.get_strategy()``
``"mirrored"``            every GPU of this machine (or its logical CPUs)
``"multiworker"``         several machines, described by ``$TF_CONFIG``
``"tpu"``                 the TPU of a Colab / Cloud TPU VM
========================  ==================================================

The model is replicated, each replica takes ``batch_size`` photos of every
global batch of ``batch_size * replicas``, and the gradients are averaged, so
one step under a strategy equals one step on one device with the global batch.

:func:`split_cpu` cuts this machine's CPU into logical devices, which lets
``MirroredStrategy`` be tried (and tested) without GPUs.

Under several workers every worker runs the same program. Only the chief
(worker 0, or the task of type ``"chief"``) writes into the run folder; the
others write their copies of checkpoints and logs into a temporary folder
(:func:`write_dir`) that is deleted afterwards.

This module uses TensorFlow directly: the strategies are TensorFlow's.
"""

import json
import os
import tempfile
from pathlib import Path

import keras

from ._io import tf as _tf

NAMES = ("default", "mirrored", "multiworker", "tpu")

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
)


def split_cpu(n):
    """Present this machine's CPU as ``n`` logical devices.

    TensorFlow fixes its device list the first time it runs an operation, so
    call this at the start of the program (or of a fresh notebook kernel),
    before any tensor, model or dataset is created. Importing ``keras`` or
    ``koala_utils`` is fine.

    Parameters
    ----------
    n : int
        Number of logical CPU devices (1 or more).

    Returns
    -------
    list of str
        The logical CPU device names, e.g. ``["/device:CPU:0", "/device:CPU:1"]``.

    Raises
    ------
    RuntimeError
        TensorFlow has already initialised its devices with another split.
    """
    tf = _tf()
    if int(n) < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(n))
    except RuntimeError as exc:
        have = len(tf.config.list_logical_devices("CPU"))
        raise RuntimeError(
            f"cannot split the CPU into {n} devices: TensorFlow already runs with {have}. Call "
            "split_cpu() before creating any tensor, model or dataset (restart the notebook kernel)."
        ) from exc
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def read_tf_config(environ=None):
    """Parse and check ``$TF_CONFIG`` (the multi-worker cluster description).

    Returns
    -------
    dict
        With ``cluster`` (task type -> list of ``"host:port"``) and ``task``
        (``{"type": ..., "index": ...}``).

    Raises
    ------
    ValueError
        ``TF_CONFIG`` is missing, not JSON, or inconsistent. The message shows
        an example.
    """
    environ = os.environ if environ is None else environ
    hint = f"set TF_CONFIG on every worker, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' (index differs per worker)"
    raw = environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise ValueError(f"the multiworker strategy needs a cluster description: {hint}")
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON ({exc}): {hint}") from exc
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise ValueError(f"TF_CONFIG has no cluster.worker list: {hint}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no task {{type, index}}: {hint}")
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ValueError(
            f"TF_CONFIG task {task['type']}:{task['index']} is not in the cluster {cluster}: {hint}"
        )
    return config


def make_strategy(name="default", devices=None, tpu=None):
    """Build a ``tf.distribute`` strategy by name.

    Parameters
    ----------
    name : {"default", "mirrored", "multiworker", "tpu"}
        ``"mirrored"`` replicates over ``devices``, by default every GPU, or
        every logical CPU when there is no GPU (see :func:`split_cpu`).
        ``"multiworker"`` reads the cluster from ``$TF_CONFIG`` and must be
        created before any other TensorFlow work in the program.
        ``"tpu"`` connects to and initialises the TPU.
    devices : list of str, optional
        Devices for ``"mirrored"``.
    tpu : str, optional
        TPU name or ``grpc://`` address for ``"tpu"``; default: ``$TPU_NAME``,
        else ``$COLAB_TPU_ADDR``, else ``"local"`` (a TPU VM, as on Colab).

    Returns
    -------
    tf.distribute.Strategy

    Raises
    ------
    ValueError
        Unknown name, or a missing / invalid ``$TF_CONFIG``.
    RuntimeError
        ``"tpu"`` on a machine without a reachable TPU.
    """
    tf = _tf()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices or _mirrored_devices())
    if name == "multiworker":
        read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu)
    raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(NAMES)}")


def _mirrored_devices():
    tf = _tf()
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def _tpu_strategy(tpu):
    tf = _tf()
    address = tpu or os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or "local"
    if address.count(":") == 1 and not address.startswith("grpc://"):
        address = "grpc://" + address  # COLAB_TPU_ADDR is host:port
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise RuntimeError(
            f"no TPU found at {address!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}). On Colab pick "
            "Runtime > Change runtime type > TPU; elsewhere pass tpu= or set TPU_NAME."
        ) from exc
    return tf.distribute.TPUStrategy(resolver)


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


__all__ = [
    "make_strategy",
    "split_cpu",
    "read_tf_config",
    "is_chief",
    "task_of",
    "write_dir",
    "num_workers",
    "load_sharded",
    "fit_workarounds",
    "RestoreFromChief",
]
