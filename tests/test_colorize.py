"""Full-resolution colorization: size kept, the photo's own L kept, colour input made gray first."""

import keras
import numpy as np
import pytest

from koala_utils import color, images
from koala_utils.colorize import colorize, colorize_files, output_path, upsample_ab
from koala_utils.model import build_model


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model()


@pytest.mark.parametrize("shape", [(300, 451), (37, 53), (1, 1), (1, 500), (500, 3)])
def test_output_has_the_input_size(model, lite0, shape):
    gray = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = colorize(gray, model, lite0)
    assert out.shape == (*shape, 3) and out.dtype == np.uint8


def test_keeps_the_photo_lightness(lite0, historical_folder):
    # A model whose colour is a mild constant sepia (ab = 127 * tanh(bias)), so few pixels leave the gamut.
    sepia = build_model()
    kernel, _ = sepia.get_layer("decoder_ab").get_weights()
    sepia.get_layer("decoder_ab").set_weights([np.zeros_like(kernel), np.array([0.03, 0.08], np.float32)])
    photo = images.load_image(historical_folder / "photos" / "einstein_1921_schmutzer.jpg")
    out = colorize(photo, sepia, lite0)
    lab = color.rgb_to_lab(out)
    assert np.median(lab[..., 1]) == pytest.approx(127 * np.tanh(0.03), abs=1.0)
    assert np.median(lab[..., 2]) == pytest.approx(127 * np.tanh(0.08), abs=1.0)
    assert out.shape == photo.shape
    diff = np.abs(lab[..., 0] - color.rgb_to_lab(photo)[..., 0])
    # Out-of-gamut clipping may move a few pixels; nearly all keep their L.
    assert np.median(diff) < 0.5 and np.percentile(diff, 95) < 3


def test_colour_input_is_made_gray_first(model, lite0, sample_photos):
    rgb = images.load_image(sample_photos[0])
    gray = images.to_gray(rgb)
    from_colour = colorize(rgb, model, lite0).astype(int)
    from_gray = colorize(gray, model, lite0).astype(int)
    # Same chroma prediction; L differs only by the 8-bit rounding of the gray levels.
    assert np.abs(from_colour - from_gray).max() <= 3


def test_timings_cover_every_stage(model, lite0):
    _, timings = colorize(np.zeros((64, 80), np.uint8), model, lite0, return_timings=True)
    assert set(timings) == {"load", "backbone", "network", "merge"}
    assert all(t >= 0 for t in timings.values())


def test_upsample_ab_is_bilinear():
    ab = np.zeros((2, 2, 2), np.float32)
    ab[0, 0] = ab[1, 1] = 10.0
    up = upsample_ab(ab, 4, 4)
    assert up.shape == (4, 4, 2)
    assert up.min() >= 0 and up.max() <= 10 and 0 < up[1, 2, 0] < 10


def test_colorize_files_reports_and_never_overwrites(model, lite0, tmp_path, historical_folder):
    src = historical_folder / "photos" / "paper_fig7_4_junkers_aircraft.png"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    out_dir = tmp_path / "out"
    lines = []
    report = colorize_files([src, bad], out_dir, model, lite0, log=lines.append)
    assert [w[1] for w in report["written"]] == [str(output_path(src, out_dir))]
    assert len(report["failed"]) == 1 and "broken.jpg" in report["failed"][0][1]
    again = colorize_files([src], out_dir, model, lite0, log=lines.append)
    assert again["written"] == [] and "exists" in again["failed"][0][1]
