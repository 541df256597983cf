"""Security: models load with safe_mode=True only, archives cannot escape their
folder, downloads are checked, and Pillow's decompression-bomb guard stays on.
"""

import hashlib
import io
import os
import re
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image, ImageFile

from koala_utils import cli, download
from koala_utils.model import load_model

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("koala_utils", "scripts", "notebooks", "benchmarks")


def _sources():
    files = []
    for folder in SOURCE_DIRS:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".ipynb")]
    assert any(p.name == "model.py" for p in files)
    return files


# ----------------------------------------------------------------- unsafe models
def _lambda_model(path, marker):
    """A model whose Lambda layer writes ``marker`` whenever its code runs."""

    # Keras stores a lambda's bytecode (a named function only by name); the path is a constant in it.
    touch = eval(f"lambda x: (open({str(marker)!r}, 'a').write('code ran'), x)[1]")
    l_input = keras.Input((None, None, 1), name="l")
    embedding = keras.Input((1000,), name="embedding")
    x = keras.layers.Lambda(touch, name="payload")(l_input)
    ab = keras.layers.Conv2D(2, 1, name="ab")(x)
    keras.Model({"l": l_input, "embedding": embedding}, ab).save(path)
    Path(marker).unlink()  # building the model ran the function once
    return path


@pytest.fixture
def evil_model(tmp_path):
    marker = tmp_path / "marker.txt"
    return _lambda_model(tmp_path / "evil.keras", marker), marker


def test_lambda_model_is_refused_and_runs_no_code(evil_model):
    path, marker = evil_model
    with pytest.raises(ValueError, match="refused") as info:
        load_model(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # Control: the payload is real, it runs as soon as safe mode is off.
    keras.saving.load_model(path, safe_mode=False, compile=False)
    assert marker.exists()


def test_cli_colorize_refuses_lambda_model(evil_model, tmp_path, capsys):
    path, marker = evil_model
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(photo)
    code = cli.main(["colorize", str(photo), "-o", str(tmp_path / "out"), "--model", str(path)])
    _, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE
    assert "refused" in err and str(path) in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_no_unsafe_loading_anywhere():
    """Every model load in the project goes through safe mode; nothing switches it off."""
    for path in _sources():
        text = path.read_text(errors="replace")
        assert "safe_mode=False" not in text, path
        assert "enable_unsafe_deserialization" not in text, path
        for call in re.findall(r"keras\.(?:saving|models)\.load_model\([^)]*\)", text):
            assert "safe_mode=True" in call, (path, call)


# ----------------------------------------------------------------- Pillow's guard
def test_decompression_bomb_guard_stays_on():
    """No module lowers Pillow's defences: the pixel limit and the truncated-file check."""
    import importlib
    import pkgutil

    import koala_utils

    for module in pkgutil.iter_modules(koala_utils.__path__):
        importlib.import_module(f"koala_utils.{module.name}")
    assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)  # Pillow's default
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for path in _sources():
        text = path.read_text(errors="replace")
        assert not re.search(r"MAX_IMAGE_PIXELS\s*=(?!=)", text), path
        assert not re.search(r"LOAD_TRUNCATED_IMAGES\s*=\s*True", text), path


# ----------------------------------------------------------------- download
@pytest.fixture
def payload(tmp_path):
    source = tmp_path / "server" / "weights.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(3 * download.CHUNK // 2))
    return source, hashlib.sha256(source.read_bytes()).hexdigest()


def _leftovers(folder):
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".") or p.suffix == ".part"]


def test_download_with_checksum(payload, tmp_path):
    source, digest = payload
    dest = tmp_path / "dl" / "w.bin"
    seen = []
    assert download.download(source.as_uri(), dest, sha256=digest.upper(), progress=lambda n, t: seen.append(n)) == dest
    assert dest.read_bytes() == source.read_bytes()
    assert seen[-1] == source.stat().st_size and not _leftovers(dest.parent)
    # Already there with the right checksum: not fetched again.
    source.unlink()
    assert download.download(source.as_uri(), dest, sha256=digest) == dest
    # A folder as destination takes the URL's file name.
    source.write_bytes(dest.read_bytes())
    assert download.download(source.as_uri(), tmp_path / "dl") == tmp_path / "dl" / "weights.bin"


def test_download_checksum_mismatch_writes_nothing(payload, tmp_path):
    source, digest = payload
    dest = tmp_path / "dl" / "w.bin"
    with pytest.raises(download.ChecksumError, match="mismatch") as info:
        download.download(source.as_uri(), dest, sha256="0" * 64)
    assert digest in str(info.value) and source.as_uri() in str(info.value)
    assert not dest.exists() and not _leftovers(dest.parent)
    # An existing file is not replaced by a bad download.
    dest.write_bytes(b"previous version")
    with pytest.raises(download.ChecksumError):
        download.download(source.as_uri(), dest, sha256="f" * 64)
    assert dest.read_bytes() == b"previous version" and not _leftovers(dest.parent)


def test_download_failures_leave_no_partial_file(payload, tmp_path, monkeypatch):
    source, _ = payload
    dest = tmp_path / "dl" / "w.bin"
    with pytest.raises(urllib.error.URLError):
        download.download((tmp_path / "nothing.bin").as_uri(), dest)
    assert not dest.exists() and not _leftovers(dest.parent)
    with pytest.raises(ValueError, match="scheme"):
        download.download("ftp://example.org/w.bin", dest)
    with pytest.raises(ValueError, match="64 hexadecimal"):
        download.download(source.as_uri(), dest, sha256="abc")

    class Broken(io.BytesIO):  # a connection that drops after the first chunk
        headers = {"Content-Length": str(10 * download.CHUNK)}

        def read(self, size=-1):
            if self.tell():
                raise ConnectionResetError("connection reset by peer")
            return super().read(size)

    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: Broken(b"x" * download.CHUNK))
    with pytest.raises(ConnectionResetError):
        download.download("https://example.org/w.bin", dest)
    assert not dest.exists() and not _leftovers(dest.parent)


# ----------------------------------------------------------------- archives
def _tar(path, members):
    """members: (name, kind, data_or_target) with kind in file / dir / symlink / hardlink."""
    with tarfile.open(path, "w:gz") as archive:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                archive.addfile(info, io.BytesIO(value))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.linkname = value or ""
            archive.addfile(info)
    return path


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, kind, value in members:
            if kind == "symlink":
                info = zipfile.ZipInfo(name)
                info.external_attr = (0o120777 << 16) | 0
                archive.writestr(info, value)
            else:
                archive.writestr(zipfile.ZipInfo(name), value)
    return path


BENIGN = [("photos/", "dir", None), ("photos/a.txt", "file", b"alpha"), ("photos/sub/b.txt", "file", b"beta")]


def _malicious(outside):
    outside_file = str(outside / "abs.txt")
    return {
        "dotdot": [("ok.txt", "file", b"fine"), ("../escaped.txt", "file", b"evil")],
        "nested_dotdot": [("photos/../../escaped.txt", "file", b"evil")],
        "absolute": [("ok.txt", "file", b"fine"), (outside_file, "file", b"evil")],
        "symlink_out": [("link", "symlink", str(outside)), ("link/pwned.txt", "file", b"evil")],
        "symlink_relative_out": [("link", "symlink", "../outside"), ("link/pwned.txt", "file", b"evil")],
        "hardlink_out": [("passwd", "hardlink", "/etc/passwd")],
    }


@pytest.fixture(params=[True, False], ids=["tar_data_filter", "tar_own_checks"])
def tar_filter(request, monkeypatch):
    """Run each tar test with Python's filter="data" and with the fallback checks."""
    monkeypatch.setattr(download, "HAS_TAR_FILTER", request.param)
    return request.param


@pytest.mark.parametrize("name", list(_malicious(Path("/x"))))
def test_malicious_tar_is_refused(tmp_path, tar_filter, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = _tar(tmp_path / f"{name}.tar.gz", _malicious(outside)[name])
    dest = tmp_path / "dest"
    with pytest.raises(download.UnsafeArchiveError, match="refused") as info:
        download.extract_archive(archive, dest)
    assert str(archive) in str(info.value)
    assert not any(dest.rglob("*")), "nothing is written from a refused archive"
    assert not any(outside.rglob("*")) and not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("name", ["dotdot", "nested_dotdot", "absolute", "symlink_out"])
def test_malicious_zip_is_refused(tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [(n, k, v if isinstance(v, bytes) else str(v).encode()) for n, k, v in _malicious(outside)[name]]
    archive = _zip(tmp_path / f"{name}.zip", members)
    dest = tmp_path / "dest"
    with pytest.raises(download.UnsafeArchiveError, match="refused"):
        download.extract_archive(archive, dest)
    assert not any(dest.rglob("*"))
    assert not any(outside.rglob("*")) and not (tmp_path / "escaped.txt").exists()


def test_benign_archives_are_extracted(tmp_path, tar_filter):
    members = BENIGN + [("photos/exe.sh", "file", b"#!/bin/sh\n")]
    tar = _tar(tmp_path / "ok.tar.gz", members)
    zip_ = _zip(tmp_path / "ok.zip", [(n, k, v or b"") for n, k, v in members if k == "file"])
    for archive in (tar, zip_):
        dest = tmp_path / archive.name.replace(".", "_")
        names = download.extract_archive(archive, dest, max_bytes=1000)
        assert "photos/a.txt" in names
        assert (dest / "photos" / "a.txt").read_bytes() == b"alpha"
        assert (dest / "photos" / "sub" / "b.txt").read_bytes() == b"beta"
    with pytest.raises(download.UnsafeArchiveError, match="limit"):
        download.extract_archive(tar, tmp_path / "small", max_bytes=5)
    not_archive = tmp_path / "notes.txt"
    not_archive.write_text("plain text")
    with pytest.raises(ValueError, match="not a tar or zip"):
        download.extract_archive(not_archive, tmp_path / "x")


def test_internal_symlink(tmp_path, tar_filter):
    """A link that stays inside: kept by Python's data filter, refused by the stricter fallback."""
    archive = _tar(tmp_path / "link.tar.gz", BENIGN + [("photos/alias.txt", "symlink", "a.txt")])
    if tar_filter:
        download.extract_archive(archive, tmp_path / "dest")
        assert (tmp_path / "dest" / "photos" / "alias.txt").read_bytes() == b"alpha"
    else:
        with pytest.raises(download.UnsafeArchiveError, match="links are refused"):
            download.extract_archive(archive, tmp_path / "dest")
        assert not any((tmp_path / "dest").rglob("*"))
