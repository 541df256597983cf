"""Record cache: photos -> sharded TFRecords of (224 px photo, embedding, name).

:func:`prepare` embeds every photo once with the frozen backbone and stores the
white-padded 224 px photo as a 4:4:4 JPEG at quality 95 (about 30 KB, against
the authors' 600 KB float records). :func:`load` turns the records into a
``tf.data.Dataset`` of ``((L, embedding), ab)`` with Lab computed in TensorFlow.

Photos are grouped into shards by a stable hash of their name, so the 90/10
train/validation split and the shard contents do not depend on the order of
the inputs, the number of workers, or earlier interrupted runs. Each shard is
written to a temporary file and renamed into place, next to a small JSON
sidecar listing what it holds; a re-run keeps every complete shard.

This module and :mod:`koala_utils.train` are the only ones that use
TensorFlow directly.
"""

import functools
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from . import images
from ._io import sha256_file, write_json_atomic
from ._io import tf as _tf

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
JPEG_QUALITY = 95
SPLITS = ("train", "val")


class ShardError(RuntimeError):
    """A record shard is missing, truncated or corrupt. The message names it."""


# ----------------------------------------------------------------- items & split
def _sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def split_of(name, val_fraction=0.1):
    """Stable train/val assignment from a hash of the name ("train" or "val")."""
    bucket = int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "val" if bucket < val_fraction else "train"


def _items_from_source(source):
    """Normalise the inputs to a list of (name, path-or-array)."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if folder.is_file():
            return [(folder.name, folder)]
        return [(str(p.relative_to(folder)), p) for p in images.list_images(folder)]
    items = []
    for i, entry in enumerate(source):
        if isinstance(entry, tuple):
            items.append((str(entry[0]), entry[1]))
        elif isinstance(entry, np.ndarray):
            items.append((f"array_{i:06d}", entry))
        else:
            items.append((Path(entry).name, Path(entry)))
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise ValueError("input names must be unique; pass (name, image) pairs to disambiguate")
    return items


def _checksum(obj):
    if isinstance(obj, np.ndarray):
        return _sha256_bytes(str(obj.shape).encode() + str(obj.dtype).encode() + np.ascontiguousarray(obj).tobytes())
    return sha256_file(obj) if Path(obj).is_file() else "missing"


def plan_shards(names, shard_size=500, val_fraction=0.1):
    """Group names into shards: per split, sorted, in fixed-size chunks.

    Returns
    -------
    list of (shard_name, split, names)
        ``shard_name`` like ``"train-00003"``. The plan depends only on the set
        of names, never on their order or on the number of workers.
    """
    plan = []
    for split in SPLITS:
        chosen = sorted(n for n in names if split_of(n, val_fraction) == split)
        for k in range(0, len(chosen), shard_size):
            plan.append((f"{split}-{k // shard_size:05d}", split, chosen[k : k + shard_size]))
    return plan


# ----------------------------------------------------------------- encoding
def encode_jpeg(rgb, quality=JPEG_QUALITY):
    """Encode RGB uint8 as a JPEG with full-resolution chroma (4:4:4)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def _example(name, jpeg, embedding, box):
    tf = _tf()
    feature = {
        "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode("utf-8")])),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "embedding": tf.train.Feature(float_list=tf.train.FloatList(value=embedding.astype(np.float32))),
        "box": tf.train.Feature(int64_list=tf.train.Int64List(value=list(box))),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


# ----------------------------------------------------------------- prepare
def _read_sidecar(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _shard_is_complete(out_dir, shard_name, expected):
    """A shard is reusable when its sidecar lists the same inputs and its bytes match."""
    sidecar = _read_sidecar(out_dir / f"{shard_name}.json")
    record = out_dir / f"{shard_name}.tfrecord"
    if not sidecar or not record.is_file() or sidecar.get("inputs") != expected:
        return False
    return sidecar.get("sha256") == sha256_file(record)


def _working_copies(source, size, backbone_size):
    """Read one photo at the sizes ``prepare`` keeps, never holding it whole at full resolution.

    Returns ``None`` for a gray photo, else ``(jpeg, box, gray_square)``: the
    white-padded ``size`` photo as JPEG bytes and its box, and the gray photo
    padded to the backbone's input (what the backbone would make of it).
    """
    rgb = images.load_image(source, max_side=max(size, backbone_size or size))
    if images.is_grayscale(rgb):
        return None
    padded, box = images.resize_pad(rgb, size)
    gray_square = images.resize_pad(images.to_gray(rgb), backbone_size)[0] if backbone_size else images.to_gray(rgb)
    return encode_jpeg(padded), box, gray_square


def _process_shard(out_dir, shard_name, split, entries, backbone, size, log):
    """Load, pad, encode and embed one shard's photos; write it atomically.

    Each photo is reduced to the working sizes as it is read, so a shard of
    big scans needs memory for its small copies only.
    """
    loaded, skipped, failed = [], [], []
    for name, source, _ in entries:
        try:
            copies = _working_copies(source, size, getattr(backbone, "input_size", None))
        except (OSError, ValueError) as exc:
            failed.append({"name": name, "error": str(exc)})
            log(f"  failed: {exc}")
            continue
        if copies is None:
            skipped.append(name)
            continue
        loaded.append((name, *copies))
    embeddings = backbone.embed([gray for *_, gray in loaded]) if loaded else []
    record = out_dir / f"{shard_name}.tfrecord"
    tmp = out_dir / f".{shard_name}.tfrecord.tmp"
    tf = _tf()
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for (name, jpeg, box, _), emb in zip(loaded, embeddings, strict=True):
            writer.write(_example(name, jpeg, emb, box))
    os.replace(tmp, record)
    sidecar = {
        "split": split,
        "inputs": [[n, c] for n, _, c in entries],
        "records": [entry[0] for entry in loaded],
        "skipped_gray": skipped,
        "failed": failed,
        "sha256": sha256_file(record),
        "bytes": record.stat().st_size,
    }
    write_json_atomic(out_dir / f"{shard_name}.json", sidecar)
    return sidecar


def prepare(
    source,
    out_dir,
    backbone="efficientnet_lite0",
    size=224,
    shard_size=500,
    val_fraction=0.1,
    shard_index=0,
    num_shards=1,
    progress=True,
):
    """Turn photos into sharded TFRecords and a JSON manifest.

    Parameters
    ----------
    source : path, or list of paths / arrays / (name, path-or-array) pairs
        A folder (searched recursively for images) or explicit inputs.
    out_dir : path
        Where ``*.tfrecord`` shards, their ``*.json`` sidecars and
        ``manifest.json`` go.
    backbone : str or backbones.Backbone
        The frozen feature extractor; its logits are stored per photo.
    size : int
        Side of the stored, white-padded photo (224 in the paper).
    shard_size : int
        Photos per shard.
    val_fraction : float
        Share of photos (by a stable hash of the name) held out for validation.
    shard_index, num_shards : int
        Run as worker ``shard_index`` of ``num_shards`` independent workers;
        each writes its own shards. Afterwards call :func:`merge_manifests`
        (done automatically for ``num_shards == 1``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        The manifest (for a single worker) or this worker's partial manifest.
        Gray photos are skipped and listed under ``skipped_gray``; unreadable
        inputs are listed under ``failed`` with the reason.
    """
    from tqdm.auto import tqdm

    from .backbones import get_backbone

    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} is not in [0, {num_shards})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = dict(_items_from_source(source))
    model = get_backbone(backbone) if isinstance(backbone, str) else backbone
    plan = plan_shards(list(items), shard_size, val_fraction)
    mine = [shard for k, shard in enumerate(plan) if k % num_shards == shard_index]
    sidecars, reused = {}, 0
    bar = tqdm(total=sum(len(n) for _, _, n in mine), desc="prepare", unit="img", disable=not progress)
    for shard_name, split, names in mine:
        entries = [(n, items[n], _checksum(items[n])) for n in names]
        expected = [[n, c] for n, _, c in entries]
        if _shard_is_complete(out_dir, shard_name, expected):
            sidecars[shard_name] = _read_sidecar(out_dir / f"{shard_name}.json")
            reused += len(names)
        else:
            sidecars[shard_name] = _process_shard(out_dir, shard_name, split, entries, model, size, bar.write)
        bar.update(len(names))
    bar.close()
    meta = {
        "version": FORMAT_VERSION,
        "backbone": model.name,
        "backbone_pretrained": bool(model.pretrained),
        "backbone_input_size": model.input_size,
        "embed_dim": model.dim,
        "image_size": size,
        "image_format": f"jpeg q{JPEG_QUALITY} 4:4:4",
        "val_fraction": val_fraction,
        "shard_size": shard_size,
        "num_inputs": len(items),
        "all_shards": [name for name, _, _ in plan],
    }
    partial = {**meta, "shards": sidecars, "reused_images": reused}
    if num_shards == 1:
        return merge_manifests(out_dir, [partial])
    write_json_atomic(out_dir / f"manifest-{shard_index:03d}-of-{num_shards:03d}.json", partial)
    return partial


def merge_manifests(out_dir, partials=None):
    """Combine the workers' partial manifests into ``manifest.json``.

    Parameters
    ----------
    out_dir : path
    partials : list of dict, optional
        Default: read every ``manifest-*-of-*.json`` in ``out_dir``.

    Returns
    -------
    dict
        The manifest. Raises ``ShardError`` if a planned shard is missing.
    """
    out_dir = Path(out_dir)
    if partials is None:
        partials = [json.loads(p.read_text()) for p in sorted(out_dir.glob("manifest-*-of-*.json"))]
    if not partials:
        raise ShardError(f"{out_dir}: no partial manifests to merge")
    sidecars = {}
    for part in partials:
        sidecars.update(part["shards"])
    meta = {k: v for k, v in partials[0].items() if k not in ("shards", "reused_images")}
    missing = sorted(set(meta["all_shards"]) - set(sidecars))
    if missing:
        raise ShardError(f"{out_dir}: shards not written yet by any worker: {', '.join(missing)}")
    manifest = {**meta, "shards": [], "counts": {s: 0 for s in SPLITS}, "skipped_gray": [], "failed": []}
    for name in meta["all_shards"]:
        side = sidecars[name]
        manifest["counts"][side["split"]] += len(side["records"])
        manifest["skipped_gray"] += side["skipped_gray"]
        manifest["failed"] += side["failed"]
        manifest["shards"].append(
            {
                "file": f"{name}.tfrecord",
                "split": side["split"],
                "count": len(side["records"]),
                "sha256": side["sha256"],
                "bytes": side["bytes"],
            }
        )
    total = sum(manifest["counts"].values())
    manifest["counts"]["skipped_gray"] = len(manifest["skipped_gray"])
    manifest["counts"]["failed"] = len(manifest["failed"])
    manifest["bytes_per_image"] = sum(s["bytes"] for s in manifest["shards"]) / max(total, 1)
    manifest["reused_images"] = sum(p.get("reused_images", 0) for p in partials)
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def read_manifest(records_dir):
    """Read ``manifest.json``; a clear error if it is missing or unreadable."""
    path = Path(records_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; run `koala prepare` first")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ShardError(f"{path}: corrupt manifest ({exc})") from exc


def shard_files(records_dir, split, verify=True):
    """Paths of one split's shards, checked against the manifest's checksums.

    Raises
    ------
    ShardError
        A shard is missing, or its size or SHA-256 differs from the manifest.
    """
    records_dir = Path(records_dir)
    manifest = read_manifest(records_dir)
    files = []
    for shard in manifest["shards"]:
        if shard["split"] != split or shard["count"] == 0:
            continue
        path = records_dir / shard["file"]
        if not path.is_file():
            raise ShardError(f"{path}: shard listed in the manifest is missing")
        if verify and (path.stat().st_size != shard["bytes"] or sha256_file(path) != shard["sha256"]):
            raise ShardError(f"{path}: shard is truncated or corrupt (checksum differs from the manifest)")
        files.append(str(path))
    return files


# ----------------------------------------------------------------- load
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
