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

Under several workers only the chief writes into the run folder; which
process does what is :mod:`koala_utils.workers` (re-exported here).

This module uses TensorFlow directly: the strategies are TensorFlow's.
"""

import json
import os

from ._io import tf as _tf
from .workers import (  # re-exported: distribute.is_chief and the rest keep working
    RestoreFromChief,
    fit_workarounds,
    is_chief,
    load_sharded,
    num_workers,
    task_of,
    write_dir,
)

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
