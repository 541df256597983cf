"""The public repositories the training photos come from, pinned by commit, and reading photos out of git.

:data:`SOURCES` lists the repositories of ``../shared/data/TRAINING_SOURCES.md`` that the shipped models train on.
:func:`fetch` clones them at the pinned commit (blobless and sparse, so only the listed folders download);
:func:`list_blobs` and :func:`read_blobs` read the photos straight from the local git objects. Git is driven through
its command line (``git cat-file --batch``): no Python git library reads partial clones. What is done with the photos
is :mod:`koala_utils.photo_sources`.
"""

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


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
