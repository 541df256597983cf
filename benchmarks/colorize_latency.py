"""Colorize latency: one photo end to end at 512 x 512, 1024 x 1024 and 2000 x 1333, split by stage.

    python benchmarks/colorize_latency.py [--quick] [--profile]

Times ``colorize(path, model, backbone, return_timings=True)`` on JPEG files (so loading
and decoding count), median of several runs after warm-up. The stages: load (decode and
gray conversion), backbone (embedding), network (224 px prediction), merge (full
resolution L, ab upsampling, Lab -> RGB). The 2000 x 1333 photo is the bundled
solvay_conference_1927.jpg; the square ones are crops of it, resized.

Uses the shipped model when koala_utils.pretrained.available(), else a freshly built
network with random weights: the timing does not depend on the weights.
``--profile`` adds cProfile's top functions for the largest photo.
"""

import cProfile
import io
import pstats
import statistics
import time

import _common

STAGES = ("load", "backbone", "network", "merge")


def latency_photos():
    """(label, path) of the photos to time, written once to benchmarks/.cache."""
    from PIL import Image

    solvay = _common.require(_common.SOLVAY)
    folder = _common.CACHE / "colorize"
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(solvay) as img:
        full = img.convert("L")
    width, height = full.size
    side = min(width, height)
    square = full.crop(((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2))
    out = []
    for target in (512, 1024):
        path = folder / f"solvay_{target}x{target}.jpg"
        if not path.is_file():
            square.resize((target, target), Image.Resampling.LANCZOS).save(path, quality=95)
        out.append((f"{target} x {target}", path))
    out.append((f"{width} x {height} (solvay_conference_1927.jpg)", solvay))
    return out


def model_and_backbone():
    from koala_utils import backbones, pretrained
    from koala_utils.model import build_model

    if pretrained.available():
        model, what = pretrained.load(), "the shipped model"
    else:
        model, what = build_model(), "a freshly built model with random weights (timing does not depend on weights)"
    return model, backbones.get_backbone("efficientnet_lite0"), what


def time_photo(path, model, backbone, warmup, repeats):
    from koala_utils.colorize import colorize

    for _ in range(warmup):
        colorize(path, model, backbone)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        _, timings = colorize(path, model, backbone, return_timings=True)
        timings["total"] = time.perf_counter() - start
        runs.append(timings)
    return {key: statistics.median(r[key] for r in runs) for key in (*STAGES, "total")}, runs


def profile(path, model, backbone, top=15):
    from koala_utils.colorize import colorize

    prof = cProfile.Profile()
    prof.enable()
    colorize(path, model, backbone)
    prof.disable()
    stream = io.StringIO()
    pstats.Stats(prof, stream=stream).sort_stats("tottime").print_stats(top)
    return stream.getvalue()


def run(quick=False, do_profile=False):
    _common.quiet_tensorflow()
    photos = latency_photos()
    model, backbone, what = model_and_backbone()
    warmup, repeats = (1, 1) if quick else (2, 7)
    rows, figures, runs = [], {}, {}
    with _common.LoadMonitor() as load:
        for label, path in photos:
            med, all_runs = time_photo(path, model, backbone, warmup, repeats)
            rows.append([label] + [med[k] * 1000 for k in (*STAGES, "total")])
            key = label.split(" (")[0].replace(" ", "")
            figures[f"{key}_total_s"] = med["total"]
            runs[key] = all_runs
        report = profile(photos[-1][1], model, backbone) if do_profile else None
    largest = rows[-1][0]
    notes = [f"model: {what}; backbone EfficientNet-Lite0; network at 224 px",
             f"median of {repeats} runs after {warmup} warm-up runs; all stages in ms"]
    if report:
        notes.append("cProfile of the largest photo (tottime):\n\n```\n" + report.strip() + "\n```")
    big = figures[f"{photos[-1][0].split(' (')[0].replace(' ', '')}_total_s"]
    return {
        "name": "colorize_latency",
        "title": "Colorize latency per photo, by stage (ms)",
        "headers": ["photo", *STAGES, "total"],
        "rows": rows,
        "figures": {**figures, "largest_total_s": big},
        "runs": runs,
        "other_cores": load.other_cores,
        "targets": [] if quick else [_common.target(f"{largest} total seconds", big, "<=", 1.0)],
        "notes": notes,
        "software": _common.software(),
    }


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--profile", action="store_true", help="print cProfile's top functions for the largest photo")
    args = p.parse_args(argv)
    started = time.perf_counter()
    return _common.finish(run(args.quick, args.profile), args, started)


if __name__ == "__main__":
    main()
