"""Tests of koala_utils.evaluate against hand-computed values."""

import math

import numpy as np
import pytest
from PIL import Image
from skimage import color as skcolor
from skimage import data

from koala_utils import evaluate as ev


def test_psnr_matches_formula_on_2x2():
    true = np.zeros((2, 2, 3), np.uint8)
    pred = true.copy()
    pred[0, 0, 0] = 10  # one value of 12 off by 10: MSE = 100 / 12
    mse = 100.0 / 12.0
    expected = 10.0 * math.log10(255.0**2 / mse)
    assert expected == pytest.approx(38.9226, abs=1e-4)  # log10(65025 / 8.3333) = 3.89226
    assert ev.psnr(pred, true) == pytest.approx(expected, abs=1e-9)
    assert ev.image_metrics(pred, true)["psnr"] == pytest.approx(expected, abs=1e-9)


def test_psnr_identical_is_inf():
    img = data.astronaut()[:16, :16]
    assert ev.psnr(img, img) == math.inf


def test_colorfulness_by_hand():
    # two pixels: (255, 0, 0) and (0, 0, 255)
    img = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    # rg = R - G = [255, 0]; yb = (R + G) / 2 - B = [127.5, -255]
    mean_rg, std_rg = 127.5, 127.5
    mean_yb = (127.5 - 255.0) / 2  # -63.75
    std_yb = (127.5 + 255.0) / 2  # 191.25
    expected = math.sqrt(std_rg**2 + std_yb**2) + 0.3 * math.sqrt(mean_rg**2 + mean_yb**2)
    assert expected == pytest.approx(272.6195, abs=1e-3)
    assert ev.colorfulness(img) == pytest.approx(expected, rel=1e-12)


def test_colorfulness_of_uniform_colour_is_its_mean_term():
    img = np.zeros((3, 4, 3), np.uint8)
    img[...] = (200, 100, 50)
    # rg = 100, yb = 150 - 50 = 100 everywhere; std = 0
    assert ev.colorfulness(img) == pytest.approx(0.3 * math.sqrt(100**2 + 100**2))


def test_colorfulness_of_gray_is_zero():
    gray = np.repeat(data.camera()[..., None], 3, axis=-1)
    assert ev.colorfulness(gray) == 0.0


def test_identical_images():
    img = data.coffee()[:64, :64]
    m = ev.image_metrics(img, img)
    assert m["mse_ab"] == 0.0
    assert m["psnr"] == math.inf
    assert m["ssim"] == pytest.approx(1.0)
    assert m["cf_ratio"] == pytest.approx(1.0)
    assert m["delta_cf"] == 0.0


def test_mse_ab_of_a_known_shift():
    img = data.chelsea()[:8, :8]
    true_ab = np.zeros((8, 8, 2))
    pred_ab = true_ab + np.array([0.1, -0.2])
    m = ev.image_metrics(img, img, pred_ab=pred_ab, true_ab=true_ab)
    assert m["mse_ab"] == pytest.approx((0.1**2 + 0.2**2) / 2)
    # from RGB: a shift of 12.7 in a and b is 0.1 scaled, squared 0.01
    lab = skcolor.rgb2lab(img)
    assert ev.mse_ab(lab[..., 1:] / 127 + 0.1, lab[..., 1:] / 127) == pytest.approx(0.01)


def test_mse_ab_from_rgb_uses_lab():
    true = np.zeros((2, 2, 3), np.uint8)
    true[...] = (128, 128, 128)
    pred = true.copy()
    pred[...] = (200, 60, 60)
    ab = skcolor.rgb2lab(pred)[0, 0, 1:] / 127.0  # the truth's ab is (about) 0
    assert ev.image_metrics(pred, true)["mse_ab"] == pytest.approx(np.mean(ab**2), abs=1e-6)


def test_cf_ratio_nan_for_gray_truth():
    true = np.full((8, 8, 3), 90, np.uint8)
    pred = data.astronaut()[:8, :8]
    m = ev.image_metrics(pred, true)
    assert math.isnan(m["cf_ratio"])
    assert m["delta_cf"] == pytest.approx(ev.colorfulness(pred))


def test_gray_baseline_keeps_lightness():
    img = data.astronaut()
    gray = ev.gray_baseline(img)
    assert gray.dtype == np.uint8 and gray.shape == img.shape
    lab_true = skcolor.rgb2lab(img)
    lab_gray = skcolor.rgb2lab(gray)
    assert np.max(np.abs(lab_gray[..., 0] - lab_true[..., 0])) < 1.0
    assert np.max(np.abs(lab_gray[..., 1:])) < 1.0
    assert ev.colorfulness(gray) < 1.0


def test_tiny_images_do_not_crash():
    for shape in ((1, 1, 3), (1, 5, 3), (2, 2, 3)):
        a = np.full(shape, 10, np.uint8)
        b = np.full(shape, 30, np.uint8)
        m = ev.image_metrics(a, b)
        assert math.isnan(m["ssim"])
        assert m["psnr"] == pytest.approx(10 * math.log10(255**2 / 400))
    small = np.full((10, 40, 3), 10, np.uint8)  # thinner than SSIM's 11-pixel Gaussian window
    assert math.isnan(ev.image_metrics(small, small)["ssim"])
    m = ev.image_metrics(np.full((11, 12, 3), 10, np.uint8), np.full((11, 12, 3), 10, np.uint8))
    assert m["ssim"] == pytest.approx(1.0)
    result = ev.evaluate_images([np.zeros((1, 1, 3), np.uint8)], [np.full((1, 1, 3), 255, np.uint8)])
    assert "ssim" in ev.format_table(result)


def test_evaluate_real_photos():
    truths = [data.astronaut(), data.coffee(), data.chelsea()]
    result = ev.evaluate_images(truths, truths, names=["astronaut", "coffee", "chelsea"])
    assert [row["name"] for row in result["per_image"]] == ["astronaut", "coffee", "chelsea"]
    assert result["mean"]["psnr"] == math.inf
    assert result["n_psnr_infinite"] == 3
    assert result["mean"]["ssim"] == pytest.approx(1.0)
    assert result["mean"]["mse_ab"] == 0.0
    assert result["mean"]["cf_ratio"] == pytest.approx(1.0)
    gray_psnr = result["gray_mean"]["psnr"]
    assert math.isfinite(gray_psnr) and 15.0 < gray_psnr < 35.0
    for row in result["per_image"]:
        assert math.isfinite(row["gray_psnr"])
        assert row["gray_cf_ratio"] < 0.05
        assert row["gray_mse_ab"] > 0.0
    assert result["gray_mean"]["mse_ab"] > 0.001
    assert result["delta"]["mse_ab"] == pytest.approx(-result["gray_mean"]["mse_ab"])
    assert result["delta"]["psnr"] == math.inf
    table = ev.format_table(result)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "ours", "gray", "difference"]
    assert any(line.startswith("psnr") and "inf" in line for line in lines)
    assert len({len(line) for line in lines[:-1]}) == 1  # aligned


def test_evaluate_mean_is_the_average():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16  # MSE 256 / 192
    c = a.copy()
    c[0, 0] = (8, 8, 8)  # MSE 192 / 192 = 1
    result = ev.evaluate_images([b, c], [a, a])
    expected = (10 * math.log10(255**2 / (256 / 192)) + 10 * math.log10(255**2 / 1.0)) / 2
    assert result["mean"]["psnr"] == pytest.approx(expected)
    assert result["per_image"][0]["name"] == "image_0"


def test_evaluate_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        ev.evaluate_images([data.astronaut()], [])


def test_comparison_grid_png(tmp_path):
    truths = [data.astronaut()[::4, ::4], data.coffee()[::4, ::4], data.chelsea()[::4, ::4]]
    grays = [skcolor.rgb2gray(t) * 255 for t in truths]
    preds = [ev.gray_baseline(t) for t in truths]
    path = tmp_path / "grid" / "fig.png"
    fig = ev.comparison_grid(grays, preds, truths, titles=["a", "b", "c"], path=path, max_rows=2)
    assert len(fig.axes) == 2 * 3
    with Image.open(path) as img:
        width, height = img.size
    assert (width, height) == (int(3 * ev.GRID_ROW_INCHES * ev.GRID_DPI), int(2 * ev.GRID_ROW_INCHES * ev.GRID_DPI))
    assert fig.axes[0].get_title().startswith("Gray input")


def test_before_after_gallery(tmp_path):
    imgs = [data.astronaut()[::8, ::8], data.coffee()[::8, ::8], data.chelsea()[::8, ::8]]
    befores = [ev.gray_baseline(i) for i in imgs]
    out = ev.before_after_gallery(befores, imgs, ["x", "y", "z"], tmp_path / "g.png", columns=2)
    assert out == tmp_path / "g.png"
    with Image.open(out) as img:
        img.load()
        assert img.size[0] > img.size[1]  # 2 rows of 4 panels


def test_psnr_difference_is_paired_when_some_images_are_exact():
    truths = [data.astronaut()[::8, ::8], data.coffee()[::8, ::8]]
    preds = [ev.gray_baseline(truths[0]), truths[1]]  # the second is reproduced exactly
    result = ev.evaluate_images(preds, truths)
    first = result["per_image"][0]
    assert result["mean"]["psnr"] == pytest.approx(first["psnr"])  # the exact image is left out
    assert result["delta"]["psnr"] == pytest.approx(0.0)  # ours equals gray on the first image
    assert "1 reproduced exactly" in ev.format_table(result)


def _gaussian_ssim(x, y, sigma=1.5):
    """SSIM as Wang et al. (2004) define it, written out: Gaussian-weighted means, variances, covariance."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for k in range(3):
        a, b = x[..., k].astype(np.float64), y[..., k].astype(np.float64)
        blur = lambda v: gaussian_filter(v, sigma, truncate=3.5)  # noqa: E731
        mu_a, mu_b = blur(a), blur(b)
        var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        scores.append(ssim_map[5:-5, 5:-5].mean())  # the border the window does not cover is left out
    return float(np.mean(scores))


def test_ssim_uses_the_gaussian_window_of_published_tables():
    true = data.astronaut()[::4, ::4]
    pred = ev.gray_baseline(true)
    expected = _gaussian_ssim(pred, true)
    assert ev.ssim(pred, true) == pytest.approx(expected, abs=1e-6)
    # The 7x7 uniform window with sample covariances (scikit-image's default) gives another figure.
    from skimage.metrics import structural_similarity

    uniform = structural_similarity(true, pred, channel_axis=-1, data_range=255)
    assert abs(uniform - expected) > 1e-3


def test_cf_ratio_over_a_set_is_a_ratio_of_means():
    vivid = data.astronaut()[::8, ::8]
    near_gray = ev.gray_baseline(vivid).astype(np.int16)
    near_gray[..., 0] += 1  # the faintest tint: colourfulness about 1
    near_gray = near_gray.clip(0, 255).astype(np.uint8)
    # Ours: half as colourful on the vivid photo, a vivid guess on the near-gray one.
    half = (0.5 * vivid + 0.5 * ev.gray_baseline(vivid)).astype(np.uint8)
    result = ev.evaluate_images([half, vivid], [vivid, near_gray])
    rows = result["per_image"]
    ratio = (rows[0]["cf_pred"] + rows[1]["cf_pred"]) / (rows[0]["cf_true"] + rows[1]["cf_true"])
    assert result["mean"]["cf_ratio"] == pytest.approx(ratio)
    assert 0.5 < ratio < 2  # the set as a whole is about as colourful as the truth
    per_image = (rows[0]["cf_ratio"] + rows[1]["cf_ratio"]) / 2
    assert result["mean"]["cf_ratio_per_image"] == pytest.approx(per_image)
    assert per_image > 10  # exploded by the near-gray photo
    assert result["delta"]["cf_ratio"] == pytest.approx(ratio - result["gray_mean"]["cf_ratio"])
    assert "cf_ratio_per_image" in ev.format_table(result)


def test_mse_ab_on_the_network_output_when_given():
    true = data.coffee()[::8, ::8]
    shown = ev.gray_baseline(true)
    wild = np.full(true.shape[:2] + (2,), 0.99)  # far outside the gamut: the display clips it
    true_ab = ev.scaled_ab(true)
    result = ev.evaluate_images([shown], [true], pred_abs=[wild])
    assert result["mse_ab_of"] == "network output"
    assert result["mean"]["mse_ab"] == pytest.approx(np.mean((wild - true_ab) ** 2))
    assert result["gray_mean"]["mse_ab"] == pytest.approx(np.mean(true_ab**2))
    displayed = ev.evaluate_images([shown], [true])
    assert displayed["mse_ab_of"] == "displayed colours"
    assert displayed["mean"]["mse_ab"] == pytest.approx(displayed["gray_mean"]["mse_ab"])
    assert "network output" in ev.format_table(result)


def test_evaluate_records_scores_the_network_output(small_records):
    from koala_utils.model import build_model

    records, _ = small_records
    model = build_model()
    kernel, _ = model.get_layer("decoder_ab").get_weights()
    model.get_layer("decoder_ab").set_weights([np.zeros_like(kernel), np.array([3.0, -3.0], np.float32)])
    result = ev.evaluate_records(model, records, limit=3)
    constant = np.array([np.tanh(3.0), -np.tanh(3.0)])  # the network's ab everywhere
    expected = np.mean([np.mean((constant - ev.scaled_ab(t)) ** 2) for t in result["images"]["truth"]])
    assert result["mse_ab_of"] == "network output"
    assert result["mean"]["mse_ab"] == pytest.approx(expected, rel=1e-5)


def test_vividness_curves_read_the_quality_report_and_plot():
    from matplotlib.figure import Figure

    from koala_utils.figures import plot_vividness, vividness_curves

    def row(cf, psnr):
        return [{"cf_ratio": cf, "psnr": psnr}, {"cf_ratio": 0.0, "psnr": 22.0}, 10]

    report = {"models": {
        "paper": {"sets": {"val": {"ab x2": row(0.8, 21.0), "ab x1": row(0.4, 23.0)}}},
        "vivid": {"sets": {"val": {"T=0.2": row(0.75, 22.5), "T=1": row(0.66, 22.6), "T=0.6 no rebal.": row(0.3, 23.5),
                                   "removed 0.15 T=0.2 guard 1": row(0.9, 20.0), "T=0.2 mix 0.5": row(0.6, 22.9)}}},
    }}
    curves, gray = vividness_curves(report, "val")
    assert curves["paper"] == [(1.0, 0.4, 23.0), (2.0, 0.8, 21.0)]
    assert curves["vivid"] == [(0.2, 0.75, 22.5), (1.0, 0.66, 22.6)]
    assert curves["unbalanced"] == [(0.6, 0.3, 23.5)]
    assert curves["mix"] == [(0.0, 0.4, 23.0), (0.5, 0.6, 22.9), (1.0, 0.75, 22.5)]  # ends: ab x1 and T=0.2
    assert gray == 22.0
    assert vividness_curves(report, "absent") == ({"paper": [], "vivid": [], "unbalanced": [], "mix": []}, None)
    ax = Figure().subplots()
    plot_vividness(report, "val", ax)
    assert [len(line.get_xdata()) for line in ax.get_lines()] == [2, 2, 3, 1, 2]  # paper, vivid, mix, one x, gray
