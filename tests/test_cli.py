"""The `koala` command line, end to end on real photos: prepare -> train -> evaluate -> colorize."""

import shutil
import subprocess
import sys

import numpy as np
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
    from koala_utils.backbone_record import recorded
    from koala_utils.model import load_model

    assert recorded(load_model(run / "best.keras")) == ("efficientnet_lite0", 1000)  # the model says its backbone

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


def test_colorize_with_the_vivid_model_a_temperature_and_a_cast_guard(workspace, capsys):
    from PIL import Image

    from koala_utils import engine

    photo = next((workspace / "photos").glob("*.JPEG"))
    made = {}
    for t, guard in (("1.0", None), ("0.2", "1"), ("0.2", "0")):
        out = workspace / f"vivid_{t}_{guard}"
        flags = [] if guard is None else ["--cast-guard", guard]
        assert main(["colorize", str(photo), "-o", str(out), "--model", "vivid", "--temperature", t,
                     "--engine", "keras", *flags]) == EXIT_OK
        made[t, guard] = np.asarray(Image.open(out / f"{photo.stem}_colorized.png").convert("RGB")).astype(np.int16)
        err = capsys.readouterr().err
        assert "shipped 'vivid'" in err and len(err.strip().splitlines()) <= 2  # a line about the model, not a card
    # The flags reach the decoding: each output is the API's with those knobs, and they differ.
    # (Which one is more colourful depends on the photo: MODEL_CARD.md has the averages.)
    for (t, guard), image in made.items():
        expected = engine.colorize(photo, model="vivid", temperature=float(t), engine="keras",
                                   cast_guard=None if guard is None else float(guard)).astype(np.int16)
        assert np.abs(image - expected).max() <= 1, (t, guard)
    assert np.abs(made["0.2", "0"] - made["1.0", None]).mean() > 1.0
    assert np.abs(made["0.2", "1"] - made["0.2", "0"]).mean() > 0.5
    for flag, value in (("--temperature", "0"), ("--cast-guard", "1.5")):
        assert main(["colorize", str(photo), "-o", str(workspace / "bad"), "--model", "vivid", flag, value]) \
            == EXIT_USAGE
        assert flag in capsys.readouterr().err
    assert not (workspace / "bad").exists()


def test_train_with_the_classification_loss(workspace):
    records, run = workspace / "records_cls", workspace / "run_cls"
    assert main(["prepare", str(workspace / "photos"), str(records), "--val-fraction", "0.3"]) == EXIT_OK
    args = ["train", str(records), str(run), "--epochs", "1", "--batch-size", "4", "--image-size", "32",
            "--steps-per-epoch", "2", "--verbose", "0", "--loss", "classification"]
    assert main(args) == EXIT_OK
    from koala_utils.classification import is_classification
    from koala_utils.model import load_model

    assert is_classification(load_model(run / "best.keras"))


def _subcommands(parser):
    from argparse import _SubParsersAction

    action = next(a for a in parser._actions if isinstance(a, _SubParsersAction))
    return action.choices


def test_every_option_has_help_and_every_command_an_example():
    from koala_utils.cli import build_parser

    for name, sub in _subcommands(build_parser()).items():
        assert "example" in sub.format_help().lower(), f"koala {name} --help shows no example"
        for action in sub._actions:
            assert action.help, f"koala {name}: {'/'.join(action.option_strings) or action.dest} has no help text"
        # The default is shown for options that have one.
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                line = " ".join(sub.format_help().split())
                assert f"default: {action.default}" in line or "default" in action.help, (name, action.dest)


def test_resume_with_other_settings_stops_and_names_them(small_records, tmp_path, capsys):
    records, _ = small_records
    run = tmp_path / "run"
    base = ["train", str(records), str(run), "--batch-size", "4", "--image-size", "32", "--steps-per-epoch", "1",
            "--verbose", "0"]
    assert main([*base, "--epochs", "1"]) == EXIT_OK
    first = (run / "config.json").read_text()
    copy = shutil.copytree(records, tmp_path / "records_copy")
    changes = {"learning_rate": ["--learning-rate", "1e-4"], "records_dir": [], "loss": ["--loss", "classification"]}
    for setting, extra in changes.items():
        argv = [*base, "--epochs", "2", *extra]
        if setting == "records_dir":
            argv[1] = str(copy)
        capsys.readouterr()
        assert main(argv) == EXIT_USAGE, setting
        err = capsys.readouterr().err
        assert f"{setting}: recorded" in err and "--force" in err, err
        assert (run / "config.json").read_text() == first  # the record is untouched


# ----------------------------------------------------------------- the backbone travels with the model
def _saved_model(folder, backbone=None, config_backbone=None):
    """A freshly built network saved as ``folder/best.keras`` recording ``backbone`` (None: no record), with a
    run folder's config.json naming ``config_backbone`` beside it when given."""
    import json

    from koala_utils.model import build_model

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "best.keras"
    build_model(backbone=backbone).save(path)
    if config_backbone:
        (folder / "config.json").write_text(json.dumps({"backbone": config_backbone, "embed_dim": 1000}))
    return path


def test_a_model_that_records_no_backbone_is_refused(small_records, sample_photos, tmp_path, capsys):
    records, _ = small_records
    path = _saved_model(tmp_path / "bare", backbone=None)
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["colorize", str(sample_photos[0]), "-o", str(out), "--model", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(path) in err and "backbone" in err and "refusing to guess" in err and "Traceback" not in err
    assert not out.exists()  # nothing colorized with a guessed backbone
    assert main(["evaluate", str(path.parent), str(records), "--limit", "2"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(path) in err and "refusing to guess" in err
    assert main(["export", str(path), str(tmp_path / "bare.onnx")]) == EXIT_USAGE
    assert not (tmp_path / "bare.onnx").exists()


def test_records_of_another_backbone_are_refused(small_records, tmp_path, capsys):
    records, _ = small_records
    path = _saved_model(tmp_path / "irv2", backbone="inception_resnet_v2")
    capsys.readouterr()
    assert main(["evaluate", str(path), str(records), "--limit", "2"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(path) in err and str(records) in err, err
    assert "inception_resnet_v2" in err and "efficientnet_lite0" in err, err


def test_a_run_folder_whose_config_disagrees_with_its_model_is_refused(sample_photos, tmp_path, capsys):
    path = _saved_model(tmp_path / "run", backbone="efficientnet_lite0", config_backbone="inception_resnet_v2")
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["colorize", str(sample_photos[0]), "-o", str(out), "--model", str(path.parent)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(path.parent / "config.json") in err and "inception_resnet_v2" in err and "efficientnet_lite0" in err
    assert not out.exists()


def test_an_older_model_takes_its_backbone_from_its_run_folder(small_records, tmp_path, capsys):
    # A run folder trained before models recorded their backbone: config.json says which one.
    records, _ = small_records
    path = _saved_model(tmp_path / "old_run", backbone=None, config_backbone="efficientnet_lite0")
    capsys.readouterr()
    assert main(["evaluate", str(path.parent), str(records), "--limit", "2"]) == EXIT_OK
    err = capsys.readouterr().err
    assert f"recorded in {path.parent / 'config.json'}" in err
