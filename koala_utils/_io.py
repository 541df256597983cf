"""Small file helpers shared by the package: checksums, atomic writes, lazy TensorFlow.

One copy of each; the modules that write files or hash them import from here.
Nothing here needs a deep-learning framework at import time.
"""

import contextlib
import hashlib
import json
import os
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path, chunk=CHUNK):
    """SHA-256 of a file, read in chunks, as lowercase hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    A kill or an exception mid-write leaves whatever ``path`` held before,
    whole; the temporary file is removed on an exception.

    Parameters
    ----------
    path : path
        The final file. Its folder must exist.
    suffix : str, optional
        End of the temporary name (default: ``path``'s own suffixes, so that
        writers that pick a format by name, such as Keras, still do).
    """
    path = Path(path)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix and path.name.endswith(suffix) else path.name
    tmp = path.with_name(f".{stem}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_text_atomic(path, text):
    """Write ``text`` (str, UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json_atomic(path, obj, indent=1):
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent))


def tf():
    """The ``tensorflow`` module, imported on first use (importing it costs seconds)."""
    import tensorflow

    return tensorflow
