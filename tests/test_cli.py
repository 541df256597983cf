"""The `koala` command line, end to end on real photos: prepare -> train -> evaluate -> colorize."""

import shutil
import subprocess
import sys

import pytest

from koala_utils.cli import EXIT_OK, EXIT_USAGE, main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, sample_photos, sample_folder):
    root = tmp_path_factory.mktemp("cli")
    photos = root / "photos"
    photos.mkdir()
    for path in sample_photos[:8]:
        shutil.copy(path, photos / path.name)
    gray = (sample_folder / "GRAYSCALE_FILES.txt").read_text().split()[0]
    shutil.copy(sample_folder / gray, photos / gray)
    return root


def test_pipeline(workspace, capsys):
    records, run = workspace / "records", workspace / "run"
    assert main(["prepare", str(workspace / "photos"), str(records), "--val-fraction", "0.3"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "skipped 1 gray" in out and "failed 0" in out

    args = ["train", str(records), str(run), "--epochs", "1", "--batch-size", "4", "--image-size", "32",
            "--steps-per-epoch", "2", "--verbose", "0"]
    assert main(args) == EXIT_OK
    assert (run / "best.keras").is_file()

    assert main(["evaluate", str(run), str(records)]) == EXIT_OK
    table = capsys.readouterr().out
    assert "psnr" in table.lower() and "gray" in table.lower()

    photo = next((workspace / "photos").glob("*.JPEG"))
    before = photo.read_bytes()
    assert main(["colorize", str(photo), "-o", str(workspace / "colour"), "--model", str(run)]) == EXIT_OK
    assert (workspace / "colour" / f"{photo.stem}_colorized.png").is_file()
    assert photo.read_bytes() == before


def test_usage_errors(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == EXIT_USAGE
    assert "nowhere" in capsys.readouterr().err
    assert main(["colorize", str(tmp_path), "-o", str(tmp_path / "o")]) == EXIT_USAGE  # an empty folder
    with pytest.raises(SystemExit):
        main(["train"])


def test_entry_point_runs():
    run = subprocess.run([sys.executable, "-m", "koala_utils.cli", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "colorize" in run.stdout
