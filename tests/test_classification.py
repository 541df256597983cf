"""The classification head (issue 10): bins, soft encoding, rebalancing, annealed mean, loss, save/load, learning."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from skimage.color import rgb2lab

from koala_utils import classification as cls
from koala_utils.model import Predictor, build_model, load_model
from koala_utils.rebalanced_loss import RebalancedCrossEntropy, pick_logits

HALF_DIAGONAL = cls.GRID * np.sqrt(2) / 2


@pytest.fixture(scope="module")
def bins():
    return cls.ab_bins()


@pytest.fixture(scope="module")
def srgb_lab():
    """Lab of the RGB cube's surface (where the gamut's extreme chromas lie) and 300,000 random interior colours."""
    levels = np.arange(256)
    a, b = np.meshgrid(levels, levels, indexing="ij")
    faces = []
    for axis in range(3):
        for value in (0, 255):
            face = np.empty((256, 256, 3), dtype=np.int64)
            face[..., axis] = value
            others = [k for k in range(3) if k != axis]
            face[..., others[0]], face[..., others[1]] = a, b
            faces.append(face.reshape(-1, 3))
    interior = np.random.default_rng(0).integers(0, 256, (300_000, 3))
    rgb = np.concatenate(faces + [interior]) / 255.0
    return rgb2lab(rgb.reshape(-1, 1, 3)).reshape(-1, 3)


def test_bins_cover_the_srgb_gamut(bins, srgb_lab):
    assert 230 <= len(bins) <= 320
    assert np.all(bins % cls.GRID == 0)
    nearest = cls.nearest_bin(srgb_lab[:, 1:], bins)
    distance = np.linalg.norm(srgb_lab[:, 1:] - bins[nearest], axis=-1)
    assert distance.max() <= HALF_DIAGONAL + 1e-6


def test_every_bin_is_reached_by_an_srgb_colour(bins, srgb_lab):
    cells = np.round(srgb_lab[:, 1:] / cls.GRID) * cls.GRID
    reached = {tuple(c) for c in cells}
    unreached = [tuple(b) for b in bins if tuple(b) not in reached]
    assert not unreached, f"bins no sampled sRGB colour falls into: {unreached}"


def test_soft_encoding_sums_to_one_and_peaks_at_the_nearest_bin(bins):
    ab = np.random.default_rng(1).uniform(-60, 60, (500, 2)).astype(np.float32)
    soft = cls.soft_encode(ab, bins)
    assert soft.shape == (500, len(bins))
    assert np.allclose(soft.sum(-1), 1, atol=1e-5)
    assert np.all((soft > 0).sum(-1) == cls.NEIGHBOURS)
    assert np.array_equal(soft.argmax(-1), cls.nearest_bin(ab, bins))


def test_rebalancing_weights_have_expectation_one_and_favour_rare_bins(bins):
    prior = cls.estimate_prior(np.random.default_rng(2).normal(0, 15, (20_000, 2)), bins)
    assert np.isclose(prior.sum(), 1) and np.all(prior > 0)
    weights = cls.rebalancing_weights(prior)
    assert np.isclose((prior * weights).sum(), 1, atol=1e-5)
    assert weights[prior.argmin()] > weights[prior.argmax()]
    assert np.allclose(cls.rebalancing_weights(prior, lam=1.0), 1.0)  # lambda 1: no rebalancing


def test_annealed_mean_is_the_softmax_mean_at_t1_and_the_mode_as_t_shrinks(bins):
    logits = np.random.default_rng(3).normal(0, 2, (10, len(bins))).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert np.allclose(cls.annealed_mean(logits, 1.0, bins), p @ bins / 127, atol=1e-5)
    logits[np.arange(10), logits.argmax(-1)] += 0.5  # a clear mode (no near ties)
    mode = bins[logits.argmax(-1)] / 127
    assert np.allclose(cls.annealed_mean(logits, 0.01, bins), mode, atol=1e-3)
    assert np.abs(cls.annealed_mean(logits, 0.38, bins)).mean() > np.abs(cls.annealed_mean(logits, 1.0, bins)).mean()
    with pytest.raises(ValueError):
        cls.annealed_mean(logits, 0.0, bins)


def test_loss_matches_the_numpy_soft_encoding(bins):
    rng = np.random.default_rng(4)
    ab = rng.uniform(-50, 50, (2, 8, 8, 2)).astype(np.float32)
    logits = rng.normal(0, 1, (2, 4, 4, len(bins))).astype(np.float32)
    weights = rng.uniform(0.5, 2, len(bins)).astype(np.float32)
    loss = RebalancedCrossEntropy(bins, weights, reduction=None)
    got = keras.ops.convert_to_numpy(loss(ab / 127, logits))
    pooled = ab.reshape(2, 4, 2, 4, 2, 2).mean(axis=(2, 4))
    soft = cls.soft_encode(pooled, bins)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    expected = -(soft * log_p).sum(-1) * weights[cls.nearest_bin(pooled, bins)]
    assert got.shape == (2, 4, 4)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_classification_head_keeps_the_trunk_and_saves_with_safe_mode(tmp_path, bins):
    paper = build_model()
    vivid = build_model(head="classification")
    trunk = [layer.name for layer in paper.layers if layer.name.startswith(("encoder", "fusion", "decoder_"))]
    assert all(vivid.get_layer(n).get_config()["name"] == n for n in trunk if n not in ("decoder_ab", "decoder_up_3"))
    assert vivid.output_shape == (None, None, None, len(bins))
    x, e = np.random.default_rng(5).uniform(-1, 1, (1, 40, 24, 1)), np.random.default_rng(6).normal(0, 1, (1, 1000))
    out = Predictor(vivid)(x, e)
    assert out.shape == (1, 40, 24, 2)
    vivid.save(tmp_path / "vivid.keras")
    loaded = load_model(tmp_path / "vivid.keras")
    assert np.array_equal(cls.model_bins(loaded), bins)
    assert np.allclose(Predictor(loaded)(x, e), out, atol=1e-6)


JAX_SCRIPT = """
import sys, numpy as np, keras
from koala_utils.model import Predictor, build_model, load_model
assert keras.backend.backend() == "jax"
m = load_model(sys.argv[1] + "/tf.keras")
x, e = np.load(sys.argv[1] + "/x.npy"), np.load(sys.argv[1] + "/e.npy")
np.save(sys.argv[1] + "/jax_out.npy", Predictor(m, 0.2)(x, e))
"""


def test_classification_head_runs_and_loads_on_jax(tmp_path):
    model = build_model(head="classification")
    x = np.random.default_rng(7).uniform(-1, 1, (1, 32, 48, 1)).astype(np.float32)
    e = np.random.default_rng(8).normal(0, 1, (1, 1000)).astype(np.float32)
    model.save(tmp_path / "tf.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "e.npy", e)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], check=True, env=env, timeout=300)
    assert np.allclose(np.load(tmp_path / "jax_out.npy"), Predictor(model, 0.2)(x, e), atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_tiny_classification_training_on_real_photos_gives_colour(small_records, tmp_path, stride):
    """A short run on real photos: predictions more colourful than gray and closer to the truth than at start,
    with every pixel supervised and with one in four (sparse supervision)."""
    from koala_utils import data, evaluate
    from koala_utils.color import lab_scaled_to_rgb, lightness, scale_l
    from koala_utils.train import train

    records, _ = small_records
    arrays = data.load_arrays(records, "train", limit=8)
    l_scaled = scale_l(lightness(arrays["rgb"]))[..., None].astype(np.float32)
    truth_ab = data.lab_batch(arrays["rgb"].astype(np.float32) / 255.0)[1].numpy()

    keras.utils.set_random_seed(0)
    start = Predictor(build_model(head="classification"))(l_scaled, arrays["embedding"])
    model, history = train(records, tmp_path / "run", epochs=12, batch_size=4, image_size=64,
                           loss="classification", tensorboard=False, verbose=0, augment=False,
                           supervision_stride=stride)
    assert history["loss"][-1] < history["loss"][0]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["supervision_stride"] == stride
    pred = Predictor(model, 0.38)(l_scaled, arrays["embedding"])
    assert np.mean((pred - truth_ab) ** 2) < np.mean((start - truth_ab) ** 2)
    rgb = [lab_scaled_to_rgb(lv, ab) for lv, ab in zip(l_scaled, pred, strict=True)]
    gray = [lab_scaled_to_rgb(lv, np.zeros_like(ab)) for lv, ab in zip(l_scaled, pred, strict=True)]
    assert np.mean([evaluate.colorfulness(x) for x in rgb]) > np.mean([evaluate.colorfulness(x) for x in gray]) + 5


def test_decoding_before_the_nearest_upsampling_equals_upsampling_the_logits(bins):
    """Why the classification head decodes at H/2 and then upsamples: with the paper's nearest-neighbour ×2
    upsampling the result is identical to upsampling the Q logits first, at 1/Q of the memory."""
    from keras import layers

    logits = np.random.default_rng(9).normal(0, 2, (1, 5, 7, len(bins))).astype(np.float32)
    up = layers.UpSampling2D(2)  # the paper's last layer (nearest neighbour)
    logits_first = cls.annealed_mean(keras.ops.convert_to_numpy(up(logits)), 0.38, bins)
    decoded_first = keras.ops.convert_to_numpy(up(cls.annealed_mean(logits, 0.38, bins)))
    assert np.allclose(logits_first, decoded_first, atol=1e-6)


def test_candidate_table_holds_the_exact_nearest_bins(bins):
    """Every ab point's 5 nearest bins (brute force over all Q) are among its cell's candidates."""
    from koala_utils.rebalanced_loss import AB_LIMIT, CELL, neighbour_candidates

    candidates, padding = neighbour_candidates(bins)
    side = int(round(2 * AB_LIMIT / CELL)) + 1
    ab = np.random.default_rng(9).uniform(-110, 110, (20000, 2)).astype(np.float32)
    ab[:2] = [[CELL / 2 - 1e-3, CELL / 2 - 1e-3], [-3 * CELL / 2 + 1e-3, 5.0]]  # near cell corners
    cell = np.round((ab + AB_LIMIT) / CELL).astype(int)
    rows = cell[:, 0] * side + cell[:, 1]
    nearest = np.argsort(((ab[:, None] - bins[None]) ** 2).sum(-1), axis=-1)[:, :5]
    for row, near in zip(rows, nearest, strict=True):
        real = set(candidates[row][padding[row] == 0].tolist())
        assert set(near.tolist()) <= real
    assert candidates.shape[1] < len(bins) // 10  # a short list, or the table saves nothing


def test_removing_the_rebalancing_recovers_the_true_distribution(bins):
    """A head that learned p * w (what the rebalanced loss trains toward) decodes to p's mean once w is removed."""
    rng = np.random.default_rng(10)
    prior = cls.estimate_prior(rng.normal(0, 15, (5000, 2)), bins)
    p_true = rng.dirichlet(np.full(len(bins), 0.3), size=(3, 4))
    weighted = p_true * cls.rebalancing_weights(prior)
    logits = np.log(weighted / weighted.sum(-1, keepdims=True)) + 3.0  # any offset per pixel
    recovered = cls.annealed_mean(cls.remove_rebalancing(logits, prior), 1.0, bins)
    assert np.allclose(recovered, p_true @ bins / 127, atol=1e-4)
    assert not np.allclose(cls.annealed_mean(logits, 1.0, bins), p_true @ bins / 127, atol=1e-2)


def test_adjusting_the_rebalancing_moves_the_logits_by_a_fraction_of_log_w(bins):
    """adjust_rebalancing changes the logits layer's bias by -removed * log w, nothing else; removing the rest at
    decode time (kept = 1 - removed) gives what removing all of it from the unadjusted logits gives."""
    rng = np.random.default_rng(11)
    prior = cls.estimate_prior(rng.normal(0, 15, (5000, 2)), bins)
    model = build_model(head="classification", bins=bins, prior=prior)
    inputs = {"l": rng.uniform(-1, 1, (1, 32, 32, 1)).astype(np.float32),
              "embedding": rng.normal(0, 1, (1, 1000)).astype(np.float32)}
    before = np.asarray(model(inputs))
    cls.adjust_rebalancing(model, 0.3)
    after = np.asarray(model(inputs))
    log_w = np.log(cls.rebalancing_weights(prior))
    assert np.allclose(after, before - 0.3 * log_w, atol=1e-4)
    assert np.allclose(cls.remove_rebalancing(after, prior, kept=0.7), cls.remove_rebalancing(before, prior),
                       atol=1e-4)
    cls.adjust_rebalancing(model, -0.3)  # puts it back, as a resumed training phase does
    assert np.allclose(np.asarray(model(inputs)), before, atol=1e-4)
    with pytest.raises(ValueError, match="removed"):
        cls.adjust_rebalancing(model, 1.5)


def test_quality_benchmark_decodes_a_removed_fraction_counting_what_the_export_removed(bins):
    """benchmarks/quality.py --removed F: F is the fraction divided out in all, so for a model whose export already
    removed 0.2 (kept 0.8) F = 0.2 decodes the logits as they are, and F = 0.5 takes another 0.3 log w out; the
    guard's anchor is the same whatever F is (all of the rebalancing divided out)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "quality_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    rng = np.random.default_rng(5)
    prior = cls.estimate_prior(rng.normal(0, 15, (5000, 2)), bins)
    model = build_model(head="classification", bins=bins, prior=prior)
    model.get_layer("ab_bins").rebalancing_removed = 0.2
    predictor = Predictor(model)
    raw = rng.normal(0, 2, (1, 4, 4, len(bins))).astype(np.float32)
    settings = quality.settings_of("vivid", [0.2], [], [], removed=[0.2, 0.5], removed_temperatures=[0.2],
                                   guards=[0, 1])
    assert [s[0] for s in settings] == ["T=0.2", "T=0.2 removed 0.2 guard 0", "T=0.2 removed 0.2 guard 1",
                                        "T=0.2 removed 0.5 guard 0", "T=0.2 removed 0.5 guard 1"]
    as_is = quality._decode(predictor, raw, 8, 8, "removed", (0.2, 0.2, 0.0))
    assert np.allclose(as_is, predictor.decode(raw, 8, 8, 0.2, cast_guard=0.0), atol=1e-6)
    more = quality._decode(predictor, raw, 8, 8, "removed", (0.5, 0.2, 0.0))
    log_w = np.log(cls.rebalancing_weights(prior)).astype(np.float32)
    assert np.allclose(more, predictor.decode(raw - 0.3 * log_w, 8, 8, 0.2, cast_guard=0.0), atol=1e-6)
    assert not np.allclose(more, as_is, atol=1e-3)
    guarded = [quality._decode(predictor, raw, 8, 8, "removed", (f, 0.2, 1.0)) for f in (0.2, 0.5)]
    assert np.allclose(guarded[0], predictor.decode(raw, 8, 8, 0.2, cast_guard=1.0), atol=1e-6)
    assert np.allclose(guarded[0].mean(axis=(1, 2)), guarded[1].mean(axis=(1, 2)), atol=1e-5)


def test_the_cast_guard_moves_only_the_average_colour_of_the_photo_region():
    """guard_cast at strength s moves each photo's mean ab over its region s of the way to the anchor's mean;
    the variation around the mean is kept; 0 changes nothing; the padding does not count."""
    rng = np.random.default_rng(3)
    ab = rng.normal(0.1, 0.2, (2, 6, 8, 2)).astype(np.float32)
    anchor = rng.normal(-0.05, 0.1, (2, 6, 8, 2)).astype(np.float32)
    region = np.ones((2, 6, 8), bool)
    region[1, :, 5:] = False  # the second photo has padding on the right
    anchor[1][~region[1]] = 0.7  # which would pull hard if it counted
    out = cls.guard_cast(ab, anchor, 1.0, region)
    for k in range(2):
        assert np.allclose(out[k][region[k]].mean(0), anchor[k][region[k]].mean(0), atol=1e-5)
        assert np.allclose(out[k] - out[k][region[k]].mean(0), ab[k] - ab[k][region[k]].mean(0), atol=1e-5)
    half = cls.guard_cast(ab, anchor, 0.5, region)
    assert np.allclose(half, (ab + out) / 2, atol=1e-5)
    assert np.array_equal(cls.guard_cast(ab, anchor, 0.0, region), ab)
    with pytest.raises(ValueError, match="cast guard"):
        cls.guard_cast(ab, anchor, 1.5)
    assert np.array_equal(cls.logit_region(np.where(np.arange(8) < 6, 0.2, 1.0)[None, None, :, None]
                                           .repeat(4, axis=1)), np.array([[[True] * 3 + [False]] * 2]))


def test_decoding_with_the_cast_guard_anchors_on_the_unrebalanced_mean(bins):
    """decode_logits with the guard at 1 gives each photo the average of the T = 1 mean of the logits with the
    rebalancing divided out (counting what an export already removed), and without the guard the annealed mean."""
    rng = np.random.default_rng(4)
    prior = cls.estimate_prior(rng.normal(0, 15, (5000, 2)), bins)
    logits = rng.normal(0, 2, (2, 4, 5, len(bins))).astype(np.float32)
    assert np.array_equal(cls.decode_logits(logits, 0.2, bins), cls.annealed_mean(logits, 0.2, bins))
    guarded = cls.decode_logits(logits, 0.2, bins, prior, kept=0.8, cast_guard=1.0)
    anchor = cls.annealed_mean(cls.remove_rebalancing(logits, prior, kept=0.8), 1.0, bins)
    assert np.allclose(guarded.mean(axis=(1, 2)), anchor.mean(axis=(1, 2)), atol=1e-5)
    wrong = cls.annealed_mean(cls.remove_rebalancing(logits, prior, kept=1.0), 1.0, bins)
    assert not np.allclose(guarded.mean(axis=(1, 2)), wrong.mean(axis=(1, 2)), atol=1e-3)
    with pytest.raises(ValueError, match="prior"):
        cls.decode_logits(logits, 0.2, bins, cast_guard=1.0)


def test_a_saved_model_remembers_how_much_rebalancing_was_removed(bins, tmp_path):
    """adjust_rebalancing records the fraction in the ab_bins layer; a .keras file keeps it (safe_mode), so the
    Predictor's guard anchors on the right distribution."""
    rng = np.random.default_rng(12)
    prior = cls.estimate_prior(rng.normal(0, 15, (5000, 2)), bins)
    model = build_model(head="classification", bins=bins, prior=prior)
    assert cls.model_rebalancing_kept(model) == 1.0
    cls.adjust_rebalancing(model, 0.25)
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert cls.model_rebalancing_kept(loaded) == pytest.approx(0.75)
    assert Predictor(loaded).kept == pytest.approx(0.75)


PICK_SCRIPT = """
import sys
import numpy as np
import keras
from koala_utils.rebalanced_loss import pick_logits
assert keras.backend.backend() == "jax"
logits, idx = np.load(sys.argv[1] + "/logits.npy"), np.load(sys.argv[1] + "/idx.npy")
np.save(sys.argv[1] + "/picked.npy", keras.ops.convert_to_numpy(pick_logits(logits, idx)))
"""


def test_picking_logits_by_bin_equals_take_along_axis_on_tf_and_jax(tmp_path):
    rng = np.random.default_rng(11)
    logits = rng.normal(0, 1, (2, 3, 5, 17)).astype(np.float32)
    idx = rng.integers(0, 17, (2, 3, 5, 4)).astype(np.int32)
    expected = np.take_along_axis(logits, idx, axis=-1)
    assert np.array_equal(keras.ops.convert_to_numpy(pick_logits(logits, idx)), expected)
    np.save(tmp_path / "logits.npy", logits)
    np.save(tmp_path / "idx.npy", idx)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    subprocess.run([sys.executable, "-c", PICK_SCRIPT, str(tmp_path)], check=True, env=env, timeout=300)
    assert np.array_equal(np.load(tmp_path / "picked.npy"), expected)
