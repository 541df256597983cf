"""Full-resolution colorization: size kept, the photo's own L kept, colour input made gray first."""

import keras
import numpy as np
import pytest

from koala_utils import color, images
from koala_utils.colorize import colorize, colorize_files, output_path, upsample_ab
from koala_utils.model import FusionLayer, build_model

# The stand-in network below predicts scaled ab = (A, B) * scaled L, pixel by pixel.
A, B = 0.3, -0.2


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


def test_a_backbone_the_model_was_not_trained_with_is_refused(lite0, tmp_path, historical_folder):
    from koala_utils.backbone_record import BackboneMismatchError

    irv2_model = build_model(backbone="inception_resnet_v2")
    src = historical_folder / "photos" / "paper_fig7_4_junkers_aircraft.png"
    with pytest.raises(BackboneMismatchError, match="inception_resnet_v2.*efficientnet_lite0"):
        colorize(src, irv2_model, lite0)
    with pytest.raises(BackboneMismatchError, match="1001-d"):
        colorize(src, build_model(embed_dim=1001), lite0)  # no name recorded: the width is still checked
    with pytest.raises(BackboneMismatchError):  # one error up front, not one failure per file
        colorize_files([src, src], tmp_path / "out", irv2_model, lite0)
    assert not (tmp_path / "out").exists()


def _colour_from_lightness(embed_dim=1000):
    """A network whose ab at each pixel is a fixed multiple of the (padded) input's scaled L there."""
    l_input = keras.Input((None, None, 1), name="l")
    embedding = keras.Input((embed_dim,), name="embedding")
    conv = keras.layers.Conv2D(2, 1, name="ab_from_l")
    out = conv(FusionLayer()([l_input, embedding]))
    kernel = np.zeros((1, 1, 1 + embed_dim, 2), np.float32)
    kernel[0, 0, 0] = [A, B]  # only the L channel counts; the embedding's weights are zero
    conv.set_weights([kernel, np.zeros(2, np.float32)])
    return keras.Model({"l": l_input, "embedding": embedding}, out)


class _ZeroBackbone:
    """Lite0's name and sizes, a zero embedding (the stand-in network ignores it)."""

    name, embed_dim, input_size = "efficientnet_lite0", 1000, 224

    def embed(self, grays):
        return np.zeros((len(grays), self.embed_dim), np.float32)


def _blocks(shape, seed=0):
    """A gray photo of 7x7 random mid-gray blocks (L about 29-77, where the stand-in's colours stay in gamut)."""
    levels = np.random.default_rng(seed).integers(70, 190, (7, 7)).astype(np.uint8)
    rows = np.minimum(np.arange(shape[0]) * 7 // shape[0], 6)
    cols = np.minimum(np.arange(shape[1]) * 7 // shape[1], 6)
    return levels[rows[:, None], cols[None, :]]


@pytest.mark.parametrize("shape", [(301, 200), (200, 301), (37, 53), (97, 13), (13, 97)])
def test_colour_lands_where_the_network_put_it(shape):
    # Portrait, landscape and odd sizes: the ab predicted on the white-padded square must be cropped
    # back from the photo's own box, then stretched over the full-resolution photo.
    gray = _blocks(shape)
    out = colorize(gray, _colour_from_lightness(), _ZeroBackbone())
    assert out.shape == (*shape, 3)
    lab = color.rgb_to_lab(out)
    l_scaled = color.scale_l(color.rgb_to_lab(images.gray_to_rgb(gray))[..., 0])
    for channel, factor in ((1, A), (2, B)):
        expected = 127 * factor * l_scaled
        error = np.abs(lab[..., channel] - expected)
        # Right: about 1 unit on average (block edges blur in the 224 px round trip). Cropping the wrong
        # box (e.g. [:h, :w] of the padded square) is off by 15-35 units.
        assert error.mean() < 0.25 * np.abs(expected).mean(), (channel, error.mean())
