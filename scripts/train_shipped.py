"""Train, resume and export the shipped models (`paper`, `vivid`) phase by phase, on this CPU, offline.

A phase is one call of koala_utils.train.train into runs/<model>_<phase>: it starts from the shipped weights
(`--init shipped`, the default: the last exported phase), from a checkpoint, or from nothing, and stops after
`--epochs` epochs or when `--minutes` run out (at an epoch's end). Re-running the same command resumes an
interrupted phase. `--export` writes a phase's best checkpoint as the shipped float16 weights and appends the phase
(data, steps, learning rate, size, wall time, validation loss) to the model's card, so the card holds every phase
of every session.

    # records of the training photos (scripts/training_photos.py), 4 % held out to select checkpoints and settings
    koala prepare ../photos ../records/photos50k --val-fraction 0.04
    python scripts/train_shipped.py --model paper --phase s2p1 --records ../records/photos50k --size 128 \\
        --lr 3e-4 --minutes 60
    python scripts/train_shipped.py --model vivid --phase s2p1 --records ../records/photos50k --size 128 \\
        --lr 5e-4 --minutes 60 --init paper      # the vivid head starts from the paper model's trunk
    python scripts/train_shipped.py --model paper --phase s2p1 --export
"""

import argparse
import json
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class TimeBudget:
    """A Keras callback factory: stop at an epoch's end when the next epoch would overrun ``minutes``."""

    @staticmethod
    def make(minutes):
        import keras

        class _Budget(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.start = self.last = time.time()

            def on_epoch_end(self, epoch, logs=None):
                now = time.time()
                if now + (now - self.last) > self.start + 60 * minutes:
                    print(f"time budget of {minutes} min reached: stopping after epoch {epoch + 1}")
                    self.model.stop_training = True
                self.last = now

        return _Budget()


def _initial_model(init, model_name):
    from koala_utils import pretrained
    from koala_utils.model import load_model

    if init in (None, "none"):
        return None
    if init == "shipped":
        init = model_name if pretrained.available(model_name) else "paper"
    if init in pretrained.NAMES:
        model = pretrained.load(init)
        removed = float(pretrained.info(init).get("rebalancing_removed", 0.0))
        if removed:  # resume from the head as trained, not from its export-time calibration
            from koala_utils.classification import adjust_rebalancing

            adjust_rebalancing(model, -removed)
            print(f"{init}: put back the {removed} of the class rebalancing its export divided out")
        return model
    return load_model(init)


def run_phase(args):
    from koala_utils.train import train

    run_dir = Path(args.runs) / f"{args.model}_{args.phase}"
    loss = "classification" if args.model == "vivid" else "mse"
    seed = phase_seed(args.model, args.phase) if args.seed is None else args.seed
    callbacks = [TimeBudget.make(args.minutes)] if args.minutes else []
    start = time.time()
    train(args.records, run_dir, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
          mixed_precision="bf16", image_size=args.size, steps_per_epoch=args.steps_per_epoch,
          validation_steps=args.validation_steps, embedding_dropout=args.embedding_dropout, min_crop=args.min_crop,
          initial_model=_initial_model(args.init, args.model), loss=loss, lr_decay=args.lr_decay, verbose=2,
          backup_every_steps=50, callbacks=callbacks, seed=seed, supervision_stride=args.supervision_stride)
    timing = run_dir / "wall_time.json"
    spent = time.time() - start + (json.loads(timing.read_text())["seconds"] if timing.exists() else 0)
    timing.write_text(json.dumps({"seconds": spent, "init": args.init}))


def phase_seed(model, phase):
    """The seed of a phase: different for every model and phase, so that a phase that stops after a part of an
    epoch's worth of photos does not see the same first photos, in the same order, as the phase before it."""
    return zlib.crc32(f"{model}/{phase}".encode()) % 2**31


def _relative(path):
    path = Path(path).resolve()
    for base in (ROOT, ROOT.parent):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return path.name


def _decoding(removed):
    """The vivid card's decoding settings: the package's T and cast guard, and the export's removed fraction."""
    from koala_utils.classification import CAST_GUARD, TEMPERATURE

    return {"temperature": TEMPERATURE, "cast_guard": CAST_GUARD, "rebalancing_removed": removed}


def export(args):
    """Write runs/<model>_<phase>/best.keras as the shipped model; append the phase to its card."""
    import platform

    import numpy as np

    from koala_utils import data, pretrained
    from koala_utils.color import lightness, scale_l
    from koala_utils.model import Predictor, load_model
    from koala_utils.train import read_history

    run_dir = Path(args.runs) / f"{args.model}_{args.phase}"
    checkpoint = run_dir / "best.keras"
    model = load_model(checkpoint)
    removed = args.rebalancing_removed if args.model == "vivid" else 0.0
    if removed:
        from koala_utils.classification import adjust_rebalancing

        adjust_rebalancing(model, removed)
    config = json.loads((run_dir / "config.json").read_text())
    history = read_history(run_dir)
    timing = json.loads((run_dir / "wall_time.json").read_text()) if (run_dir / "wall_time.json").exists() else {}
    manifest = data.read_manifest(config["records_dir"])
    card = pretrained.info(args.model) if pretrained.available(args.model) else {}
    phase = {
        "phase": args.phase,
        "run": _relative(run_dir),
        "init": _relative(timing["init"]) if Path(str(timing.get("init"))).suffix == ".keras" else timing.get("init"),
        "records": _relative(config["records_dir"]),
        "train_photos": manifest["counts"]["train"],
        "val_photos_for_selection": manifest["counts"]["val"],
        "image_size": config["image_size"],
        "batch_size": config["batch_size"],
        "learning_rate": config["learning_rate"],
        "lr_decay": config.get("lr_decay", False),
        "supervision_stride": config.get("supervision_stride", 1),
        "seed": config.get("seed"),
        "embedding_dropout": config["embedding_dropout"],
        "min_crop": config["min_crop"],
        "epochs": len(history.get("epoch", [])),
        "steps_per_epoch": args.steps_per_epoch,
        "wall_time_min": round(timing.get("seconds", 0) / 60, 1),
        "history": history,
        "best_val_loss": min(history.get("val_loss", [float("nan")])),
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, no GPU, shared with other jobs",
    }
    phases = [p for p in card.get("phases", []) if p.get("phase") != args.phase] + [phase]
    head = "classification" if args.model == "vivid" else "regression"
    card = {
        "name": args.model,
        "summary": args.summary or card.get("summary", ""),
        "backbone": config["backbone"],
        "embed_dim": config["embed_dim"],
        "head": head,
        "train_data": "data/training_manifest.csv (scripts/training_photos.py); checkpoints and settings "
        "chosen on the records' held-out 4 %, never on imagenet_val_1300",
        **({"num_bins": int(model.output_shape[-1]), **_decoding(removed)} if head == "classification" else {}),
        "phases": phases,
        "earlier": card.get("earlier", card.get("history_128") and {"summary": card.get("summary")}),
    }
    pretrained.export(model, card, pretrained.weights_path(args.model), pretrained.card_path(args.model))
    shipped = pretrained.load(args.model)
    arrays = data.load_arrays(config["records_dir"], "val", limit=32)
    l_scaled = scale_l(lightness(arrays["rgb"]))[..., None]
    full = Predictor(model)(l_scaled, arrays["embedding"])
    half = Predictor(shipped)(l_scaled, arrays["embedding"])
    card["float16_max_ab_drift"] = float(np.abs(full - half).max() * 127)
    pretrained.card_path(args.model).write_text(json.dumps(card, indent=1))
    size = pretrained.weights_path(args.model).stat().st_size / 1e6
    print(f"exported {checkpoint} -> {pretrained.weights_path(args.model)} ({size:.1f} MB); "
          f"float16 vs float32: max |Δab| {card['float16_max_ab_drift']:.3f}")


def recalibrate(args):
    """Move the shipped vivid model's export-time calibration to ``--recalibrate`` (the fraction of the class
    rebalancing divided out of its logits' bias), without training: the weights are the shipped ones, only the
    bias changes (classification.adjust_rebalancing by the difference). Recorded in the card's "calibrations"."""
    import datetime

    from koala_utils import pretrained
    from koala_utils.classification import adjust_rebalancing

    if args.model != "vivid":
        raise SystemExit("--recalibrate applies to the vivid model only")
    model, card = pretrained.load(args.model, return_info=True)
    before = float(card.get("rebalancing_removed", 0.0))
    adjust_rebalancing(model, args.recalibrate - before)
    card.update(_decoding(args.recalibrate))
    card.setdefault("calibrations", []).append({
        "date": datetime.date.today().isoformat(), **_decoding([before, args.recalibrate]),
        "why": args.summary or ""})
    pretrained.export(model, card, pretrained.weights_path(args.model), pretrained.card_path(args.model))
    print(f"{args.model}: rebalancing removed {before} -> {args.recalibrate}; "
          f"T {card['temperature']}, cast guard {card['cast_guard']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=["paper", "vivid"])
    parser.add_argument("--phase", help="phase name; the run folder is runs/<model>_<phase> (all but --recalibrate)")
    parser.add_argument("--records", default=str(ROOT.parent / "records" / "photos50k"))
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    parser.add_argument("--size", type=int, default=128, help="training side in pixels (multiple of 8)")
    parser.add_argument("--epochs", type=int, default=100, help="at most this many epochs")
    parser.add_argument("--steps-per-epoch", type=int, default=150, help="steps between validations/checkpoints")
    parser.add_argument("--validation-steps", type=int, default=16, help="validation batches (held-out photos)")
    parser.add_argument("--minutes", type=float, default=None, help="stop at the epoch's end that would overrun")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lr-decay", action="store_true", help="cosine decay over the phase's epochs")
    parser.add_argument("--supervision-stride", type=int, default=None,
                        help="vivid: train the head on one pixel of every S x S block (default: the package's)")
    parser.add_argument("--embedding-dropout", type=float, default=0.2)
    parser.add_argument("--min-crop", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=None, help="shuffling and augmentation seed (default: from "
                        "the model and phase names, so each phase sees the photos in a new order)")
    parser.add_argument("--init", default="shipped", help="shipped | paper | vivid | none | a .keras file")
    parser.add_argument("--export", action="store_true", help="export this phase's best checkpoint, and stop")
    parser.add_argument("--summary", default=None, help="with --export: the card's one-line summary")
    parser.add_argument("--rebalancing-removed", type=float, default=0.0,
                        help="with --export, vivid: the fraction of the class rebalancing divided out of the logits' "
                        "bias (classification.adjust_rebalancing; chosen on the selection slice)")
    parser.add_argument("--recalibrate", type=float, default=None, metavar="REMOVED",
                        help="vivid: set the shipped model's --rebalancing-removed to this, without training, and "
                        "stop (with --summary: why, for the card)")
    args = parser.parse_args(argv)
    if args.recalibrate is not None:
        return recalibrate(args)
    if not args.phase:
        parser.error("--phase is required")
    return export(args) if args.export else run_phase(args)


if __name__ == "__main__":
    main()
