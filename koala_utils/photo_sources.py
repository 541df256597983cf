"""The training photos: public repositories pinned by commit, fetched, filtered and listed in a manifest.

:data:`SOURCES` lists the repositories of ``../shared/data/TRAINING_SOURCES.md`` that the shipped models train on.
:func:`fetch` clones them at the pinned commit (blobless and sparse, so only the listed folders download);
:func:`select` reads every image blob from the local git objects, drops gray photos, exact and near duplicates and
anything that looks like an ImageNet-val photo, caps any one subject, and returns the manifest rows;
:func:`write_photos` writes the chosen photos to a folder (``<source>/<path>``); :func:`verify` checks a folder
against a manifest. The same manifest rebuilds the same folder, byte for byte, on any machine.

The repositories and the git plumbing are :mod:`koala_utils.photo_repos` (re-exported here).
"""

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from . import images
from .photo_repos import SOURCES, Source, fetch, git_dir_of, list_blobs, read_blobs

__all__ = [
    "SOURCES", "Source", "fetch", "git_dir_of", "list_blobs", "read_blobs", "manifest_file", "perceptual_hash",
    "near", "reference_hashes", "cap_subjects", "select", "write_manifest", "read_manifest", "write_photos",
    "verify", "composition", "MANIFEST_FIELDS", "MANIFEST_URL", "MANIFEST_SHA256", "NEAR_DUPLICATE_BITS",
]

MANIFEST_FIELDS = ("source", "commit", "path", "sha256", "licence")  # source: a key of SOURCES; commit abbreviated
MANIFEST_URL = "https://raw.githubusercontent.com/koalarization/koalarization/main/data/training_manifest.csv"
# SHA-256 of data/training_manifest.csv (a test keeps the two equal)
MANIFEST_SHA256 = "54ad1d143a5b7e4be1600cdbb2a2edb732f9019df83e5b6a8a86ad99b5fb85f9"
NEAR_DUPLICATE_BITS = 4  # perceptual hashes this close (of 64 bits) are the same photo resized or re-encoded


def manifest_file(repo_root=None):
    """The training manifest: ``data/training_manifest.csv`` of the repository when at hand, else downloaded
    from GitHub (for a pip install, e.g. on Colab) and checked against :data:`MANIFEST_SHA256`."""
    if repo_root is not None and (Path(repo_root) / "data" / "training_manifest.csv").is_file():
        return Path(repo_root) / "data" / "training_manifest.csv"
    import keras

    return Path(keras.utils.get_file("koala_training_manifest.csv", MANIFEST_URL, file_hash=MANIFEST_SHA256))


def perceptual_hash(rgb):
    """64-bit DCT hash (imagehash.phash) of a photo, as an unsigned integer."""
    import imagehash

    bits = imagehash.phash(Image.fromarray(rgb)).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _popcount(x):
    """Number of set bits of each uint64."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def near(hashes, reference, bits=NEAR_DUPLICATE_BITS):
    """Boolean per hash: within ``bits`` Hamming distance of any reference hash."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    reference = np.asarray(reference, dtype=np.uint64)
    hit = np.zeros(len(hashes), dtype=bool)
    for ref in reference:
        hit |= _popcount(hashes ^ ref) <= bits
    return hit


def reference_hashes(folder):
    """Perceptual hashes of the photos of a folder (the validation photos to keep out of training)."""
    return np.array([perceptual_hash(images.load_image(p)) for p in images.list_images(folder)], dtype=np.uint64)


def _candidates(git_dir, source, log):
    """Rows for one source's photos that decode, are in colour, and are not ImageNet-val by name."""
    blobs = [(p, s) for p, s in list_blobs(git_dir, source) if not Path(p).name.startswith("ILSVRC2012_val_")]
    rows, gray, failed = [], 0, 0
    for (path, _), data in zip(blobs, read_blobs(git_dir, [s for _, s in blobs]), strict=True):
        try:
            rgb = images.load_image(Image.open(io.BytesIO(data)))
        except (OSError, ValueError, TypeError):  # TypeError: a blob the snapshot lacks (None)
            failed += 1
            continue
        if images.is_grayscale(rgb):
            gray += 1
            continue
        rows.append({**_row(source, path, hashlib.sha256(data).hexdigest()), "phash": perceptual_hash(rgb)})
    log(f"{source.key}: {len(blobs)} photos, {gray} gray, {failed} unreadable")
    return rows


def _row(source, path, sha256):
    return {"name": f"{source.key}/{path}", "source": source.key, "commit": source.short_commit, "path": path,
            "sha256": sha256, "subject": source.subject, "licence": source.licence_code}


def _drop_duplicates(rows, bits=NEAR_DUPLICATE_BITS):
    """Keep the first of each group of identical bytes or near-identical perceptual hashes (rows in name order)."""
    seen_sha, kept, hashes = set(), [], np.zeros(len(rows), dtype=np.uint64)
    for row in rows:
        if row["sha256"] in seen_sha:
            continue
        if kept and (_popcount(hashes[: len(kept)] ^ np.uint64(row["phash"])) <= bits).any():
            continue
        seen_sha.add(row["sha256"])
        hashes[len(kept)] = row["phash"]
        kept.append(row)
    return kept


def cap_subjects(rows, max_share=0.4):
    """Keep at most ``max_share`` of the set from any one subject (dropping that subject's last rows by name)."""
    rows = sorted(rows, key=lambda r: r["name"])
    while True:
        counts = {}
        for r in rows:
            counts[r["subject"]] = counts.get(r["subject"], 0) + 1
        subject, count = max(counts.items(), key=lambda kv: kv[1])
        if count <= max_share * len(rows) + 1e-9:
            return rows
        others = len(rows) - count
        allowed = int(max_share * others / (1 - max_share))
        keep = [r for r in rows if r["subject"] == subject][:allowed]
        rows = sorted([r for r in rows if r["subject"] != subject] + keep, key=lambda r: r["name"])


def select(git_dirs, exclude_hashes=(), sources=SOURCES, max_share=0.4, log=print):
    """Choose the training photos: colour, not ImageNet-val, no duplicates, no subject over ``max_share``.

    Parameters
    ----------
    git_dirs : dict
        ``source key -> git directory`` (from :func:`fetch`, or bare snapshots).
    exclude_hashes : array of uint64
        Perceptual hashes of validation photos; training photos near any of them are dropped.

    Returns
    -------
    list of dict
        Manifest rows sorted by name (see :data:`MANIFEST_FIELDS`), deterministic for given repositories.
    """
    rows = []
    for source in sources:
        rows += _candidates(git_dirs[source.key], source, log)
    rows.sort(key=lambda r: r["name"])
    if len(exclude_hashes):
        hit = near([r["phash"] for r in rows], exclude_hashes)
        log(f"dropped {int(hit.sum())} photos that look like validation photos")
        rows = [r for r, h in zip(rows, hit, strict=True) if not h]
    before = len(rows)
    rows = _drop_duplicates(rows)
    log(f"dropped {before - len(rows)} duplicates")
    return cap_subjects(rows, max_share)


def write_manifest(rows, path):
    """Write the rows as CSV (a header line, then one row per photo), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, MANIFEST_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_manifest(path, sources=SOURCES):
    """Rows of a manifest CSV written by :func:`write_manifest` (with ``name`` and ``subject`` filled in).

    Raises
    ------
    ValueError
        The file is not a training manifest, or names a source or commit that ``sources`` does not pin.
    """
    by_key = {s.key: s for s in sources}
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and set(MANIFEST_FIELDS) - set(rows[0]):
        raise ValueError(f"{path}: not a training manifest (columns {sorted(rows[0])})")
    out = []
    for i, row in enumerate(rows, start=2):
        source = by_key.get(row["source"])
        if source is None or not source.commit.startswith(row["commit"]):
            raise ValueError(f"{path}, line {i}: source {row['source']!r} at commit {row['commit']!r} is not pinned")
        out.append(_row(source, row["path"], row["sha256"]))
    return out


def write_photos(rows, git_dirs, out_dir, limit=None, sources=SOURCES, progress=True):
    """Write the manifest's photos to ``out_dir/<name>``, checking every SHA-256.

    Parameters
    ----------
    rows : list of dict
        Manifest rows.
    git_dirs : dict
        ``source key -> git directory``.
    limit : int, optional
        Take only this many photos: every k-th row, so that the mix of subjects is kept.

    Returns
    -------
    int
        Photos written (existing files with the right checksum are kept).

    Raises
    ------
    ValueError
        A blob is missing or its SHA-256 differs from the manifest (the message names it).
    """
    from tqdm.auto import tqdm

    if limit and limit < len(rows):
        step = len(rows) / limit
        rows = [rows[int(i * step)] for i in range(limit)]
    out_dir = Path(out_dir)
    written = 0
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    bar = tqdm(total=len(rows), desc="photos", unit="img", disable=not progress)
    for key, chosen in by_source.items():
        source = next(s for s in sources if s.key == key)
        shas = dict(list_blobs(git_dirs[key], source))
        todo = [r for r in chosen if not _has_file(out_dir / r["name"], r["sha256"])]
        bar.update(len(chosen) - len(todo))
        for row, data in zip(todo, read_blobs(git_dirs[key], [shas.get(r["path"], "0" * 40) for r in todo]),
                             strict=True):
            if data is None or hashlib.sha256(data).hexdigest() != row["sha256"]:
                raise ValueError(f"{row['name']}: missing from {git_dirs[key]} or its SHA-256 differs from the "
                                 "manifest")
            target = out_dir / row["name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
            written += 1
            bar.update(1)
    bar.close()
    return written


def _has_file(path, sha256):
    if not path.is_file():
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def verify(rows, out_dir):
    """Names of the manifest's photos that are missing from ``out_dir`` or differ from their SHA-256."""
    return [r["name"] for r in rows if not _has_file(Path(out_dir) / r["name"], r["sha256"])]


def composition(rows):
    """Photos per subject: ``{subject: count}``, largest first."""
    counts = {}
    for r in rows:
        counts[r["subject"]] = counts.get(r["subject"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
