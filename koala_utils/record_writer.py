"""Writing records: photos -> sharded TFRecords of (224 px photo, embedding, name).

:func:`prepare` embeds every photo once with the frozen backbone and stores the
white-padded 224 px photo as a 4:4:4 JPEG at quality 95 (about 30 KB, against
the authors' 600 KB float records). :mod:`koala_utils.data` reads them back.

Photos are grouped into shards by a stable hash of their name, so the 90/10
train/validation split and the shard contents do not depend on the order of
the inputs, the number of workers, or earlier interrupted runs. Each shard is
written to a temporary file and renamed into place, next to a small JSON
sidecar listing what it holds; a re-run keeps every complete shard. The
sidecars become ``manifest.json`` (:mod:`koala_utils.record_manifest`).
"""

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
from .record_manifest import SPLITS, merge_manifests

FORMAT_VERSION = 1
JPEG_QUALITY = 95


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
