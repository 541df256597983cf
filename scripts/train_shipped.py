"""Train the model shipped in koala_utils/pretrained/ (issue 4), on this CPU, offline.

Phase 1 trains at 128 px (the net is fully convolutional, so this is ~3x cheaper),
phase 2 fine-tunes at the paper's 224 px. Both phases resume after interruption:
re-run the same command. Training data: ../shared/data/imagenet_sample_1000 minus
its gray photos; validation: ../shared/data/imagenet_val_1300 (never trained on).

    python scripts/train_shipped.py --epochs-128 20 --epochs-224 4
    python scripts/train_shipped.py --export   # write the float16 weights + card data
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
    parser.add_argument("--epochs-128", type=int, default=20)
    parser.add_argument("--epochs-224", type=int, default=4)
    parser.add_argument("--lr-224", type=float, default=3e-4, help="fine-tuning learning rate at 224 px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--records", default=str(ROOT / "records"))
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    args = parser.parse_args()

    from koala_utils import data
    from koala_utils.model import load_model
    from koala_utils.train import train

    records = Path(args.records)
    train_dir, val_dir = records / "imagenet_sample_1000", records / "imagenet_val_1300"
    data.prepare(training_photos(), train_dir, val_fraction=0.0)
    val_photos = sorted((DATA / "imagenet_val_1300").glob("*.JPEG"))
    data.prepare(val_photos, val_dir, val_fraction=1.0)

    runs = Path(args.runs)
    common = dict(batch_size=args.batch_size, mixed_precision="bf16", val_records_dir=val_dir, verbose=2)
    start = time.time()
    train(train_dir, runs / "shipped_128", epochs=args.epochs_128, image_size=128, validation_steps=10, **common)
    phase1 = time.time() - start
    best_128 = load_model(runs / "shipped_128" / "best.keras")
    train(train_dir, runs / "shipped_224", epochs=args.epochs_224, image_size=224, validation_steps=10,
          initial_model=best_128, learning_rate=args.lr_224, **common)
    summary = {"phase1_s": phase1, "total_s": time.time() - start}
    (runs / "shipped_timing.json").write_text(json.dumps(summary))
    print(summary)


if __name__ == "__main__":
    main()
