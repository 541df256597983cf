"""Record cache: round trip, size budget, stable split, gray skipping, reuse, the tf.data pipeline."""

import numpy as np
import pytest

from koala_utils import color, data, images


def test_manifest_counts_and_budget(small_records, sample_photos):
    out, manifest = small_records
    counts = manifest["counts"]
    assert counts["train"] + counts["val"] == len(sample_photos)
    assert counts["val"] > 0 and counts["train"] > 0
    assert manifest["backbone"] == "efficientnet_lite0" and manifest["backbone_pretrained"]
    assert manifest["embed_dim"] == 1000
    assert manifest["bytes_per_image"] <= 60 * 1024
    for shard in manifest["shards"]:
        assert data.sha256_file(out / shard["file"]) == shard["sha256"]


def test_record_round_trip(small_records, sample_photos, lite0):
    out, _ = small_records
    stored = {**_arrays(out, "train"), **_arrays(out, "val")}
    assert sorted(stored) == sorted(p.name for p in sample_photos)
    for path in sample_photos[:4]:
        rgb = images.load_image(path)
        padded, box = images.resize_pad(rgb, 224)
        record_rgb, embedding, record_box = stored[path.name]
        assert tuple(record_box) == box
        assert np.allclose(embedding, lite0.embed([images.to_gray(rgb)])[0], atol=1e-4)
        # The stored photo keeps its colour: ab error of the JPEG (q95, 4:4:4) is small.
        ab_error = np.abs(color.rgb_to_lab(record_rgb)[..., 1:] - color.rgb_to_lab(padded)[..., 1:])
        assert ab_error.mean() < 1.0 and np.percentile(ab_error, 99) < 5.0


def _arrays(out, split):
    arrays = data.load_arrays(out, split)
    columns = zip(arrays["names"], arrays["rgb"], arrays["embedding"], arrays["box"], strict=True)
    return {name: rest for name, *rest in columns}


def test_split_is_stable_and_order_free():
    names = [f"photo_{i:04d}.jpg" for i in range(2000)]
    splits = [data.split_of(n) for n in names]
    assert 0.08 < splits.count("val") / len(names) < 0.12
    assert data.plan_shards(names[::-1], 300) == data.plan_shards(names, 300)


def test_rerun_reuses_everything(small_records, sample_photos, lite0):
    out, first = small_records
    again = data.prepare(sample_photos, out, backbone=lite0, shard_size=5, val_fraction=0.25, progress=False)
    assert again["reused_images"] == len(sample_photos)
    assert again["shards"] == first["shards"]


def test_gray_photos_are_skipped_and_reported(tmp_path, sample_folder, sample_photos, lite0):
    gray_name = (sample_folder / "GRAYSCALE_FILES.txt").read_text().split()[0]
    inputs = [sample_folder / gray_name, sample_photos[0]]
    manifest = data.prepare(inputs, tmp_path, backbone=lite0, progress=False)
    assert manifest["skipped_gray"] == [gray_name]
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == 1


def test_arrays_as_input(tmp_path, lite0):
    import skimage.data

    manifest = data.prepare([skimage.data.astronaut(), skimage.data.coffee()], tmp_path, backbone=lite0,
                            progress=False)
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == 2


def test_load_yields_scaled_lab(small_records):
    out, manifest = small_records
    ds = data.load(out, "train", batch_size=4, shuffle=False)
    inputs, ab = next(iter(ds))
    assert inputs["l"].shape == (4, 224, 224, 1) and ab.shape == (4, 224, 224, 2)
    assert inputs["embedding"].shape == (4, 1000)
    lightness = inputs["l"].numpy()
    assert -1.0 <= lightness.min() and lightness.max() <= 1.0 + 1e-5
    assert np.abs(ab.numpy()).max() <= 1.0
    # White padding is L = 100 -> 1.0 after scaling.
    assert np.isclose(lightness.max(), 1.0, atol=1e-3)


def test_load_matches_numpy_reference(small_records):
    out, _ = small_records
    arrays = data.load_arrays(out, "val")
    (inputs, ab, names) = next(iter(data.load(out, "val", batch_size=64, with_names=True)))
    assert [n.decode() for n in names.numpy()] == arrays["names"]
    lab = color.rgb_to_lab(arrays["rgb"][0])
    assert np.abs(inputs["l"].numpy()[0, ..., 0] - color.scale_l(lab[..., 0])).max() < 0.01
    assert np.abs(ab.numpy()[0] - color.scale_ab(lab[..., 1:])).max() < 0.01


def test_augmentation_and_low_resolution(small_records):
    out, _ = small_records
    plain = next(iter(data.load(out, "train", batch_size=4, shuffle=False, image_size=64)))[0]["l"].numpy()
    augmented = next(iter(data.load(out, "train", batch_size=4, shuffle=False, augment=True, image_size=64)))
    assert plain.shape == augmented[0]["l"].shape == (4, 64, 64, 1)
    assert not np.allclose(plain, augmented[0]["l"].numpy())
    with pytest.raises(ValueError, match="multiple of 8"):
        data.load(out, "train", image_size=60)


def test_corrupt_shard_is_named(tmp_path, small_records):
    import shutil

    out, manifest = small_records
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / next(s["file"] for s in manifest["shards"] if s["split"] == "train")
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(data.ShardError, match=shard.name):
        data.load(copy, "train")


def test_embedding_dropout_only_with_augment(small_records):
    out, _ = small_records
    kwargs = dict(batch_size=4, shuffle=False, image_size=32, embedding_dropout=0.5)
    dropped = next(iter(data.load(out, "train", augment=True, **kwargs)))[0]["embedding"].numpy()
    plain = next(iter(data.load(out, "train", augment=False, **kwargs)))[0]["embedding"].numpy()
    assert 0.4 < np.mean(dropped == 0) < 0.6
    kept = dropped != 0
    assert np.allclose(dropped[kept], 2 * plain[kept], rtol=1e-5)
    assert np.mean(plain == 0) < 0.01


class _ZeroBackbone:
    """A backbone's interface with a zero embedding: the memory test measures reading photos, not a network."""

    name, pretrained, input_size, dim = "stand_in", False, 224, 1000

    def embed(self, grays):
        return np.zeros((len(grays), self.dim), np.float32)


def _big_scan(path, size):
    """A smooth colour photo of ``size`` (width, height), made by Pillow without a full-size numpy array."""
    from PIL import Image

    ramp = Image.linear_gradient("L")
    channels = (ramp.resize(size), ramp.transpose(Image.Transpose.ROTATE_90).resize(size), Image.new("L", size, 90))
    Image.merge("RGB", channels).save(path, quality=90)
    return path


def test_big_photos_are_reduced_as_they_are_read(tmp_path):
    import tracemalloc

    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(3):
        _big_scan(scans / f"scan_{k}.jpg", (6000, 4000))  # 24 megapixels
    _big_scan(scans / "plate.png", (4000, 3000))  # no JPEG draft mode: decoded, then box-reduced
    data._tf()  # TensorFlow's own import is not what is measured
    tracemalloc.start()
    try:
        manifest = data.prepare(scans, tmp_path / "records", backbone=_ZeroBackbone(), shard_size=10,
                                val_fraction=0.0, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert manifest["counts"]["train"] == 4 and manifest["counts"]["failed"] == 0
    # One 24-megapixel photo alone is 72 MB as RGB uint8 (and 576 MB as the float64 of a gray conversion).
    assert peak < 60e6, f"prepare peaked at {peak / 1e6:.0f} MB of Python/numpy memory"


def test_reduced_reading_keeps_the_working_copy(tmp_path):
    path = _big_scan(tmp_path / "scan.jpg", (3000, 2000))
    full, _ = images.resize_pad(images.load_image(path), 224)
    reduced_rgb = images.load_image(path, max_side=224)
    assert 448 <= max(reduced_rgb.shape) <= 4 * 224
    reduced, _ = images.resize_pad(reduced_rgb, 224)
    assert np.abs(full.astype(int) - reduced.astype(int)).mean() < 1.0
