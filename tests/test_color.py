"""Colour conversion: the TF pipeline agrees with scikit-image, round trips are exact to 8 bits."""

import numpy as np
import pytest
import skimage.data
from skimage import color as skcolor

from koala_utils import color
from koala_utils.images import load_image


@pytest.fixture(scope="module")
def photos(sample_photos):
    real = [load_image(p) for p in sample_photos[:6]]
    return real + [skimage.data.astronaut(), skimage.data.coffee()]


def test_tf_lab_matches_scikit_image_on_real_photos(photos):
    for rgb in photos:
        reference = color.rgb_to_lab(rgb)
        ours = color.rgb_to_lab_tf(rgb).numpy()
        assert np.abs(ours - reference).max() < 0.5


def test_round_trip_within_one_level(photos):
    for rgb in photos:
        back = color.to_uint8(color.lab_to_rgb(color.rgb_to_lab(rgb)))
        assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 1


def test_every_8bit_colour_round_trips_through_tf():
    levels = np.arange(0, 256, 5, dtype=np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    back = color.to_uint8(color.lab_to_rgb(color.rgb_to_lab_tf(cube).numpy()))
    assert np.abs(back.astype(int) - cube.astype(int)).max() <= 1


def test_authors_scaling_of_known_pixels():
    white = color.rgb_to_lab(np.full((1, 1, 3), 255, np.uint8))[0, 0]
    black = color.rgb_to_lab(np.zeros((1, 1, 3), np.uint8))[0, 0]
    red = color.rgb_to_lab(np.array([[[255, 0, 0]]], np.uint8))[0, 0]
    assert color.scale_l(white[0]) == pytest.approx(1.0, abs=1e-6)
    assert color.scale_l(black[0]) == pytest.approx(-1.0, abs=1e-6)
    # sRGB red is L=53.24, a=80.09, b=67.20 (D65).
    assert color.scale_l(red[0]) == pytest.approx(2 * 53.24 / 100 - 1, abs=1e-3)
    assert color.scale_ab(red[1:]) == pytest.approx(np.array([80.09, 67.20]) / 127, abs=1e-3)


def test_scaling_inverses():
    values = np.linspace(-1, 1, 11)
    assert np.allclose(color.scale_l(color.unscale_l(values)), values)
    assert np.allclose(color.scale_ab(color.unscale_ab(values)), values)


def test_fast_paths_match_reference(photos):
    for rgb in photos[:3]:
        lab = skcolor.rgb2lab(rgb)
        assert np.abs(color.lightness(rgb) - lab[..., 0]).max() < 1e-3
        merged = color.lab_to_rgb_fast(lab[..., 0], lab[..., 1:])
        assert np.abs(merged.astype(int) - rgb.astype(int)).max() <= 1


def test_lab_scaled_to_rgb_restores_photo(photos):
    rgb = photos[1]
    lab = color.rgb_to_lab(rgb)
    back = color.lab_scaled_to_rgb(color.scale_l(lab[..., 0]), color.scale_ab(lab[..., 1:]))
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 1


def test_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        color.rgb_to_lab(np.zeros((4, 4)))


def test_gray_and_lightness_match_to_gray_and_reference(photos):
    from koala_utils.images import gray_to_rgb, to_gray

    for rgb in photos[:4]:
        gray, light = color.gray_and_lightness(rgb)
        reference = to_gray(rgb)
        assert gray.dtype == np.uint8 and light.dtype == np.float32
        # float32 luminance: a pixel within rounding of a level boundary may land one level off.
        assert np.abs(gray.astype(int) - reference).max() <= 1 and np.mean(gray != reference) < 1e-4
        assert np.abs(light - skcolor.rgb2lab(rgb)[..., 0]).max() < 1e-3
        # A black-and-white photo stored as RGB takes the shortcut, and it is exact.
        bw = gray_to_rgb(reference)
        bw_gray, bw_light = color.gray_and_lightness(bw)
        assert np.array_equal(bw_gray, reference)
        assert np.abs(bw_light - skcolor.rgb2lab(bw)[..., 0]).max() < 1e-3


def test_fast_paths_on_large_batched_and_tiny_images(photos):
    # Large enough to be split into blocks shared among threads; batches keep their leading axes.
    big = np.tile(photos[0], (4, 4, 1))
    lab = skcolor.rgb2lab(big)
    assert np.abs(color.lightness(big) - lab[..., 0]).max() < 1e-3
    assert np.abs(color.lab_to_rgb_fast(lab[..., 0], lab[..., 1:]).astype(int) - big).max() <= 1
    batch = np.stack([photos[0][:50, :60], photos[1][:50, :60]])
    assert color.lightness(batch).shape == (2, 50, 60)
    assert np.array_equal(color.lightness(batch)[1], color.lightness(batch[1]))
    for shape in [(1, 1), (1, 7), (0, 5)]:
        rgb = np.full((*shape, 3), 200, np.uint8)
        assert color.lightness(rgb).shape == shape
        assert color.gray_and_lightness(rgb)[0].shape == shape
        assert color.lab_to_rgb_fast(np.full(shape, 50.0), np.zeros((*shape, 2))).shape == (*shape, 3)
