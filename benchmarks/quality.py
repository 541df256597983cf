"""Quality of the shipped model against the gray baseline (ab = 0).

Two sets, both never trained on:

* ``imagenet_val_1300``: 1300 ILSVRC2012 validation photos at 224 px (padding cropped away before scoring);
* the 23 Prokudin-Gorskii plates (1905-1915): aligned B, G, R exposures give the true colour; the model colorizes
  the gray version at full resolution.

Prints mean PSNR (RGB 0-255), SSIM, CF ratio and ΔCF (Hasler-Süsstrunk colourfulness), MSE on scaled ab, for the
model and the gray baseline, and the difference. Usage::

    python benchmarks/quality.py            # the shipped model
    python benchmarks/quality.py --model runs/mine/best.keras --limit 200 --json out.json
"""

import argparse
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = Path(__file__).resolve().parent / ".cache"
METRICS = ("psnr", "ssim", "mse_ab", "cf_ratio", "delta_cf")


def val_records(limit=None):
    """Records of imagenet_val_1300, every photo in the 'val' split (built once into benchmarks/.cache)."""
    from koala_utils import data

    photos = sorted((DATA / "imagenet_val_1300").glob("*.JPEG"))
    if not photos:
        raise SystemExit(f"no photos in {DATA / 'imagenet_val_1300'}: put the offline data at ../shared/data")
    out = CACHE / "imagenet_val_1300"
    data.prepare(photos, out, val_fraction=1.0, progress=False)
    return out


def plate_set(model, backbone, limit=None):
    """(preds, truths, names) for the Prokudin-Gorskii plates."""
    from koala_utils import historical
    from koala_utils.colorize import colorize
    from koala_utils.images import to_gray

    preds, truths, names = [], [], []
    for path in historical.plate_paths()[:limit]:
        truth = historical.load_plate(path)
        preds.append(colorize(to_gray(truth), model, backbone))
        truths.append(truth)
        names.append(path.stem)
    return preds, truths, names


def summarise(result):
    """{metric: (ours, gray, ours - gray)} from evaluate_images' output."""
    rows = {}
    for m in METRICS:
        ours, gray = result["mean"][m], result["gray_mean"][m]
        rows[m] = (ours, gray, result["delta"].get(m, ours - gray))
    return rows


def format_rows(title, summary, count):
    lines = [f"{title} ({count} photos)", f"  {'metric':<10}{'ours':>10}{'gray':>10}{'ours-gray':>11}"]
    for metric, (ours, gray, diff) in summary.items():
        lines.append(f"  {metric:<10}{ours:>10.4f}{gray:>10.4f}{diff:>+11.4f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a .keras file (default: the shipped model)")
    parser.add_argument("--limit", type=int, default=None, help="first N validation photos only")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    from koala_utils import pretrained
    from koala_utils.backbones import get_backbone
    from koala_utils.evaluate import evaluate_images, evaluate_records
    from koala_utils.model import load_model

    model = load_model(args.model) if args.model else pretrained.load()
    name = args.model or "shipped model (koala_utils/pretrained)"
    backbone = get_backbone("efficientnet_lite0")
    start = time.time()
    val = evaluate_records(model, val_records(), "val", limit=args.limit)
    plates = evaluate_images(*plate_set(model, backbone))
    report = {
        "model": name,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "imagenet_val_1300": {"count": len(val["per_image"]), **summarise(val)},
        "prokudin_gorskii": {"count": len(plates["per_image"]), **summarise(plates)},
        "seconds": round(time.time() - start, 1),
    }
    print(f"Quality of the {name} against the gray baseline (ab = 0)")
    print(format_rows("ImageNet val, 224 px", summarise(val), len(val["per_image"])))
    print(format_rows("Prokudin-Gorskii plates, full resolution, aligned truth", summarise(plates),
                      len(plates["per_image"])))
    print(f"({report['seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
