"""Reading records: the TFRecords of :func:`prepare` as a ``tf.data`` pipeline or as arrays.

:func:`load` turns the records into a ``tf.data.Dataset`` of ``((L, embedding), ab)``
with Lab computed in TensorFlow; :func:`load_arrays` reads a split into memory.
Writing them is :mod:`koala_utils.record_writer` (:func:`prepare`), the
manifest :mod:`koala_utils.record_manifest`; both are re-exported here, so
``data.prepare``, ``data.read_manifest`` and the rest keep working.

This module, :mod:`koala_utils.record_writer` and :mod:`koala_utils.train` are
the only ones that use TensorFlow directly.
"""

import functools

import numpy as np

from ._io import sha256_file
from ._io import tf as _tf
from .record_manifest import MANIFEST, SPLITS, ShardError, merge_manifests, read_manifest, shard_files
from .record_writer import FORMAT_VERSION, JPEG_QUALITY, encode_jpeg, plan_shards, prepare, split_of

__all__ = [
    "MANIFEST", "SPLITS", "FORMAT_VERSION", "JPEG_QUALITY", "ShardError", "prepare", "merge_manifests",
    "read_manifest", "shard_files", "split_of", "plan_shards", "encode_jpeg", "load", "load_arrays", "lab_batch",
    "sha256_file",
]


def _parse(serialized, embed_dim):
    tf = _tf()
    spec = {
        "name": tf.io.FixedLenFeature([], tf.string),
        "image": tf.io.FixedLenFeature([], tf.string),
        "embedding": tf.io.FixedLenFeature([embed_dim], tf.float32),
        "box": tf.io.FixedLenFeature([4], tf.int64),
    }
    return tf.io.parse_single_example(serialized, spec)


def _augment(rgb, seed_pair, size, min_scale):
    """Random horizontal flip and a random square crop rescaled to ``size``."""
    tf = _tf()
    rgb = tf.image.stateless_random_flip_left_right(rgb, seed_pair)
    full = tf.shape(rgb)[0]
    scale = tf.random.stateless_uniform([], seed_pair + 1, min_scale, 1.0)
    side = tf.cast(tf.cast(full, tf.float32) * scale, tf.int32)
    rgb = tf.image.stateless_random_crop(rgb, tf.stack([side, side, 3]), seed_pair + 2)
    return tf.image.resize(rgb, (size, size), method="bilinear")


def lab_batch(rgb):
    """Batch of float RGB in [0, 1] -> (scaled L (..., 1), scaled ab (..., 2))."""
    from .color import AB_SCALE, rgb_to_lab_tf

    lab = rgb_to_lab_tf(rgb)
    return lab[..., :1] / 50.0 - 1.0, lab[..., 1:] / AB_SCALE


@functools.cache
def _fused_lab_batch():
    """:func:`lab_batch` compiled by XLA into one fused loop: a third of its CPU time in the pipeline.

    The same values to float32 rounding (benchmarks/pipeline_throughput.py measures the gain).
    Falls back to the plain function where this TensorFlow cannot compile it.
    """
    tf = _tf()
    fused = tf.function(lab_batch, jit_compile=True)
    try:
        fused(tf.zeros((1, 8, 8, 3)))
    except Exception:  # a TensorFlow build without XLA's CPU compiler
        return lab_batch
    return fused


def load(
    records_dir,
    split="train",
    batch_size=32,
    shuffle=None,
    augment=False,
    image_size=None,
    min_crop=0.75,
    embedding_dropout=0.0,
    seed=0,
    repeat=False,
    drop_remainder=False,
    with_names=False,
    verify=True,
    num_workers=1,
    worker_index=0,
):
    """A ``tf.data.Dataset`` of ``({"l": L, "embedding": e}, ab)`` batches.

    Parameters
    ----------
    records_dir : path
        Output folder of :func:`prepare`.
    split : {"train", "val"}
    batch_size : int
    shuffle : bool, optional
        Default: True for "train", False for "val".
    augment : bool
        Random horizontal flips and random crops (``min_crop`` to 1 of the side).
    embedding_dropout : float
        With ``augment``, zero this share of the embedding's entries at random
        (and rescale the rest), so that a small training set cannot be
        memorised through its per-photo embeddings. 0 keeps the paper's input.
    image_size : int, optional
        Resize to this side (a multiple of 8) to train at a lower resolution.
    seed : int
        Seeds the shuffle and the augmentation.
    repeat : bool
    drop_remainder : bool
    with_names : bool
        Also yield the names as a third element.
    verify : bool
        Check every shard's SHA-256 against the manifest first.
    num_workers, worker_index : int
        Read only worker ``worker_index``'s share of ``num_workers``: whole
        shards, one in ``num_workers``, when there are at least as many shards
        as workers, else one record in ``num_workers`` of every shard. See
        :func:`koala_utils.distribute.load_sharded`, which passes these.

    Returns
    -------
    tf.data.Dataset
        ``l``: float32 (B, S, S, 1) in [-1, 1]; ``embedding``: float32 (B, D);
        ``ab``: float32 (B, S, S, 2), ab / 127.
    """
    tf = _tf()
    manifest = read_manifest(records_dir)
    files = shard_files(records_dir, split, verify=verify)
    if not files:
        raise ShardError(f"{records_dir}: no records in split {split!r}")
    size = image_size or manifest["image_size"]
    if size % 8:
        raise ValueError(f"image_size must be a multiple of 8, got {size}")
    shuffle = split == "train" if shuffle is None else shuffle
    dim = manifest["embed_dim"]
    by_file = num_workers > 1 and len(files) >= num_workers
    if by_file:
        files = files[worker_index::num_workers]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)), num_parallel_calls=tf.data.AUTOTUNE)
    if num_workers > 1 and not by_file:
        ds = ds.shard(num_workers, worker_index)
    if shuffle:
        ds = ds.shuffle(2048, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.enumerate()

    def decode(index, serialized):
        ex = _parse(serialized, dim)
        rgb = tf.image.convert_image_dtype(tf.io.decode_jpeg(ex["image"], channels=3), tf.float32)
        if augment:
            pair = tf.stack([tf.cast(seed, tf.int64), index])
            rgb = _augment(rgb, pair, size, min_crop)
            if embedding_dropout > 0:
                keep = tf.random.stateless_uniform(tf.shape(ex["embedding"]), pair + 3) >= embedding_dropout
                ex["embedding"] = tf.where(keep, ex["embedding"] / (1.0 - embedding_dropout), 0.0)
        elif size != manifest["image_size"]:
            rgb = tf.image.resize(rgb, (size, size), method="bilinear")
        rgb = tf.ensure_shape(rgb, (size, size, 3))
        return rgb, ex["embedding"], ex["name"]

    fused_lab_batch = _fused_lab_batch()

    def to_lab(rgb, embedding, name):
        lightness, ab = fused_lab_batch(rgb)
        inputs = {"l": lightness, "embedding": embedding}
        return (inputs, ab, name) if with_names else (inputs, ab)

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(to_lab, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Sharded here already, or else (the enumerate() above is not a file source) by whole batches.
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.OFF if num_workers > 1 else policy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def load_arrays(records_dir, split="val", limit=None, verify=True):
    """Read a split into memory: names, padded RGB uint8 photos, embeddings, boxes.

    Returns
    -------
    dict with ``names`` (list of str), ``rgb`` uint8 (N, S, S, 3),
    ``embedding`` float32 (N, D) and ``box`` int (N, 4).
    """
    tf = _tf()
    manifest = read_manifest(records_dir)
    files = shard_files(records_dir, split, verify=verify)
    names, rgbs, embs, boxes = [], [], [], []
    for serialized in tf.data.TFRecordDataset(files).take(limit if limit else -1):
        ex = _parse(serialized, manifest["embed_dim"])
        names.append(ex["name"].numpy().decode("utf-8"))
        rgbs.append(tf.io.decode_jpeg(ex["image"], channels=3).numpy())
        embs.append(ex["embedding"].numpy())
        boxes.append(ex["box"].numpy())
    return {"names": names, "rgb": np.stack(rgbs), "embedding": np.stack(embs), "box": np.stack(boxes)}
