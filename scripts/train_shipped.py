"""Train the model shipped in koala_utils/pretrained/ (issue 4), on this CPU, offline.

Phase 1 trains at 128 px (the net is fully convolutional, so this is ~3x cheaper),
phase 2 fine-tunes at the paper's 224 px. Both phases resume after interruption:
re-run the same command. Training data: ../shared/data/imagenet_sample_1000 minus
its gray photos; validation: ../shared/data/imagenet_val_1300 (never trained on).

    python scripts/train_shipped.py --tag reg      # the shipped model's recipe (the defaults)
    python scripts/train_shipped.py --tag reg --export runs/reg_224/best.keras   # float16 weights + card
"""

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def training_photos():
    folder = DATA / "imagenet_sample_1000"
    gray = set((folder / "GRAYSCALE_FILES.txt").read_text().split())
    return [p for p in sorted(folder.glob("*.JPEG")) if p.name not in gray]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs-128", type=int, default=30)
    parser.add_argument("--epochs-224", type=int, default=4)
    parser.add_argument("--lr-224", type=float, default=3e-4, help="fine-tuning learning rate at 224 px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--records", default=str(ROOT / "records"))
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    parser.add_argument("--embedding-dropout", type=float, default=0.5, help="augmentation, see data.load")
    parser.add_argument("--min-crop", type=float, default=0.5, help="smallest random crop side, see data.load")
    parser.add_argument("--tag", default="shipped", help="run folders are runs/<tag>_128 and runs/<tag>_224")
    parser.add_argument("--export", default=None, help="export this .keras checkpoint as the shipped model, and stop")
    args = parser.parse_args()
    if args.export:
        return export(Path(args.export), Path(args.runs), Path(args.records), args.tag)

    from koala_utils import data
    from koala_utils.model import load_model
    from koala_utils.train import train

    records = Path(args.records)
    train_dir, val_dir = records / "imagenet_sample_1000", records / "imagenet_val_1300"
    data.prepare(training_photos(), train_dir, val_fraction=0.0)
    val_photos = sorted((DATA / "imagenet_val_1300").glob("*.JPEG"))
    data.prepare(val_photos, val_dir, val_fraction=1.0)

    runs = Path(args.runs)
    common = dict(batch_size=args.batch_size, mixed_precision="bf16", val_records_dir=val_dir, verbose=2,
                  embedding_dropout=args.embedding_dropout, min_crop=args.min_crop)
    start = time.time()
    train(train_dir, runs / f"{args.tag}_128", epochs=args.epochs_128, image_size=128, validation_steps=10, **common)
    phase1 = time.time() - start
    best_128 = load_model(runs / f"{args.tag}_128" / "best.keras")
    train(train_dir, runs / f"{args.tag}_224", epochs=args.epochs_224, image_size=224, validation_steps=10,
          initial_model=best_128, learning_rate=args.lr_224, **common)
    summary = {"phase1_s": phase1, "total_s": time.time() - start}
    (runs / f"{args.tag}_timing.json").write_text(json.dumps(summary))
    print(summary)


def _config(run_dir):
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def export(checkpoint, runs, records, tag):
    """Write the checkpoint as float16 weights + card, after checking float16 keeps its predictions."""
    import platform

    import numpy as np

    from koala_utils import data, pretrained
    from koala_utils.model import Predictor, load_model
    from koala_utils.train import read_history

    model = load_model(checkpoint)
    timing = runs / f"{tag}_timing.json"
    history_128, history_224 = read_history(runs / f"{tag}_128"), read_history(runs / f"{tag}_224")
    epochs = f"{len(history_128.get('epoch', []))} epochs at 128 px"
    if history_224:
        epochs += f" + {len(history_224['epoch'])} at 224 px"
    card = {
        "summary": f"EfficientNet-Lite0 backbone, 975 ImageNet photos, best checkpoint of {epochs} "
        f"({checkpoint.parent.name}), CPU",
        "backbone": "efficientnet_lite0",
        "embed_dim": 1000,
        "checkpoint": str(checkpoint.relative_to(ROOT)) if checkpoint.is_relative_to(ROOT) else str(checkpoint),
        "train_data": "../shared/data/imagenet_sample_1000 minus its 25 gray photos (975)",
        "val_data": "../shared/data/imagenet_val_1300 (never trained on)",
        "config_128": _config(runs / f"{tag}_128"),
        "config_224": _config(runs / f"{tag}_224"),
        "history_128": history_128,
        "history_224": history_224,
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, no GPU",
        "timing": json.loads(timing.read_text()) if timing.exists() else {},
    }
    pretrained.export(model, card)
    shipped = pretrained.load()
    arrays = data.load_arrays(records / "imagenet_val_1300", "val", limit=32)
    from koala_utils.color import lightness, scale_l

    l_scaled = scale_l(lightness(arrays["rgb"]))[..., None]
    full, half = Predictor(model)(l_scaled, arrays["embedding"]), Predictor(shipped)(l_scaled, arrays["embedding"])
    drift = float(np.abs(full - half).max() * 127)
    card["float16_max_ab_drift"] = drift
    pretrained.CARD.write_text(json.dumps(card, indent=1))
    size = pretrained.WEIGHTS.stat().st_size / 1e6
    print(f"exported {checkpoint} -> {pretrained.WEIGHTS} ({size:.1f} MB); float16 vs float32: max |Δab| {drift:.3f}")


if __name__ == "__main__":
    main()
