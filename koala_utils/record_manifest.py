"""A records folder's ``manifest.json``: merging the workers' parts, reading it, checking shards against it.

:func:`koala_utils.record_writer.prepare` writes each shard with a JSON sidecar; :func:`merge_manifests` combines
the sidecars (of one worker, or of several independent workers) into ``manifest.json``, which lists every shard
with its split, count, size and SHA-256. :func:`read_manifest` and :func:`shard_files` are how the readers
(:mod:`koala_utils.data`) find the shards, refusing any that is missing or corrupt.
"""

import json
from pathlib import Path

from ._io import sha256_file, write_json_atomic

MANIFEST = "manifest.json"
SPLITS = ("train", "val")


class ShardError(RuntimeError):
    """A record shard is missing, truncated or corrupt. The message names it."""



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
