"""The training photos: public repositories pinned by commit, fetched, filtered and listed in a manifest.

:data:`SOURCES` lists the repositories of ``../shared/data/TRAINING_SOURCES.md`` that the shipped models train on.
:func:`fetch` clones them at the pinned commit (blobless and sparse, so only the listed folders download);
:func:`select` reads every image blob from the local git objects, drops gray photos, exact and near duplicates and
anything that looks like an ImageNet-val photo, caps any one subject, and returns the manifest rows;
:func:`write_photos` writes the chosen photos to a folder (``<source>/<path>``); :func:`verify` checks a folder
against a manifest. The same manifest rebuilds the same folder, byte for byte, on any machine.

Git is driven through its command line (``git cat-file --batch``): no Python git library reads partial clones.
"""

import csv
import hashlib
import io
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import images

MANIFEST_FIELDS = ("source", "commit", "path", "sha256", "licence")  # source: a key of SOURCES; commit abbreviated
MANIFEST_URL = "https://raw.githubusercontent.com/koalarization/koalarization/main/data/training_manifest.csv"
# SHA-256 of data/training_manifest.csv (a test keeps the two equal)
MANIFEST_SHA256 = "54ad1d143a5b7e4be1600cdbb2a2edb732f9019df83e5b6a8a86ad99b5fb85f9"
NEAR_DUPLICATE_BITS = 4  # perceptual hashes this close (of 64 bits) are the same photo resized or re-encoded


@dataclass(frozen=True)
class Source:
    """One pinned repository: where the photos are and what they show."""

    key: str
    repo: str
    commit: str
    paths: tuple
    subject: str
    licence: str
    megabytes: int
    licence_code: str = "research"

    @property
    def short_commit(self):
        return self.commit[:12]

    @property
    def url(self):
        return f"https://github.com/{self.repo}.git"


SOURCES = (
    Source("scenes", "zhabiki/paysage-classification", "fec0a0d49774c7ed44a18c638d56e2be470ab1e9",
           ("train-scene classification/train",), "scenes", "Intel scene classification challenge: research use", 427),
    Source("imagenette", "thunderInfy/imagenette", "b850f030ff0701c36a4adc8b928ea9483a46915b",
           ("train", "val"), "imagenette", "ImageNet terms: non-commercial research and education", 161,
           "imagenet-terms"),
    Source("clothing", "alexeygrigorev/clothing-dataset", "7ed86a9cc56763b6acb35e41cb35184e43a5d218",
           ("images",), "clothing and people", "CC0", 161, "CC0"),
    Source("flowers", "martinwestin/flower_classification", "c939679a7cb4cb6777358f82dc70d013ff4c6d71",
           ("flowers",), "flowers", "Kaggle Flowers Recognition (Flickr): research use", 18),
    Source("catsdogs", "chanakya2734/Image-classification-using-CNN", "bf746c6e53f1edacd97b383de350f7a495cef0e1",
           ("dataset/training_set", "dataset/test_set", "dataset/breed_dataset"), "cats and dogs",
           "Kaggle Dogs vs. Cats / ImageNet terms: research use", 309),
)
# Left out: 4GeeksAcademy/Deep-Learning-CarlosFS, 37,500 cats and dogs squashed to 200x200 (aspect not kept),
# 4,000 of them the same photos as the full-resolution "catsdogs" source.


def _git(git_dir, *args, **kwargs):
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, **kwargs)


def git_dir_of(folder):
    """The git directory of a clone (``folder/.git``) or of a bare repository (``folder``)."""
    folder = Path(folder)
    return folder / ".git" if (folder / ".git").exists() else folder


def fetch(dest, sources=SOURCES, url_of=None, log=print):
    """Clone each source at its pinned commit into ``dest/<key>`` (needs network, or ``file://`` URLs).

    Blobless (``--filter=blob:none``) and sparse: only the listed folders' files download. A source already
    cloned at the commit is kept. Prints the expected size and a time estimate first; git prints its progress.

    Parameters
    ----------
    dest : path
    sources : sequence of Source
    url_of : callable, optional
        ``Source -> URL``; default GitHub over HTTPS. Tests pass ``file://`` URLs of local repositories.

    Returns
    -------
    dict
        ``key -> git directory``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    total = sum(s.megabytes for s in sources)
    log(f"fetching {len(sources)} repositories, about {total} MB: ~{total / 10 / 60:.0f}-{total / 2 / 60:.0f} min "
        "at 2-10 MB/s")
    found = {}
    for source in sources:
        folder = dest / source.key
        url = url_of(source) if url_of else source.url
        if not (folder / ".git").exists():
            start = time.time()
            subprocess.run(["git", "clone", "--filter=blob:none", "--no-checkout", "--sparse", url, str(folder)],
                           check=True)
            subprocess.run(["git", "-C", str(folder), "sparse-checkout", "set", "--no-cone", *source.paths],
                           check=True)
            subprocess.run(["git", "-C", str(folder), "checkout", "--quiet", source.commit], check=True)
            log(f"{source.key}: {time.time() - start:.0f} s")
        found[source.key] = git_dir_of(folder)
    return found


def manifest_file(repo_root=None):
    """The training manifest: ``data/training_manifest.csv`` of the repository when at hand, else downloaded
    from GitHub (for a pip install, e.g. on Colab) and checked against :data:`MANIFEST_SHA256`."""
    if repo_root is not None and (Path(repo_root) / "data" / "training_manifest.csv").is_file():
        return Path(repo_root) / "data" / "training_manifest.csv"
    import keras

    return Path(keras.utils.get_file("koala_training_manifest.csv", MANIFEST_URL, file_hash=MANIFEST_SHA256))


def list_blobs(git_dir, source):
    """``(path, blob sha)`` of every JPEG/PNG under the source's paths at its commit, sorted by path."""
    out = _git(git_dir, "ls-tree", "-r", source.commit, "--", *source.paths, text=True).stdout
    rows = []
    for line in out.splitlines():
        meta, path = line.split("\t", 1)
        _, kind, sha = meta.split()
        if kind == "blob" and path.lower().endswith((".jpg", ".jpeg", ".png")):
            rows.append((path, sha))
    return sorted(rows)


def read_blobs(git_dir, shas):
    """Yield the bytes of each blob in order (``None`` for one the repository lacks)."""
    proc = subprocess.Popen(["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        for sha in shas:
            proc.stdin.write(sha.encode() + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline().split()
            if len(header) < 3 or header[1] == b"missing":
                yield None
                continue
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)
            yield data
    finally:
        proc.stdin.close()
        proc.wait()


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
