"""Mixing the vivid model's colour into the paper model's (`--mix`): the helper, the API, the command line and
the quality benchmark's `mix` rows, on the shipped models and real photos."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from koala_utils import engine
from koala_utils.cli import EXIT_OK, EXIT_USAGE, main
from koala_utils.colorize import colorize_files, has_classification_head, mix_ab


def test_mix_ab_goes_from_the_base_to_the_vivid_colour():
    rng = np.random.default_rng(0)
    base, vivid = rng.normal(0, 20, (2, 5, 7, 2)).astype(np.float32)
    assert np.allclose(mix_ab(base, vivid, 0.0), base)
    assert np.allclose(mix_ab(base, vivid, 1.0), vivid)
    assert np.allclose(mix_ab(base, vivid, 0.25), 0.75 * base + 0.25 * vivid, atol=1e-5)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="mix amount"):
            mix_ab(base, vivid, bad)


@pytest.fixture(scope="module")
def shipped():
    paper, backbone = engine.load("keras", "paper")[:2]
    vivid = engine.load("keras", "vivid")[0]
    return paper, vivid, backbone


def _read(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_colorize_files_mixes_both_models_and_refuses_a_mix_it_cannot_make(shipped, historical_folder, tmp_path):
    paper, vivid, backbone = shipped
    assert has_classification_head(vivid) and not has_classification_head(paper)
    photo = historical_folder / "photos" / "ansel_adams_colorado_1941.png"
    made = {}
    for name, model, amount in (("paper", paper, None), ("vivid", vivid, None), ("mix0", vivid, 0.0),
                                ("mix1", vivid, 1.0), ("mix05", vivid, 0.5)):
        report = colorize_files([photo], tmp_path / name, model, backbone, mix=amount,
                                partner=paper if amount is not None else None, log=lambda line: None)
        assert not report["failed"], report
        made[name] = _read(report["written"][0][1])
    assert np.abs(made["mix0"] - made["paper"]).max() <= 1  # 0: the paper model's colour
    assert np.abs(made["mix1"] - made["vivid"]).max() <= 1  # 1: the vivid model's
    assert np.abs(made["vivid"] - made["paper"]).mean() > 1.0  # the two differ, so the mix is seen in between
    between = np.abs(made["mix05"] - made["paper"]).mean(), np.abs(made["mix05"] - made["vivid"]).mean()
    assert 0 < between[0] < np.abs(made["vivid"] - made["paper"]).mean() and between[1] > 0
    # Refused before any photo is read or any folder made: no partner, the models swapped, an amount out of range.
    for model, partner, amount, match in ((vivid, None, 0.5, "partner"), (paper, vivid, 0.5, "classification"),
                                          (vivid, paper, 2.0, "mix amount")):
        with pytest.raises(ValueError, match=match):
            colorize_files([photo], tmp_path / "refused", model, backbone, mix=amount, partner=partner)
    assert not (tmp_path / "refused").exists()


def test_koala_colorize_mix_on_both_engines(historical_folder, tmp_path, capsys):
    photo = historical_folder / "photos" / "ansel_adams_colorado_1941.png"
    outputs = {}
    for eng in ("keras", "onnx"):
        out = tmp_path / eng
        assert main(["colorize", str(photo), "-o", str(out), "--model", "vivid", "--mix", "0.5",
                     "--engine", eng]) == EXIT_OK
        outputs[eng] = _read(out / f"{photo.stem}_colorized.png")
        err = capsys.readouterr().err
        assert "vivid" in err and "paper" in err  # both models are named
    expected = engine.colorize(photo, model="vivid", engine="keras", mix=0.5).astype(np.int16)
    assert np.abs(outputs["keras"] - expected).max() <= 1
    assert np.abs(outputs["onnx"] - outputs["keras"]).mean() < 1.0  # float16 ONNX files: close, not equal
    for args, word in ((["--model", "vivid", "--mix", "1.5"], "--mix"), (["--model", "paper", "--mix", "0.5"],
                                                                       "regression")):
        assert main(["colorize", str(photo), "-o", str(tmp_path / "bad"), *args]) == EXIT_USAGE
        assert word in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_quality_benchmark_mix_rows():
    """benchmarks/quality.py --mixes: rows `T=... mix a` decode the vivid model at T and mix in the paper ab."""
    spec = importlib.util.spec_from_file_location(
        "quality_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    settings = quality.settings_of("vivid", [0.2], [], [], mixes=[0.5, 1.0], mix_temperatures=[0.38])
    assert settings[1:] == [("T=0.38 mix 0.5", "mix", (0.5, 0.38)), ("T=0.38 mix 1", "mix", (1.0, 0.38))]

    class Decoder:  # what _decode needs of a Predictor: the vivid decoding at T
        def decode(self, raw, h, w, temperature, region=None):
            return raw[:, :h, :w] * temperature

    raw = np.ones((1, 6, 6, 2), np.float32)
    partner_ab = np.full((1, 6, 6, 2), -0.5, np.float32)
    mixed = quality._decode(Decoder(), raw, 4, 4, "mix", (0.5, 0.38), partner_ab=partner_ab)
    assert mixed.shape == (1, 4, 4, 2) and np.allclose(mixed, -0.5 + 0.5 * (0.38 + 0.5))
