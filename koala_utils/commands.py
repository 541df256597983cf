"""What each ``koala`` subcommand does, once :mod:`koala_utils.cli` has parsed its arguments.

Each ``cmd_*`` function takes the parsed ``argparse.Namespace`` and returns the
exit code: 0 success; 1 some inputs failed (the rest were processed); 2 bad
usage or unusable arguments (missing folder, unreadable model, a model whose
backbone is unknown or does not match); 3 training diverged. Errors are one
line on stderr that names the input. The heavy libraries are imported inside
the functions, so ``koala --help`` and the onnx engine start without them.
"""

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_DIVERGED = 0, 1, 2, 3


def print_error(message):
    print(f"koala: error: {message}", file=sys.stderr)


def _load_model_arg(model_arg):
    """A shipped model by name ("paper", "vivid"; None: the default one), or a .keras file / run folder.

    Prints one line: which model, its backbone, where its card or config is. Returns (model, backbone name,
    the file the model came from). Refuses (``BackboneMismatchError``) a model that does not say which backbone
    it was trained with: nothing is assumed (:func:`koala_utils.engine.resolve_keras`).
    """
    from .engine import resolve_keras

    model, backbone, where, description = resolve_keras(model_arg)
    print(f"model: {description}", file=sys.stderr)
    return model, backbone, where


def cmd_prepare(args):
    from .data import prepare

    source = Path(args.source)
    if not source.exists():
        print_error(f"{source}: no such file or folder")
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
        print_error(failure["error"])
    return EXIT_PARTIAL if manifest["failed"] else EXIT_OK


def cmd_merge(args):
    from .data import ShardError, merge_manifests

    try:
        return _report_prepare(merge_manifests(args.out))
    except ShardError as exc:
        print_error(str(exc))
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
            print_error(str(exc))
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
            supervision_stride=args.supervision_stride,
            lr_decay=args.lr_decay,
            force=args.force,
        )
    except TrainingDivergedError as exc:
        print_error(str(exc))
        return EXIT_DIVERGED
    except (ShardError, SettingsDriftError) as exc:  # a bad shard; a resume with other settings: named
        print_error(str(exc))
        return EXIT_USAGE
    print(
        f"done: {len(history.get('epoch', []))} epochs; final loss {history['loss'][-1]:.5f}; "
        f"val_loss {history.get('val_loss', [float('nan')])[-1]:.5f}; models in {args.run_dir}"
    )
    return EXIT_OK


def cmd_evaluate(args):
    from .evaluate import evaluate_records, format_table

    model, _, where = _load_model_arg(args.model)
    result = evaluate_records(model, args.records, split=args.split, limit=args.limit, what=where)
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
        print_error(str(exc))
        return EXIT_USAGE
    print(f"wrote {out} and {backbone_file} (run with: koala colorize PHOTOS -o OUT --model {out})")
    return EXIT_OK


def _mix_partner(args, model):
    """The shipped ``paper`` model, on the same engine, when ``--mix`` asks for it; else None."""
    from .colorize import has_classification_head

    if args.mix is None:
        return None
    if not has_classification_head(model):
        name = args.model or "the default model"
        raise ValueError(f"--mix mixes a vivid (classification) model's colour into paper's; {name} is a "
                         "regression model (use --model vivid)")
    partner, _ = _colorize_engine(argparse.Namespace(**{**vars(args), "model": "paper"}))
    return partner


def _decoding_problem(args):
    """What is wrong with the decoding knobs (--temperature, --cast-guard, --mix), or None."""
    if args.temperature is not None and not args.temperature > 0:
        return f"--temperature must be > 0, got {args.temperature}"
    if args.cast_guard is not None and not 0.0 <= args.cast_guard <= 1.0:
        return f"--cast-guard must be in [0, 1], got {args.cast_guard}"
    if args.mix is not None and not 0.0 <= args.mix <= 1.0:
        return f"--mix must be in [0, 1], got {args.mix}"
    return None


def cmd_colorize(args):
    from .colorize import colorize_files
    from .images import list_images

    problem = _decoding_problem(args)
    if problem:
        print_error(problem)
        return EXIT_USAGE
    paths, empty = [], []
    for entry in args.inputs:
        entry = Path(entry)
        found = list_images(entry) if entry.is_dir() else [entry]
        paths.extend(found)
        empty += [] if found else [(str(entry), f"{entry}: folder holds no images")]
    if Path(args.output).exists() and not Path(args.output).is_dir():
        print_error(f"{args.output}: the output must be a folder; this is an existing file")
        return EXIT_USAGE
    if not paths:
        print_error("no input images")
        return EXIT_USAGE
    try:
        model, backbone = _colorize_engine(args)
        partner = _mix_partner(args, model)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print_error(str(exc))
        return EXIT_USAGE
    report = colorize_files(paths, args.output, model, backbone, args.size, args.overwrite,
                            temperature=args.temperature, cast_guard=args.cast_guard, mix=args.mix, partner=partner)
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
    problem = _decoding_problem(args)
    if problem:
        print_error(problem)
        return EXIT_USAGE
    try:
        model, backbone = _colorize_engine(args)
        partner = _mix_partner(args, model)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print_error(str(exc))
        return EXIT_USAGE
    knobs = {"size": args.size, "batch": args.batch, "cut_threshold": args.cut_threshold}
    if args.per_frame:
        settings = Settings.per_frame(**knobs)
    else:
        settings = Settings(**knobs, embed_every=args.embed_every, embed_momentum=args.embed_momentum,
                            blend=args.blend, agree_sigma=args.agree)
    try:
        report = colorize_video(source, output, model, backbone, settings, fps=args.fps,
                                max_frames=args.max_frames, overwrite=args.overwrite, progress=not args.quiet,
                                temperature=args.temperature, cast_guard=args.cast_guard, mix=args.mix,
                                partner=partner)
    except (VideoError, FileExistsError) as exc:
        print_error(str(exc))
        return EXIT_USAGE
    print(f"{source} -> {report['output']}: {report['frames']} frames in {report['seconds']:.1f} s "
          f"({report['fps']:.1f} frames/s, {'per-frame' if args.per_frame else 'coherent'} mode)")
    return EXIT_OK
