"""Tests of the Prokudin-Gorskii plate alignment (koala_utils.historical)."""

import numpy as np
import pytest
from skimage import data
from skimage.filters import sobel

from koala_utils import historical as hist
from koala_utils.evaluate import colorfulness, psnr
from koala_utils.images import load_image, to_gray

# How far the blue and red exposures are displaced relative to the green one.
BLUE_OFFSET = (7, -4)
RED_OFFSET = (-6, 9)
REAL_PLATES = ("00029u.jpg", "00757v.jpg", "01880v.jpg")


def _synthetic_plate():
    rgb = data.astronaut()
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    blue = np.roll(blue, BLUE_OFFSET, axis=(0, 1))
    red = np.roll(red, RED_OFFSET, axis=(0, 1))
    return rgb, np.vstack([blue, green, red])


def _gradient_correlation(rgb):
    grads = [sobel(rgb[..., c].astype(np.float64)).ravel() for c in range(3)]
    return np.mean([np.corrcoef(grads[i], grads[j])[0, 1] for i, j in ((0, 1), (1, 2), (0, 2))])


def test_split_plate_thirds():
    plate = np.arange(11 * 4).reshape(11, 4).astype(np.uint8)
    b, g, r = hist.split_plate(plate)
    assert b.shape == g.shape == r.shape == (3, 4)
    np.testing.assert_array_equal(b, plate[0:3])
    np.testing.assert_array_equal(g, plate[3:6])
    np.testing.assert_array_equal(r, plate[6:9])
    with pytest.raises(ValueError):
        hist.split_plate(np.zeros((2, 5), np.uint8))


def test_align_synthetic_plate_recovers_offsets():
    original, plate = _synthetic_plate()
    rgb, shifts = hist.align_plate(plate, return_shifts=True)
    assert shifts["green"] == (0.0, 0.0)
    assert shifts["blue"] == (-BLUE_OFFSET[0], -BLUE_OFFSET[1])
    assert shifts["red"] == (-RED_OFFSET[0], -RED_OFFSET[1])
    # border: 10 % of 512 px = 51 px (larger than any shift)
    assert rgb.dtype == np.uint8 and rgb.shape == (512 - 2 * 51, 512 - 2 * 51, 3)
    truth = original[51:-51, 51:-51]
    np.testing.assert_array_equal(rgb, truth)  # whole-pixel shifts are undone exactly
    assert np.array_equal(hist.align_plate(plate), rgb)


@pytest.mark.parametrize("kwargs", [{"reference": "blue"}, {"method": "intensity"}, {"upsample_factor": 4}])
def test_align_synthetic_plate_other_settings(kwargs):
    original, plate = _synthetic_plate()
    rgb, shifts = hist.align_plate(plate, return_shifts=True, **kwargs)
    relative_red = np.subtract(shifts["red"], shifts["green"])
    relative_blue = np.subtract(shifts["blue"], shifts["green"])
    np.testing.assert_allclose(relative_red, np.negative(RED_OFFSET), atol=0.5)
    np.testing.assert_allclose(relative_blue, np.negative(BLUE_OFFSET), atol=0.5)
    height, width = rgb.shape[:2]
    top, left = (512 - height) // 2, (512 - width) // 2
    truth = original[top : top + height, left : left + width]
    # the photo is recovered in its own frame when aligning onto blue: compare the inner part
    if kwargs.get("reference") == "blue":
        truth = np.roll(original, BLUE_OFFSET, axis=(0, 1))[top : top + height, left : left + width]
    assert psnr(rgb, truth) > 30.0


def test_align_subpixel_offsets_with_noise():
    from scipy.ndimage import shift as nd_shift

    original = data.astronaut()
    channels = original.astype(np.float64)
    offsets = {"blue": (5.3, -3.6), "red": (-4.7, 6.2)}
    blue = nd_shift(channels[..., 2], offsets["blue"], order=3, mode="nearest")
    red = nd_shift(channels[..., 0], offsets["red"], order=3, mode="nearest")
    noise = np.random.default_rng(0).normal(0, 2.0, size=(3,) + blue.shape)
    stack = [blue + noise[0], channels[..., 1] + noise[1], red + noise[2]]
    plate = np.clip(np.round(np.vstack(stack)), 0, 255).astype(np.uint8)
    rgb, whole = hist.align_plate(plate, return_shifts=True)
    for name in ("blue", "red"):
        np.testing.assert_allclose(whole[name], np.negative(offsets[name]), atol=1.0)
    rgb, fine = hist.align_plate(plate, upsample_factor=10, return_shifts=True)
    for name in ("blue", "red"):
        np.testing.assert_allclose(fine[name], np.negative(offsets[name]), atol=0.2)
    truth = original[51:-51, 51:-51]
    assert rgb.shape == truth.shape
    assert psnr(rgb, truth) > 30.0


def test_real_plates_align():
    paths = {p.name: p for p in hist.plate_paths()}
    if not all(name in paths for name in REAL_PLATES):
        pytest.fail(f"Prokudin-Gorskii plates missing from {hist.default_folder()}")
    for name in REAL_PLATES:
        plate = to_gray(load_image(paths[name]))
        rgb, shifts = hist.align_plate(plate, return_shifts=True)
        b, g, r = hist.split_plate(plate)
        unaligned = hist.inner(np.stack([r, g, b], axis=-1), 0.1)
        aligned_corr, unaligned_corr = _gradient_correlation(rgb), _gradient_correlation(unaligned)
        # measured: 0.744 vs 0.314, 0.838 vs 0.392, 0.814 vs 0.175
        assert aligned_corr > 0.7, name
        assert aligned_corr > unaligned_corr + 0.3, name
        # measured 59.9, 89.2, 51.7; a gray image scores 0
        assert colorfulness(rgb) > 30.0, name
        assert all(abs(s) <= 15 for shift in shifts.values() for s in shift), name
        assert rgb.shape[0] > 0.75 * b.shape[0] and rgb.shape[1] > 0.75 * b.shape[1]
    np.testing.assert_array_equal(
        hist.load_plate(paths[REAL_PLATES[0]]), hist.align_plate(to_gray(load_image(paths[REAL_PLATES[0]])))
    )


def test_plate_paths(tmp_path):
    default = hist.plate_paths()
    if default:
        assert all(p.suffix.lower() == ".jpg" for p in default)
        assert default == sorted(default)
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in hist.plate_paths(tmp_path)] == ["a.jpg", "b.png"]
    with pytest.raises(FileNotFoundError):
        hist.plate_paths(tmp_path / "missing")


def test_bad_reference():
    with pytest.raises(ValueError):
        hist.align_plate(np.zeros((30, 10), np.uint8), reference="yellow")
