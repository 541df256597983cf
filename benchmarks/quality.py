"""Quality of the shipped models against the gray baseline (ab = 0), and the vividness trade-off.

Sets, none trained on:

* ``selection``: the held-out 4 % of the training records (photos from the training sources, never trained on).
  Settings (the vivid model's temperature) are chosen here, never on the two test sets below;
* ``imagenet_val_1300``: 1300 ILSVRC2012 validation photos at 224 px (227 px photos white-padded; the padding is
  cropped away before scoring). Not the ctest10k or val-50k protocols of the published tables;
* ``prokudin_gorskii``: the 23 plates (1905-1915); aligned B, G, R exposures give the true colour; the model
  colorizes the gray version at full resolution.

For the ``vivid`` model every temperature in ``--temperatures`` is scored, and on the record sets also the
temperatures in ``--unbalanced`` with the rebalancing divided out of its distribution
(``classification.remove_rebalancing``: rows ``T=... no rebal.``); for the ``paper`` model, as the naive
baseline, its ab multiplied by each k in ``--boosts`` (clipped to the sRGB gamut by the conversion). Figures per
point: PSNR (RGB 0-255), SSIM (Gaussian window), CF ratio (mean colourfulness of the predictions over that of the
truths; the mean of per-image ratios as a second column), colour cast (mean over photos of |mean ab(pred) - mean
ab(truth)|, Lab units), MSE on scaled ab. Usage::

    python benchmarks/quality.py                       # both shipped models, all sets -> results/quality.json
    python benchmarks/quality.py --models vivid --sets selection --limit 300
    python benchmarks/quality.py --merge paper.json vivid.json     # one report from runs made in parallel
    python benchmarks/quality.py --models runs/vivid_s6p1/best.keras --sets selection --removed 0 0.2 0.3 \
        --json /tmp/fractions.json     # choose the export's --rebalancing-removed on the selection slice
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = Path(__file__).resolve().parent / ".cache"
RESULTS = Path(__file__).resolve().parent / "results"
SELECTION_RECORDS = ROOT.parent / "records" / "photos50k"
TEMPERATURES = (1.0, 0.6, 0.38, 0.2, 0.1)
BOOSTS = (1.0, 1.5, 2.0, 2.5, 3.0)
UNBALANCED = (1.0, 0.6)
COLUMNS = ("psnr", "ssim", "cf_ratio", "cf_ratio_per_image", "colour_cast", "mse_ab")


def val_records():
    """Records of imagenet_val_1300, every photo in the 'val' split (built once into benchmarks/.cache)."""
    from koala_utils import data

    photos = sorted((DATA / "imagenet_val_1300").glob("*.JPEG"))
    if not photos:
        raise SystemExit(f"no photos in {DATA / 'imagenet_val_1300'}: put the offline data at ../shared/data")
    out = CACHE / "imagenet_val_1300"
    data.prepare(photos, out, val_fraction=1.0, progress=False)
    return out


def settings_of(name, temperatures, boosts, unbalanced=(), removed=(), removed_temperatures=(), guards=(0.0,),
                mixes=(), mix_temperatures=()):
    """[(label, kind, value)]: temperatures for the vivid model, chroma boosts for the paper model.

    The vivid model's ``T=...`` rows decode as :class:`koala_utils.model.Predictor` does by default (with the
    colour cast guard at ``classification.CAST_GUARD``); ``T=... no rebal.`` rows divide all the rebalancing out,
    unguarded. ``removed``, ``removed_temperatures`` and ``guards``: every triple (fraction of the rebalancing
    divided out in all, as ``classification.adjust_rebalancing`` would export it; temperature; cast guard
    strength), value ``(fraction, T, guard)``. ``mixes`` and ``mix_temperatures``: rows ``T=... mix a``, the
    ``paper`` model's ab plus ``a`` times the vivid model's (default decoding at T) minus it, value ``(a, T)``.
    """
    if name == "vivid":
        return ([(f"T={t:g}", "temperature", t) for t in temperatures]
                + [(f"T={t:g} no rebal.", "unbalanced", t) for t in unbalanced]
                + [(f"T={t:g} removed {f:g} guard {g:g}", "removed", (f, t, g))
                   for f in removed for t in removed_temperatures for g in guards]
                + [(f"T={t:g} mix {a:g}", "mix", (a, t)) for t in mix_temperatures for a in mixes])
    return [(f"ab x{k:g}", "boost", k) for k in boosts]


def _decode(predictor, raw, h, w, kind, value, region=None, partner_ab=None):
    """ab of one setting (``region``: the photo's pixels on the logits' grid, for the cast guard; ``partner_ab``:
    the ``paper`` model's ab for the same photos, for ``mix`` rows)."""
    from koala_utils.classification import decode_logits, remove_rebalancing
    from koala_utils.colorize import mix_ab

    if kind == "mix":
        amount, t = value
        return mix_ab(partner_ab[:, :h, :w], predictor.decode(raw, h, w, t, region), amount)
    if kind == "unbalanced":
        return predictor.decode(remove_rebalancing(raw, predictor.prior, kept=predictor.kept), h, w, value,
                                cast_guard=0.0)
    if kind == "removed":  # the logits hold `kept` of log w: divide `fraction` of the whole out, in all
        fraction, t, guard = value
        shifted = remove_rebalancing(raw, predictor.prior, kept=fraction - (1.0 - predictor.kept))
        ab = decode_logits(shifted, t, predictor.bins, predictor.prior, 1.0 - fraction, guard, region)
        return ab.repeat(2, axis=1).repeat(2, axis=2)[:, :h, :w]  # as Predictor.decode upsamples and crops
    if kind == "temperature":
        return predictor.decode(raw, h, w, value, region)
    return predictor.decode(raw, h, w) * value


def score(preds, truths, grays, pred_abs):
    """Means of every column for one setting (and of the gray baseline)."""
    from koala_utils.evaluate import evaluate_images
    from koala_utils.metrics import colour_cast

    result = evaluate_images(preds, truths, grays=grays, pred_abs=pred_abs)
    mean = {k: result["mean"][k] for k in COLUMNS if k in result["mean"]}
    gray = {k: result["gray_mean"][k] for k in COLUMNS if k in result["gray_mean"]}
    mean["colour_cast"] = float(np.mean([colour_cast(p, t) for p, t in zip(preds, truths, strict=True)]))
    gray["colour_cast"] = float(np.mean([colour_cast(g, t) for g, t in zip(grays, truths, strict=True)]))
    mean["psnr_minus_gray"] = result["delta"]["psnr"]
    return mean, gray, len(preds)


def records_sweep(model, records_dir, split, settings, limit=None, batch_size=16, partner=None):
    """Score every setting on a record split: the network runs once per batch, each setting decodes its output
    (``partner``: the ``paper`` model, run as well; pass it only when some setting mixes its ab in)."""
    from koala_utils.classification import logit_region
    from koala_utils.color import lab_scaled_to_rgb, lightness, scale_l
    from koala_utils.data import load_arrays
    from koala_utils.metrics import gray_baseline
    from koala_utils.model import Predictor, pad_to_multiple

    arrays = load_arrays(records_dir, split, limit=limit)
    predictor = Predictor(model)
    partner = None if partner is None else Predictor(partner)
    truths, grays = [], []
    preds = {label: [] for label, _, _ in settings}
    abs_ = {label: [] for label, _, _ in settings}
    for start in range(0, len(arrays["names"]), batch_size):
        rgb = arrays["rgb"][start : start + batch_size]
        l_scaled = scale_l(lightness(rgb))[..., None]
        raw = predictor.raw(l_scaled, arrays["embedding"][start : start + batch_size])
        region = logit_region(pad_to_multiple(l_scaled.astype(np.float32)))
        partner_ab = None if partner is None else partner(l_scaled, arrays["embedding"][start : start + batch_size])
        decoded = {label: _decode(predictor, raw, rgb.shape[1], rgb.shape[2], kind, value, region, partner_ab)
                   for label, kind, value in settings}
        for k in range(len(rgb)):
            top, left, h, w = arrays["box"][start + k]
            crop = (slice(top, top + h), slice(left, left + w))
            truths.append(rgb[k][crop])
            grays.append(gray_baseline(rgb[k][crop]))
            for label, ab in decoded.items():
                preds[label].append(lab_scaled_to_rgb(l_scaled[k][crop], ab[k][crop]))
                abs_[label].append(ab[k][crop])
    return {label: score(preds[label], truths, grays, abs_[label]) for label in preds}


def plates_sweep(model, backbone, settings, limit=None, partner=None):
    """Score every setting on the Prokudin-Gorskii plates, colorized at full resolution (``partner``: the
    ``paper`` model, for ``mix`` rows)."""
    from koala_utils import historical
    from koala_utils.color import gray_and_lightness, lab_to_rgb_fast
    from koala_utils.colorize import predict_small_ab, upsample_ab
    from koala_utils.images import to_gray
    from koala_utils.metrics import gray_baseline

    truths = [historical.load_plate(p) for p in historical.plate_paths()[:limit]]
    grays = [gray_baseline(t) for t in truths]
    out = {}
    for label, kind, value in settings:
        preds = []
        for truth in truths:
            gray, full_l = gray_and_lightness(np.stack([to_gray(truth)] * 3, axis=-1))
            t = value if kind == "temperature" else value[1] if kind == "mix" else None
            mix = value[0] if kind == "mix" else None  # the mix as `koala colorize --mix` makes it
            ab, _ = predict_small_ab(gray, model, backbone, temperature=t, mix=mix, partner=partner)
            ab = ab * (value if kind == "boost" else 1.0)
            preds.append(lab_to_rgb_fast(full_l, upsample_ab(ab, *gray.shape)))
        out[label] = score(preds, truths, grays, None)
    return out


def format_table(title, rows):
    cols = ("psnr", "psnr_minus_gray", "ssim", "cf_ratio", "cf_ratio_per_image", "colour_cast")
    lines = [title, "  " + f"{'setting':<18}" + "".join(f"{c:>19}" for c in cols)]
    gray = None
    for label, (mean, gray_mean, count) in rows.items():
        lines.append("  " + f"{label:<18}" + "".join(f"{mean.get(c, float('nan')):>19.4f}" for c in cols))
        gray, n = gray_mean, count
    lines.append("  " + f"{'gray':<18}" + "".join(f"{gray.get(c, 0.0) if c != 'psnr_minus_gray' else 0.0:>19.4f}"
                                                   for c in cols))
    lines.append(f"  ({n} photos)")
    return "\n".join(lines)


SET_TITLES = {"selection": "selection slice (held-out training-source photos; settings chosen here)",
              "imagenet_val_1300": "ImageNet val, 1300 photos at 224 px", "prokudin_gorskii": "Prokudin-Gorskii plates"}


def markdown(report):
    """Markdown tables of a report: one per set, every model's settings as rows, the gray baseline last."""
    out = []
    for set_name, title in SET_TITLES.items():
        rows, gray = [], None
        for model, found in report["models"].items():
            for label, (mean, gray_mean, count) in found["sets"].get(set_name, {}).items():
                rows.append(f"| {model} | {label} | {mean['psnr']:.2f} | {mean['psnr_minus_gray']:+.2f} | "
                            f"{mean['ssim']:.4f} | {mean['cf_ratio']:.2f} | {mean['cf_ratio_per_image']:.2f} | "
                            f"{mean['colour_cast']:.2f} |")
                gray = (gray_mean, count)
        if not rows:
            continue
        g, count = gray
        out += [f"### {title} ({count} photos)", "",
                "| model | setting | PSNR | Δ gray | SSIM | CF ratio | CF ratio per image | colour cast |",
                "|---|---|---|---|---|---|---|---|", *rows,
                f"| gray | ab = 0 | {g['psnr']:.2f} | +0.00 | {g['ssim']:.4f} | {g['cf_ratio']:.2f} | "
                f"{g['cf_ratio_per_image']:.2f} | {g['colour_cast']:.2f} |", ""]
    return "\n".join(out)


def merge(paths, out_json):
    """Combine reports of separate runs (e.g. one per model, run in parallel) into one, with its markdown."""
    report = {"machine": None, "models": {}}
    for path in paths:
        part = json.loads(Path(path).read_text())
        report["machine"] = report["machine"] or part["machine"]
        report["models"].update(part["models"])
    Path(out_json).write_text(json.dumps(report, indent=1))
    Path(out_json).with_suffix(".md").write_text(markdown(report))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["paper", "vivid"], help="shipped names or .keras files")
    parser.add_argument("--sets", nargs="+", default=["selection", "imagenet_val_1300", "prokudin_gorskii"])
    parser.add_argument("--limit", type=int, default=None, help="first N photos of each set only")
    parser.add_argument("--selection-limit", type=int, default=400, help="photos of the selection slice")
    parser.add_argument("--selection-records", default=str(SELECTION_RECORDS))
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES))
    parser.add_argument("--boosts", type=float, nargs="+", default=list(BOOSTS))
    parser.add_argument("--unbalanced", type=float, nargs="*", default=list(UNBALANCED),
                        help="vivid: temperatures decoded with the rebalancing divided out (record sets only)")
    parser.add_argument("--removed", type=float, nargs="*", default=[],
                        help="vivid, record sets: also each fraction of the rebalancing divided out in all "
                        "(classification.adjust_rebalancing), at every --removed-temperatures")
    parser.add_argument("--removed-temperatures", type=float, nargs="+", default=[0.38, 0.2, 0.1])
    parser.add_argument("--guards", type=float, nargs="+", default=[0.0],
                        help="vivid, with --removed: cast guard strengths to score with each pair")
    parser.add_argument("--mixes", type=float, nargs="*", default=[],
                        help="vivid: also the paper model's ab plus each amount times (vivid's - paper's)")
    parser.add_argument("--mix-temperatures", type=float, nargs="+", default=[0.2],
                        help="vivid, with --mixes: the temperatures of the vivid ab that is mixed in")
    parser.add_argument("--json", default=str(RESULTS / "quality.json"))
    parser.add_argument("--merge", nargs="+", default=None, help="combine these reports into --json (and .md)")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.json)

    from koala_utils import pretrained
    from koala_utils.backbones import get_backbone
    from koala_utils.classification import is_classification
    from koala_utils.model import load_model

    backbone = get_backbone("efficientnet_lite0")
    report = {"machine": f"{platform.processor() or platform.machine()}, {platform.system()}", "models": {}}
    for name in args.models:
        model = pretrained.load(name) if name in pretrained.NAMES else load_model(name)
        kind = "vivid" if is_classification(model) else "paper"
        settings = settings_of(kind, args.temperatures, args.boosts, args.unbalanced, args.removed,
                               args.removed_temperatures, args.guards, args.mixes, args.mix_temperatures)
        partner = pretrained.load("paper") if any(s[1] == "mix" for s in settings) else None
        start, found = time.time(), {}
        for set_name in args.sets:
            if set_name == "selection":
                limit = min(args.limit or args.selection_limit, args.selection_limit)
                rows = records_sweep(model, args.selection_records, "val", settings, limit, partner=partner)
            elif set_name == "imagenet_val_1300":
                rows = records_sweep(model, val_records(), "val", settings, args.limit, partner=partner)
            else:
                rows = plates_sweep(model, backbone, [s for s in settings if s[1] not in ("unbalanced", "removed")],
                                    args.limit, partner)
            found[set_name] = rows
            print(format_table(f"{name} on {set_name}", rows), flush=True)
        report["models"][name] = {"seconds": round(time.time() - start, 1), "sets": found}
    Path(args.json).write_text(json.dumps(report, indent=1))
    Path(args.json).with_suffix(".md").write_text(markdown(report))
    return report


if __name__ == "__main__":
    main()
