"""Image loading and the white-padding geometry."""

import numpy as np
import pytest
from PIL import Image

from koala_utils import color, images


def test_pad_box_geometry():
    assert images.pad_box(200, 400, 224) == (56, 0, 112, 224)
    assert images.pad_box(400, 200, 224) == (0, 56, 224, 112)
    assert images.pad_box(300, 300, 299) == (0, 0, 299, 299)
    assert images.pad_box(1, 5000, 224) == (111, 0, 1, 224)


def test_resize_pad_is_white_outside_the_photo(sample_photos):
    rgb = images.load_image(sample_photos[0])
    for size in (224, 299):
        padded, (top, left, h, w) = images.resize_pad(rgb, size)
        assert padded.shape == (size, size, 3)
        assert max(h, w) == size
        assert abs(h / w - rgb.shape[0] / rgb.shape[1]) < 0.02
        mask = np.ones((size, size), bool)
        mask[top : top + h, left : left + w] = False
        assert (padded[mask] == 255).all()
        assert padded[top : top + h, left : left + w].mean() < 250


def test_resize_pad_gray_keeps_2d():
    gray = np.zeros((10, 30), np.uint8)
    padded, box = images.resize_pad(gray, 224)
    assert padded.shape == (224, 224) and box == (74, 0, 75, 224)  # (224 - 75) // 2 = 74


def test_to_gray_has_the_photo_lightness(sample_photos):
    rgb = images.load_image(sample_photos[1])
    gray = images.to_gray(rgb)
    l_photo = color.rgb_to_lab(rgb)[..., 0]
    l_gray = color.rgb_to_lab(images.gray_to_rgb(gray))[..., 0]
    assert np.abs(l_photo - l_gray).max() < 0.5  # 8-bit rounding of the gray level


def test_is_grayscale(sample_folder, sample_photos):
    gray_names = (sample_folder / "GRAYSCALE_FILES.txt").read_text().split()
    gray = images.load_image(sample_folder / gray_names[0])
    assert images.is_grayscale(gray)
    assert not images.is_grayscale(images.load_image(sample_photos[0]))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA"])
def test_any_mode_loads_as_rgb(tmp_path, mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    img = base.convert(mode) if mode != "I;16" else base.convert("L").convert("I;16")
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    img.save(path)
    rgb = images.load_image(path)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8


def test_transparency_becomes_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    path = tmp_path / "clear.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert (images.load_image(path) == 255).all()


# What a viewer shows for each EXIF orientation, from the EXIF spec's "0th row / 0th column" wording.
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # 0th row on the left, 0th column at the top
    6: lambda a: np.rot90(a, -1),  # 0th row on the right, 0th column at the top: turn clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # 0th row on the right, 0th column at the bottom
    8: lambda a: np.rot90(a, 1),  # 0th row on the left, 0th column at the bottom: turn anticlockwise
}


def _with_orientation(rgb, orientation, path, **save):
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, **save)
    return path


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_exif_orientation_pixel_by_pixel(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 256, (5, 8, 3), dtype=np.uint8)  # not square
    loaded = images.load_image(_with_orientation(stored, orientation, tmp_path / "o.png"))
    np.testing.assert_array_equal(loaded, DISPLAYED[orientation](stored))


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotation_of_a_camera_jpeg(tmp_path, sample_photos, orientation):
    rgb = images.load_image(sample_photos[2])
    assert rgb.shape[0] != rgb.shape[1]
    loaded = images.load_image(_with_orientation(rgb, orientation, tmp_path / "r.jpg", quality=95))
    expected = DISPLAYED[orientation](rgb).astype(int)
    assert loaded.shape == expected.shape
    assert np.abs(loaded.astype(int) - expected).mean() < 3  # JPEG noise only
    assert np.abs(loaded.astype(int) - DISPLAYED[14 - orientation](rgb).astype(int)).mean() > 20


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        images.load_image(tmp_path / "nope.jpg")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        images.load_image(tmp_path)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(images.ImageLoadError, match="bad.jpg"):
        images.load_image(bad)


def test_arrays_of_every_layout():
    assert images.load_image(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert images.load_image(np.zeros((5, 6, 1), np.uint8)).shape == (5, 6, 3)
    assert images.load_image(np.ones((5, 6, 3), np.float32))[0, 0, 0] == 255
    assert images.load_image(np.full((5, 6), 65535, np.uint16))[0, 0, 0] == 255
    with pytest.raises(images.ImageLoadError, match="shape"):
        images.load_image(np.zeros((5, 6, 7), np.uint8))


def test_one_conversion_for_every_array(sample_photos):
    """load_image, the metrics and the backbones' gray input share array_to_rgb's one contract."""
    from koala_utils import metrics

    rgb = images.load_image(sample_photos[0])
    as_float = rgb.astype(np.float64) / 255.0
    assert np.array_equal(images.array_to_rgb(as_float), rgb)
    assert np.array_equal(metrics.as_rgb_uint8(as_float), rgb)
    assert np.array_equal(metrics.as_rgb_uint8(rgb.astype(np.int64)), rgb)
    assert images.array_to_rgb(rgb) is rgb  # uint8 RGB is not copied
    # 16-bit is scaled, not clipped, by the metrics too.
    assert np.array_equal(metrics.as_rgb_uint8(rgb.astype(np.uint16) * 257), rgb)
    # Alpha is composited over white.
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    assert (images.array_to_rgb(rgba) == 255).all()
    gray = images.to_gray(rgb)
    assert images.gray_uint8(gray) is gray
    assert np.array_equal(images.gray_uint8(gray[..., None]), gray)
    assert np.array_equal(images.gray_uint8(rgb), gray)
    assert np.array_equal(images.gray_uint8(gray.astype(np.float32) / 255.0), gray)
    with pytest.raises(ValueError, match="prediction: expected an RGB image"):
        metrics.as_rgb_uint8(gray, "prediction")
    nan = as_float.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="truth: float image contains NaN"):
        metrics.as_rgb_uint8(nan, "truth")
