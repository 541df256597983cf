"""The ``koala`` command line: prepare, train, evaluate, colorize.

Exit codes: 0 success; 1 some inputs failed (the rest were processed);
2 bad usage or unusable arguments (missing folder, unreadable model);
3 training diverged.
"""

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_DIVERGED = 0, 1, 2, 3


def _err(message):
    print(f"koala: error: {message}", file=sys.stderr)


def _load_model_arg(model_arg):
    """A shipped model by name ("paper", "vivid"; None: the default one), or a .keras file / run folder.

    Prints one line: which model, its backbone, where its card or config is. Returns (model, backbone name,
    the file the model came from). Refuses (``BackboneMismatchError``) a model that does not say which backbone
    it was trained with: nothing is assumed.
    """
    from . import backbone_record, pretrained

    if model_arg == "pretrained":
        model_arg = None
    if model_arg is None or model_arg in pretrained.NAMES:
        model, card = pretrained.load(model_arg, return_info=True)
        name = model_arg or pretrained.DEFAULT
        backbone, card_file = card.get("backbone"), pretrained.card_path(name)
        if not backbone:
            raise backbone_record.BackboneMismatchError(f"{card_file}: the card names no backbone")
        print(f"model: shipped '{name}' ({card.get('head', 'regression')} head, backbone {backbone}); "
              f"card: {card_file}", file=sys.stderr)
        return model, backbone, str(card_file)
    path = Path(model_arg)
    if path.is_dir():
        path = path / "best.keras" if (path / "best.keras").is_file() else path / "last.keras"
    model, backbone, source = backbone_record.load_file(path)
    print(f"model: {path} (backbone {backbone}, recorded in {source})", file=sys.stderr)
    return model, backbone, str(path)


def cmd_prepare(args):
    from .data import prepare

    source = Path(args.source)
    if not source.exists():
        _err(f"{source}: no such file or folder")
        return EXIT_USAGE
    manifest = prepare(
        source,
        args.out,
        backbone=args.backbone,
        size=args.size,
        shard_size=args.shard_size,
        val_fraction=args.val_fraction,
        shard_index=args.shard_index,
        num_shards=args.num_shards,
    )
    if args.num_shards > 1:
        print(f"worker {args.shard_index}/{args.num_shards} done; run `koala merge {args.out}` after all workers")
        return EXIT_OK
    return _report_prepare(manifest)


def _report_prepare(manifest):
    counts = manifest["counts"]
    print(
        f"records: {counts['train']} train, {counts['val']} val; skipped {counts['skipped_gray']} gray; "
        f"failed {counts['failed']}; {manifest['bytes_per_image'] / 1024:.1f} KB per image; "
        f"reused {manifest['reused_images']}"
    )
    for failure in manifest["failed"]:
        _err(failure["error"])
    return EXIT_PARTIAL if manifest["failed"] else EXIT_OK


def cmd_merge(args):
    from .data import ShardError, merge_manifests

    try:
        return _report_prepare(merge_manifests(args.out))
    except ShardError as exc:
        _err(str(exc))
        return EXIT_USAGE


def cmd_train(args):
    from .data import ShardError
    from .run_config import SettingsDriftError
    from .train import TrainingDivergedError, train

    strategy = None
    if args.strategy != "default":
        from .distribute import make_strategy

        try:
            strategy = make_strategy(args.strategy)
        except (ValueError, RuntimeError) as exc:  # no TF_CONFIG, no TPU
            _err(str(exc))
            return EXIT_USAGE
    try:
        _, history = train(
            args.records,
            args.run_dir,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            mixed_precision=args.mixed_precision,
            strategy=strategy,
            image_size=args.image_size,
            steps_per_epoch=args.steps_per_epoch,
            backup_every_steps=args.backup_every_steps,
            seed=args.seed,
            verbose=args.verbose,
            loss=args.loss,
            lr_decay=args.lr_decay,
            force=args.force,
        )
    except TrainingDivergedError as exc:
        _err(str(exc))
        return EXIT_DIVERGED
    except (ShardError, SettingsDriftError) as exc:  # a bad shard; a resume with other settings: named
        _err(str(exc))
        return EXIT_USAGE
    print(
        f"done: {len(history.get('epoch', []))} epochs; final loss {history['loss'][-1]:.5f}; "
        f"val_loss {history.get('val_loss', [float('nan')])[-1]:.5f}; models in {args.run_dir}"
    )
    return EXIT_OK


def cmd_evaluate(args):
    from . import backbone_record
    from .data import read_manifest
    from .evaluate import evaluate_records, format_table

    model, _, where = _load_model_arg(args.model)
    manifest = read_manifest(args.records)
    backbone_record.check(model, manifest["backbone"], manifest["embed_dim"], what=where,
                          against=f"the backbone of the records {args.records}")
    result = evaluate_records(model, args.records, split=args.split, limit=args.limit)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps({k: result[k] for k in ("mean", "gray_mean", "delta")}, indent=1))
    return EXIT_OK


def _colorize_engine(args):
    """(model, backbone) on the engine ``--engine`` picks: onnxruntime or Keras (see koala_utils.engine)."""
    from . import engine

    if engine.choose(getattr(args, "engine", "auto"), args.model) == "onnx":
        model, backbone = engine.load_onnx(args.model)
        print(f"model: {model.path} (onnx engine)", file=sys.stderr)
        return model, backbone
    try:
        from .backbones import get_backbone

        model, backbone_name, _ = _load_model_arg(args.model)
    except ImportError as exc:
        raise ImportError(f"the keras engine needs Keras and TensorFlow (pip install 'koalarization[tf-cpu]'): {exc}") \
            from exc
    return model, get_backbone(backbone_name)


def cmd_export(args):
    from .onnx_export import export

    try:
        model, backbone, _ = _load_model_arg(args.model)
        out, backbone_file = export(model, args.out, backbone=backbone, float16=args.float16, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(f"wrote {out} and {backbone_file} (run with: koala colorize PHOTOS -o OUT --model {out})")
    return EXIT_OK


def cmd_colorize(args):
    from .colorize import colorize_files
    from .images import list_images

    paths, empty = [], []
    for entry in args.inputs:
        entry = Path(entry)
        found = list_images(entry) if entry.is_dir() else [entry]
        paths.extend(found)
        empty += [] if found else [(str(entry), f"{entry}: folder holds no images")]
    if Path(args.output).exists() and not Path(args.output).is_dir():
        _err(f"{args.output}: the output must be a folder; this is an existing file")
        return EXIT_USAGE
    if not paths:
        _err("no input images")
        return EXIT_USAGE
    try:
        model, backbone = _colorize_engine(args)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    report = colorize_files(paths, args.output, model, backbone, args.size, args.overwrite,
                            temperature=args.temperature)
    print(f"colorized {len(report['written'])} of {len(paths)} into {args.output}")
    failed = report["failed"] + empty
    if failed:
        print(f"{len(failed)} failed:", file=sys.stderr)
        for _, reason in failed:
            print(f"  {reason}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_colorize_video(args):
    from .video import Settings, colorize_video
    from .video_io import VideoError

    source, output = Path(args.input), Path(args.output)
    if output.is_dir():
        output = output / f"{source.stem}_colorized.mp4"
    try:
        model, backbone = _colorize_engine(args)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    knobs = {"size": args.size, "batch": args.batch, "cut_threshold": args.cut_threshold}
    if args.per_frame:
        settings = Settings.per_frame(**knobs)
    else:
        settings = Settings(**knobs, embed_every=args.embed_every, embed_momentum=args.embed_momentum,
                            blend=args.blend)
    try:
        report = colorize_video(source, output, model, backbone, settings, fps=args.fps,
                                max_frames=args.max_frames, overwrite=args.overwrite, progress=not args.quiet)
    except (VideoError, FileExistsError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(f"{source} -> {report['output']}: {report['frames']} frames in {report['seconds']:.1f} s "
          f"({report['fps']:.1f} frames/s, {'per-frame' if args.per_frame else 'coherent'} mode)")
    return EXIT_OK


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (unless the help says it, or there is none); examples kept as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False or action.default == "==SUPPRESS==":
            return text
        return super()._get_help_string(action)


def _subcommand(sub, name, summary, example, description=None):
    """A subcommand whose --help shows the defaults and an example."""
    text = f"{description or summary[0].upper() + summary[1:] + '.'}\n\nexample:\n  {example}"
    return sub.add_parser(name, help=summary, description=text, formatter_class=_HelpFormatter)


def build_parser():
    parser = argparse.ArgumentParser(prog="koala", description="Deep Koalarization: colorize photos with Keras.",
                                     epilog="Each command's --help lists its options, defaults and an example.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _subcommand(sub, "prepare", "photos -> TFRecords with backbone embeddings",
                    "koala prepare ~/photos records/ --val-fraction 0.1")
    p.add_argument("source", help="folder of photos (searched recursively) or one photo")
    p.add_argument("out", help="output folder for shards and manifest.json")
    p.add_argument("--backbone", default="efficientnet_lite0", choices=["efficientnet_lite0", "inception_resnet_v2"],
                   help="ImageNet network whose logits are stored per photo (inception_resnet_v2 downloads 215 MB)")
    p.add_argument("--size", type=int, default=224, help="side of the stored white-padded photo, px")
    p.add_argument("--shard-size", type=int, default=500, help="photos per TFRecord shard")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share held out for validation (paper: 0.1)")
    p.add_argument("--shard-index", type=int, default=0, help="this worker's index (with --num-shards)")
    p.add_argument("--num-shards", type=int, default=1, help="number of independent workers")
    p.set_defaults(func=cmd_prepare)

    p = _subcommand(sub, "merge", "merge the workers' partial manifests",
                    "koala merge records/   # after every `koala prepare ... --num-shards N` worker is done")
    p.add_argument("out", help="the records folder the workers wrote into")
    p.set_defaults(func=cmd_merge)

    p = _subcommand(sub, "train", "train (resumes an interrupted run in the same RUN_DIR)",
                    "koala train records/ runs/first --epochs 10 --mixed-precision auto")
    p.add_argument("records", help="a records folder from `koala prepare`")
    p.add_argument("run_dir", help="where logs, backups and models go; an existing run there is resumed")
    p.add_argument("--epochs", type=int, default=10, help="total epochs, counting those already done")
    p.add_argument("--batch-size", type=int, default=100, help="per replica (paper: 100)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's learning rate (paper: 1e-3)")
    p.add_argument("--mixed-precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: fp16 on a GPU, bf16 on a CPU; the output layer stays float32")
    p.add_argument("--strategy", default="default", choices=["default", "mirrored", "multiworker", "tpu"],
                   help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    p.add_argument("--image-size", type=int, default=None,
                   help="train at this side, px, a multiple of 8 (default: the records' size)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="limit each epoch (default: the whole split)")
    p.add_argument("--backup-every-steps", type=int, default=None,
                   help="also save the resume point every N steps (default: at each epoch's end only)")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights, shuffling and augmentation")
    p.add_argument("--verbose", type=int, default=1, help="0 silent, 1 progress bar, 2 one line per epoch")
    p.add_argument("--loss", default="mse", choices=["mse", "classification"],
                   help="mse: the paper's head and loss; classification: the vivid head (Zhang et al. rebalanced "
                   "cross-entropy over ab bins)")
    p.add_argument("--lr-decay", action="store_true", help="cosine decay of the learning rate to a tenth")
    p.add_argument("--force", action="store_true",
                   help="resume RUN_DIR even with another records folder, image size, learning rate, loss or "
                   "backbone (recorded in config.json as a new phase)")
    p.set_defaults(func=cmd_train)

    p = _subcommand(sub, "evaluate", "metrics against the gray baseline",
                    "koala evaluate runs/first records/ --limit 200 --json scores.json")
    p.add_argument("model", help="a .keras file or a run folder; 'pretrained' for the shipped model")
    p.add_argument("records", help="a records folder from `koala prepare`")
    p.add_argument("--split", default="val", choices=["train", "val"], help="which split to score")
    p.add_argument("--limit", type=int, default=None, help="score the first N photos only (default: all)")
    p.add_argument("--json", default=None, help="also write the means to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = _subcommand(sub, "colorize", "colorize photos at full resolution",
                    "koala colorize old_photos/ grandma.jpg -o colour/ --model vivid")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder (inputs are never overwritten)")
    p.add_argument("--model", default=None,
                   help="'paper' or 'vivid' (the shipped models), or a .keras file or run folder "
                   "(default: the shipped default, see koala_utils.pretrained.DEFAULT)")
    p.add_argument("--temperature", type=float, default=None,
                   help="vivid model only: annealed-mean temperature, 1 = muted mean, lower = more vivid "
                   "(default 0.2)")
    p.add_argument("--size", type=int, default=224, help="network input side, px (the output keeps the photo's size)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never inputs)")
    p.add_argument("--engine", default="auto", choices=["auto", "onnx", "keras"],
                   help="onnx: onnxruntime, no TensorFlow; auto (default): onnx when the model has an ONNX file")
    p.set_defaults(func=cmd_colorize)

    defaults = _video_defaults()
    p = sub.add_parser(
        "colorize-video",
        help="colorize a video (keeps its frame rate and audio)",
        description="Colorize every frame of a video at full resolution into an H.264 MP4 with the source's frame "
        "rate and audio track. Default: the temporally coherent mode (smoothed embedding, colour carried along "
        "the optical flow). Example: koala colorize-video old_film.mp4 -o old_film_colour.mp4",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("input", help="a video file (MP4, AVI, MOV, MKV, GIF...) or a folder of numbered frames")
    p.add_argument("-o", "--output", required=True, help="output .mp4, or a folder (then IN_colorized.mp4 in it)")
    p.add_argument("--per-frame", action="store_true", help="colorize each frame on its own (the flickering baseline)")
    p.add_argument("--model", default=None, help="a .keras file or run folder (default: the shipped model)")
    p.add_argument("--size", type=int, default=defaults.size,
                   help=f"network input, longest side in px (default {defaults.size})")
    p.add_argument("--batch", type=int, default=defaults.batch,
                   help=f"frames per network call (default {defaults.batch})")
    p.add_argument("--embed-every", type=int, default=defaults.embed_every,
                   help=f"run the backbone on every N-th frame and on cuts (default {defaults.embed_every})")
    p.add_argument("--embed-momentum", type=float, default=defaults.embed_momentum,
                   help=f"weight of the past in the embedding's moving average (default {defaults.embed_momentum})")
    p.add_argument("--blend", type=float, default=defaults.blend,
                   help=f"weight of the colour carried along the flow where reliable, 0-1 (default {defaults.blend})")
    p.add_argument("--cut-threshold", type=float, default=defaults.cut_threshold,
                   help=f"L-histogram distance (0-1) that marks a scene cut (default {defaults.cut_threshold})")
    p.add_argument("--fps", type=float, default=None, help="frame rate of a folder of frames (default 25)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (never the input)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar with frames/s)")
    p.add_argument("--engine", default="auto", choices=["auto", "onnx", "keras"],
                   help="onnx: onnxruntime, no TensorFlow; auto (default): onnx when the model has an ONNX file")
    p.set_defaults(func=cmd_colorize_video)

    p = _subcommand(sub, "export", "write a model and its backbone as ONNX files",
                    "koala export pretrained koala.onnx --float16")
    p.add_argument("model", help="'pretrained', a shipped model's name, a .keras file or a run folder")
    p.add_argument("out", help="the colorizer's .onnx file; the backbone goes beside it as <backbone>.onnx")
    p.add_argument("--float16", action="store_true", help="store the weights as float16 (half the size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT file")
    p.set_defaults(func=cmd_export)
    return parser


def _video_defaults():
    from .video_settings import Settings  # not .video: building the parser must not need OpenCV or PyAV

    return Settings()


def main(argv=None):
    from .backbone_record import BackboneMismatchError

    args = build_parser().parse_args(argv)
    if getattr(args, "model", None) == "pretrained":
        args.model = None
    try:
        return args.func(args)
    except (FileNotFoundError, IsADirectoryError, BackboneMismatchError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
