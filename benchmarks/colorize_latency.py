"""Colorize latency: one photo end to end at 512 x 512, 1024 x 1024 and 2000 x 1333, split by stage.

    python benchmarks/colorize_latency.py [--quick] [--profile] [--env-size]

Times ``colorize(path, model, backbone, return_timings=True)`` on JPEG files (so loading
and decoding count), median of several runs after warm-up. The stages: load (decode and
gray conversion), backbone (embedding), network (224 px prediction), merge (full
resolution L, ab upsampling, Lab -> RGB). The 2000 x 1333 photo is the bundled
solvay_conference_1927.jpg; the square ones are crops of it, resized.

Uses the shipped model when koala_utils.pretrained.available(), else a freshly built
network with random weights: the timing does not depend on the weights.
``--profile`` adds cProfile's top functions for the largest photo.

The two engines (koala_utils.engine), side by side in the same run: warm latency of
the onnx engine (onnxruntime) against Keras at each size, runs interleaved; and the
cold start of ``koala colorize`` on the 2000 x 1333 photo, process start to PNG
written, for ``--engine onnx`` and ``--engine keras`` alternately. ``--env-size``
also measures fresh venvs with the ``colorize`` and the full ``tf-cpu,video`` extras (from PyPI;
benchmarks/install_size.py, which also runs alone).
"""

import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
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


def time_engines(path, pairs, warmup, repeats):
    """Median seconds per photo for each engine, the runs interleaved: {engine: seconds}."""
    from koala_utils.colorize import colorize

    for _ in range(warmup):
        for model, backbone in pairs.values():
            colorize(path, model, backbone)
    times = {name: [] for name in pairs}
    for _ in range(repeats):
        for name, (model, backbone) in pairs.items():
            start = time.perf_counter()
            colorize(path, model, backbone)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def cold_start(photo, repeats, warmup=1):
    """Median seconds from process start to PNG written, ``koala colorize --engine E``: {engine: seconds}."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(_common.ROOT)}
    times = {"onnx": [], "keras": []}
    with tempfile.TemporaryDirectory(prefix="koala_cold_") as out:
        for index in range(warmup + repeats):
            for name in times:  # alternate, so that both see the same background load
                cmd = [sys.executable, "-m", "koala_utils.cli", "colorize", str(photo), "-o", out, "--overwrite",
                       "--engine", name]
                start = time.perf_counter()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                seconds = time.perf_counter() - start
                if proc.returncode != 0:
                    raise RuntimeError(f"koala colorize --engine {name} failed: {proc.stderr[-2000:]}")
                if index >= warmup:
                    times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def env_sizes():
    """MB of fresh venvs with ``.[colorize]`` and the full ``.[tf-cpu,video]`` (install_size.py), both ways."""
    import install_size

    sizes = install_size.measure()
    light, full = sizes[install_size.LIGHT], sizes[install_size.FULL]
    return {"colorize_mb": light["files_mb"], "full_mb": full["files_mb"],
            "ratio": light["files_mb"] / full["files_mb"], "colorize_du_mb": light["du_mb"],
            "full_du_mb": full["du_mb"], "ratio_du": light["du_mb"] / full["du_mb"]}


def profile(path, model, backbone, top=15):
    from koala_utils.colorize import colorize

    prof = cProfile.Profile()
    prof.enable()
    colorize(path, model, backbone)
    prof.disable()
    stream = io.StringIO()
    pstats.Stats(prof, stream=stream).sort_stats("tottime").print_stats(top)
    return stream.getvalue()


def run(quick=False, do_profile=False, do_env_size=False):
    _common.quiet_tensorflow()
    from koala_utils import engine

    photos = latency_photos()
    model, backbone, what = model_and_backbone()
    onnx_ready = engine.choose("auto", None) == "onnx"
    pairs = {"keras": (model, backbone)}
    if onnx_ready:
        pairs["onnx"] = engine.load_onnx(None)
    warmup, repeats = (1, 1) if quick else (2, 7)
    rows, figures, runs, engine_rows = [], {}, {}, []
    with _common.LoadMonitor() as load:
        for label, path in photos:
            med, all_runs = time_photo(path, model, backbone, warmup, repeats)
            rows.append([label] + [med[k] * 1000 for k in (*STAGES, "total")])
            key = label.split(" (")[0].replace(" ", "")
            figures[f"{key}_total_s"] = med["total"]
            runs[key] = all_runs
            if onnx_ready:
                both = time_engines(path, pairs, warmup, repeats)
                figures[f"{key}_onnx_over_keras"] = both["onnx"] / both["keras"]
                engine_rows.append(f"| {label} | {both['keras'] * 1000:.0f} | {both['onnx'] * 1000:.0f} | "
                                   f"{both['onnx'] / both['keras']:.2f} |")
        report = profile(photos[-1][1], model, backbone) if do_profile else None
        cold = cold_start(photos[-1][1], 1 if quick else 3, warmup=0 if quick else 1) if onnx_ready else None
    sizes = env_sizes() if do_env_size else None
    largest = rows[-1][0]
    notes = [f"model: {what}; backbone EfficientNet-Lite0; network at 224 px",
             f"median of {repeats} runs after {warmup} warm-up runs; all stages in ms"]
    targets = [] if quick else [_common.target(f"{largest} total seconds", big_total(figures, photos), "<=", 1.0)]
    if onnx_ready:
        notes.append("warm latency by engine, the runs interleaved (ms, median):\n\n| photo | keras | onnx | "
                     "onnx / keras |\n|---|---|---|---|\n" + "\n".join(engine_rows))
        figures.update(cold_keras_s=cold["keras"], cold_onnx_s=cold["onnx"], cold_speedup=cold["keras"] / cold["onnx"])
        notes.append(f"cold start, `koala colorize` on the 2000 x 1333 photo, process start to PNG written "
                     f"(median, engines alternated): keras {cold['keras']:.2f} s, onnx {cold['onnx']:.2f} s, "
                     f"keras / onnx {cold['keras'] / cold['onnx']:.1f}x")
        if not quick:
            targets.append(_common.target("cold start keras / onnx", cold["keras"] / cold["onnx"], ">=", 5.0))
            targets += [_common.target(f"warm onnx / keras, {k.split('_')[0]}", v, "<=", 1.0)
                        for k, v in figures.items() if k.endswith("_onnx_over_keras")]
    else:
        notes.append("onnx engine not measured: onnxruntime or the shipped ONNX files are missing")
    if sizes:
        figures.update(env_colorize_mb=sizes["colorize_mb"], env_full_mb=sizes["full_mb"],
                       env_colorize_du_mb=sizes["colorize_du_mb"], env_full_du_mb=sizes["full_du_mb"])
        notes.append(f"install size, fresh venvs: .[colorize] {sizes['colorize_mb']:.0f} MB, .[tf-cpu,video] "
                     f"{sizes['full_mb']:.0f} MB of installed files (ratio {sizes['ratio']:.3f}); du "
                     f"{sizes['colorize_du_mb']:.0f} and {sizes['full_du_mb']:.0f} MB "
                     f"(ratio {sizes['ratio_du']:.3f})")
        targets.append(_common.target("install size colorize / full, installed files", sizes["ratio"], "<=", 0.25))
        targets.append(_common.target("install size colorize / full, du", sizes["ratio_du"], "<=", 0.25))
    if report:
        notes.append("cProfile of the largest photo (tottime):\n\n```\n" + report.strip() + "\n```")
    big = big_total(figures, photos)
    return {
        "name": "colorize_latency",
        "title": "Colorize latency per photo, by stage (ms)",
        "headers": ["photo", *STAGES, "total"],
        "rows": rows,
        "figures": {**figures, "largest_total_s": big},
        "runs": runs,
        "other_cores": load.other_cores,
        "targets": targets,
        "notes": notes,
        "software": _common.software(),
    }


def big_total(figures, photos):
    return figures[f"{photos[-1][0].split(' (')[0].replace(' ', '')}_total_s"]


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--profile", action="store_true", help="print cProfile's top functions for the largest photo")
    p.add_argument("--env-size", action="store_true", help="also measure fresh colorize and tf-cpu,video venvs (PyPI)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    return _common.finish(run(args.quick, args.profile, args.env_size), args, started)


if __name__ == "__main__":
    main()
