"""Awkward and broken photos through every entry point.

The inputs are generated from a real photo by :mod:`helpers_badinputs`. For
``images.load_image``, ``colorize.colorize``, ``data.prepare``, ``koala
colorize`` and ``koala prepare`` (in-process, plus one real subprocess):

- valid inputs are processed correctly (EXIF rotation applied, alpha over
  white, gray-as-RGB recognised: ``prepare`` skips it, colorize colorizes it,
  tiny and strip images at their own size);
- invalid inputs give one error line naming the file and the reason;
- a batch goes on past failures, ends with a summary and a non-zero exit code;
- no input file is ever modified, and no output is written over an input.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_badinputs import KINDS, constant_color_model, make_cases, sha256_tree, small_photo
from PIL import Image

from koala_utils import cli, color, colorize, data, images
from koala_utils.images import ImageLoadError

ROOT = Path(__file__).resolve().parents[1]
LOAD_ERRORS = (ImageLoadError, FileNotFoundError, IsADirectoryError)
SIZE = 64  # network input side for these tests (the real default is 224)


@pytest.fixture(scope="module")
def photo(sample_photos):
    return small_photo(sample_photos[3])


@pytest.fixture(scope="module")
def cases(tmp_path_factory, photo):
    return {case.kind: case for case in make_cases(tmp_path_factory.mktemp("bad_inputs"), photo)}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "constant.keras"
    constant_color_model(path)
    return path


@pytest.fixture(scope="module")
def model(model_path):
    from koala_utils.model import load_model

    return load_model(model_path)


def _valid(cases):
    return [c for c in cases.values() if c.valid]


def _invalid(cases):
    return [c for c in cases.values() if not c.valid]


def _check_error(exc, case):
    message = str(exc)
    assert str(case.path) in message, message
    assert case.reason in message, message
    assert "\n" not in message


def _lines_naming(text, path):
    return [line for line in text.splitlines() if str(path) in line]


# ----------------------------------------------------------------- images.load_image
@pytest.mark.parametrize("kind", KINDS)
def test_load_image(cases, kind):
    case = cases[kind]
    if not case.valid:
        with pytest.raises(LOAD_ERRORS) as info:
            images.load_image(case.path)
        _check_error(info.value, case)
        return
    rgb = images.load_image(case.path)
    assert rgb.dtype == np.uint8 and rgb.shape == (*case.shape, 3)
    assert np.abs(rgb.astype(float) - case.expected).mean() <= case.atol
    assert images.is_grayscale(rgb) == case.gray


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotation_is_not_a_no_op(cases, photo, orientation):
    """The loaded photo matches the rotated original, and clearly not the stored one."""
    rgb = images.load_image(cases[f"exif_rotated_{orientation}"].path).astype(float)
    with Image.open(cases[f"exif_rotated_{orientation}"].path) as img:
        stored = np.asarray(img.convert("RGB"), dtype=float)  # as written, before the EXIF turn
    assert stored.shape[:2] == photo.shape[:2]
    if rgb.shape == stored.shape:
        assert np.abs(rgb - stored).mean() > 20


def test_decompression_bomb_guard_with_a_lowered_limit(cases, model, lite0, monkeypatch):
    """A real photo over Pillow's (lowered) pixel limit is refused, not decoded."""
    path = cases["cmyk_jpeg"].path
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the photo has 10 240 pixels, over twice the limit
    with pytest.raises(ImageLoadError, match="too many pixels") as info:
        images.load_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImageLoadError, match="too many pixels"):
        colorize.colorize(path, model, lite0, size=SIZE)


# ----------------------------------------------------------------- colorize.colorize
@pytest.mark.parametrize("kind", KINDS)
def test_colorize_api(cases, model, lite0, kind):
    case = cases[kind]
    if not case.valid:
        with pytest.raises(LOAD_ERRORS) as info:
            colorize.colorize(case.path, model, lite0, size=SIZE)
        _check_error(info.value, case)
        return
    out = colorize.colorize(case.path, model, lite0, size=SIZE)
    assert out.dtype == np.uint8 and out.shape == (*case.shape, 3)  # full size, even 1x1 and 1x5000
    assert not images.is_grayscale(out), "the constant-colour model must colour every input, gray ones too"
    # The detail comes from the input's own lightness.
    l_in, l_out = color.lightness(images.load_image(case.path)), color.lightness(out)
    if l_in.size > 100 and l_in.std() > 1:
        assert np.corrcoef(l_in.ravel(), l_out.ravel())[0, 1] > 0.9


# ----------------------------------------------------------------- koala colorize
def _colorize_cli(capsys, *args):
    code = cli.main(["colorize", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_colorize_batch(cases, model_path, tmp_path, capsys):
    folder = cases["cmyk_jpeg"].path.parent
    before = sha256_tree(folder)
    out_dir = tmp_path / "out"
    code, out, err = _colorize_cli(
        capsys, *(c.path for c in cases.values()), "-o", out_dir, "--model", model_path, "--size", SIZE
    )
    assert code == cli.EXIT_PARTIAL
    assert "Traceback" not in out + err
    assert f"colorized {len(_valid(cases))} of {len(cases) - 1}" in out  # the (empty) folder adds no file
    assert f"{len(_invalid(cases))} failed:" in err
    for case in _invalid(cases):
        lines = _lines_naming(err, case.path)
        # A folder given as input is searched for images; this one holds none.
        reason = "no images" if case.kind == "directory" else case.reason
        assert len(lines) == 1 and reason in lines[0], (case.kind, err)
    for case in _valid(cases):
        with Image.open(colorize.output_path(case.path, out_dir)) as img:
            assert img.size == case.shape[::-1], case.kind
            assert not images.is_grayscale(np.asarray(img.convert("RGB"))), case.kind
        assert not _lines_naming(err, case.path), case.kind
    assert sha256_tree(folder) == before


def test_cli_colorize_folder_input(cases, model_path, tmp_path, capsys):
    """A folder is searched for image files; unreadable ones fail, the rest are colorized."""
    folder = cases["cmyk_jpeg"].path.parent
    before = sha256_tree(folder)
    code, out, err = _colorize_cli(capsys, folder, "-o", tmp_path / "out", "--model", model_path, "--size", SIZE)
    on_disk_images = [c for c in cases.values() if c.on_disk and c.path.suffix != ".txt"]
    bad = [c for c in on_disk_images if not c.valid]
    assert code == cli.EXIT_PARTIAL
    assert f"colorized {len(on_disk_images) - len(bad)} of {len(on_disk_images)}" in out
    assert all(len(_lines_naming(err, c.path)) == 1 for c in bad), err
    assert not _lines_naming(err + out, cases["text_file"].path)  # not an image name: not listed
    assert sha256_tree(folder) == before


def _two_photos(folder, photo, names):
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.fromarray(np.roll(photo, 10 * k, axis=1)).save(folder / name)
    return [folder / name for name in names]


@pytest.mark.parametrize("overwrite", [False, True])
def test_cli_output_never_replaces_an_input(photo, model_path, tmp_path, capsys, monkeypatch, overwrite):
    """``koala colorize x.png x_colorized.png -o .``: x.png's output would be the second input."""
    _two_photos(tmp_path, photo, ["x.png", "x_colorized.png"])
    before = sha256_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    flags = ["--overwrite"] if overwrite else []
    code, out, err = _colorize_cli(capsys, "x.png", "x_colorized.png", "-o", ".", "--model", model_path, *flags)
    assert code == cli.EXIT_PARTIAL
    assert len(_lines_naming(err, "x.png")) == 1 and "overwrite an input" in err
    after = sha256_tree(tmp_path)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"x_colorized_colorized.png"}


def test_cli_existing_output_needs_overwrite(photo, model_path, tmp_path, capsys):
    (src,) = _two_photos(tmp_path / "in", photo, ["x.jpg"])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    existing = out_dir / "x_colorized.png"
    existing.write_bytes(b"an earlier result")
    code, _, err = _colorize_cli(capsys, src, "-o", out_dir, "--model", model_path)
    assert code == cli.EXIT_PARTIAL and "--overwrite" in err and str(src) in err
    assert existing.read_bytes() == b"an earlier result"
    code, _, _ = _colorize_cli(capsys, src, "-o", out_dir, "--model", model_path, "--overwrite")
    assert code == cli.EXIT_OK
    with Image.open(existing) as img:
        assert img.size == photo.shape[1::-1]


@pytest.mark.parametrize("overwrite", [False, True])
def test_cli_two_inputs_one_output_name(photo, model, model_path, lite0, tmp_path, capsys, overwrite):
    """a/x.png and b/x.jpg both map to x_colorized.png: the second is refused, the first kept."""
    first = _two_photos(tmp_path / "a", photo, ["x.png"])[0]
    second = _two_photos(tmp_path / "b", photo[::-1], ["x.jpg"])[0]
    flags = ["--overwrite"] if overwrite else []
    code, out, err = _colorize_cli(capsys, first, second, "-o", tmp_path / "out", "--model", model_path, *flags)
    assert code == cli.EXIT_PARTIAL
    (line,) = _lines_naming(err, second)
    assert line.strip().startswith(f"{second}:") and "already taken" in line
    assert "colorized 1 of 2" in out
    with Image.open(tmp_path / "out" / "x_colorized.png") as img:
        np.testing.assert_array_equal(np.asarray(img), colorize.colorize(first, model, lite0))


def test_cli_colorize_usage_errors(photo, model_path, tmp_path, capsys):
    (src,) = _two_photos(tmp_path, photo, ["x.png"])
    not_a_folder = tmp_path / "result.png"
    not_a_folder.write_bytes(b"keep me")
    code, _, err = _colorize_cli(capsys, src, "-o", not_a_folder, "--model", model_path)
    assert code == cli.EXIT_USAGE and len(err.strip().splitlines()) == 1 and str(not_a_folder) in err
    assert not_a_folder.read_bytes() == b"keep me"
    code, _, err = _colorize_cli(capsys, src, "-o", tmp_path / "o", "--model", tmp_path / "no_model.keras")
    assert code == cli.EXIT_USAGE and "no_model.keras" in err and "Traceback" not in err
    code, _, err = _colorize_cli(capsys, src, "-o", tmp_path / "o", "--model", tmp_path)  # a folder without models
    assert code == cli.EXIT_USAGE and "last.keras" in err


def test_cli_colorize_in_a_subprocess(cases, model_path, tmp_path):
    """The real command: one good photo and one truncated; exit 1, one line for the bad one."""
    good, bad = cases["rgba_png"].path, cases["truncated_jpeg"].path
    before = sha256_tree(good.parent)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = [sys.executable, "-m", "koala_utils.cli", "colorize", str(good), str(bad), "-o", str(tmp_path / "out")]
    args += ["--model", str(model_path), "--size", str(SIZE)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == cli.EXIT_PARTIAL, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = _lines_naming(proc.stderr, bad)
    assert len(lines) == 1 and "truncated" in lines[0]
    assert "1 failed" in proc.stderr and "colorized 1 of 2" in proc.stdout
    assert colorize.output_path(good, tmp_path / "out").is_file()
    assert sha256_tree(good.parent) == before


# ----------------------------------------------------------------- data.prepare
def _record_names(records_dir):
    """Every record name in every shard file of the folder (not only the manifest's)."""
    import tensorflow as tf

    names = []
    for shard in sorted(Path(records_dir).glob("*.tfrecord")):
        for serialized in tf.data.TFRecordDataset(str(shard)):
            ex = tf.io.parse_single_example(serialized, {"name": tf.io.FixedLenFeature([], tf.string)})
            names.append(ex["name"].numpy().decode())
    return names


def test_prepare_api(cases, lite0, tmp_path):
    folder = cases["cmyk_jpeg"].path.parent
    before = sha256_tree(folder)
    out = tmp_path / "records"
    manifest = data.prepare([c.path for c in cases.values()], out, backbone=lite0, size=SIZE, progress=False)
    colour = sorted(c.path.name for c in _valid(cases) if not c.gray)
    gray = sorted(c.path.name for c in _valid(cases) if c.gray)
    assert sorted(_record_names(out)) == colour  # each exactly once
    assert sorted(manifest["skipped_gray"]) == gray
    failed = {f["name"]: f["error"] for f in manifest["failed"]}
    assert sorted(failed) == sorted(c.path.name for c in _invalid(cases))
    for case in _invalid(cases):
        assert str(case.path) in failed[case.path.name] and case.reason in failed[case.path.name], failed
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == len(colour)
    boxes = {}
    for split in data.SPLITS:
        if manifest["counts"][split]:
            arrays = data.load_arrays(out, split)
            boxes.update(zip(arrays["names"], arrays["box"].tolist(), strict=True))
    h, w = cases["exif_rotated_6"].shape
    assert h > w and boxes["exif_orientation_6.jpg"][2] > boxes["exif_orientation_6.jpg"][3]  # stored upright
    assert boxes["strip_1x5000.png"][2:] == [1, SIZE]
    assert sha256_tree(folder) == before


def test_cli_prepare_folder(cases, tmp_path, capsys):
    folder = cases["cmyk_jpeg"].path.parent
    before = sha256_tree(folder)
    code = cli.main(["prepare", str(folder), str(tmp_path / "rec"), "--size", str(SIZE), "--shard-size", "4"])
    out, err = capsys.readouterr()
    listed = [c for c in cases.values() if c.on_disk and c.path.suffix != ".txt"]
    bad = [c for c in listed if not c.valid]
    gray = [c for c in listed if c.valid and c.gray]
    assert code == cli.EXIT_PARTIAL
    assert f"skipped {len(gray)} gray; failed {len(bad)}" in out
    for case in bad:
        lines = _lines_naming(err, case.path)
        assert len(lines) == 1 and case.reason in lines[0], (case.kind, err)
    assert "Traceback" not in err
    assert sha256_tree(folder) == before


def test_cli_prepare_usage_errors(tmp_path, capsys):
    code = cli.main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "rec")])
    _, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE and len(err.strip().splitlines()) == 1 and "nowhere" in err
