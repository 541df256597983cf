"""The ``koala`` command line: prepare, train, evaluate, colorize.

This module is the argument parser and :func:`main`; what each subcommand
does is :mod:`koala_utils.commands`.

Exit codes: 0 success; 1 some inputs failed (the rest were processed);
2 bad usage or unusable arguments (missing folder, unreadable model);
3 training diverged.
"""

import argparse
import sys

from .classification import CAST_GUARD, TEMPERATURE  # numpy only
from .commands import (  # EXIT_* re-exported: tests and scripts read them from here
    EXIT_DIVERGED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    cmd_colorize,
    cmd_colorize_video,
    cmd_evaluate,
    cmd_export,
    cmd_merge,
    cmd_prepare,
    cmd_train,
    print_error,
)

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "EXIT_DIVERGED"]


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


def _add_decoding_args(p):
    """The vivid model's decoding knobs, the same for photos and videos."""
    p.add_argument("--temperature", type=float, default=None,
                   help="vivid model only: annealed-mean temperature, 1 = the distribution's mean, lower = "
                   f"bolder and patchier (default {TEMPERATURE:g})")
    p.add_argument("--cast-guard", type=float, default=None,
                   help="vivid model only: 0-1, how far each photo's average colour is pulled to the mean of the "
                   f"model's distribution without its class rebalancing, against a tint over the whole photo "
                   f"(default {CAST_GUARD:g}; 0 = off)")
    p.add_argument("--mix", type=float, default=None,
                   help="vivid model only: 0-1, mix its colour into the paper model's (both networks run): 0 = "
                   "paper's accurate, muted colour, 1 = vivid's alone; on ImageNet photos 0.1-0.3 dB more accurate "
                   "than --temperature at the same colourfulness (default: no mixing)")


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
    p.add_argument("--supervision-stride", type=int, default=None,
                   help="classification: train the head on one pixel of every S x S block (default: the "
                   "package's SUPERVISION_STRIDE; 1 supervises every pixel)")
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
    _add_decoding_args(p)
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
    p.add_argument("--model", default=None,
                   help="'paper' or 'vivid' (the shipped models), or a .keras file or run folder "
                   "(default: the shipped default)")
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
    p.add_argument("--agree", type=float, default=defaults.agree_sigma,
                   help="Lab units: where the new prediction differs from the carried colour by more, the new one "
                        f"wins (a change, not flicker); 0 carries colour regardless (default {defaults.agree_sigma:g})")
    p.add_argument("--cut-threshold", type=float, default=defaults.cut_threshold,
                   help=f"L-histogram distance (0-1) that marks a scene cut (default {defaults.cut_threshold})")
    p.add_argument("--fps", type=float, default=None, help="frame rate of a folder of frames (default 25)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (never the input)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar with frames/s)")
    _add_decoding_args(p)
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
        print_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
