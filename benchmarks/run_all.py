"""Run the four CPU benchmarks and print one summary table of figures and ratios.

    python benchmarks/run_all.py [--quick]

Each benchmark runs in its own process (a fresh TensorFlow, no state carried between
them) and writes its full result as JSON; this script gathers them into
benchmarks/results/latest.md and latest.json (``--quick`` writes quick.md / quick.json
instead, so a smoke run never overwrites the real figures). The GPU benchmark,
gpu_train.py, is not run here: see benchmarks/gpu_README.md.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import _common

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCHMARKS = ("train_throughput", "pipeline_throughput", "embed_throughput", "colorize_latency", "video_speed",
              "head_step_cost")

# (benchmark, figure key, label, unit) for the summary table.
SUMMARY = (
    ("train_throughput", "fp32_train_call_img_s", "train fp32, koala_utils.train() call", "img/s"),
    ("train_throughput", "fp32_e2e_img_s", "train fp32, end to end (record pipeline + step, interleaved)", "img/s"),
    ("train_throughput", "fp32_ceiling_img_s", "train fp32, in-memory ceiling", "img/s"),
    ("train_throughput", "fp32_e2e_over_ceiling", "train fp32, end-to-end / ceiling (wall)", "ratio"),
    ("train_throughput", "fp32_e2e_over_ceiling_cpu_time", "train fp32, end-to-end / ceiling (CPU time)", "ratio"),
    ("train_throughput", "bf16_train_call_img_s", "train bf16, koala_utils.train() call", "img/s"),
    ("train_throughput", "bf16_e2e_img_s", "train bf16, end to end (record pipeline + step, interleaved)", "img/s"),
    ("train_throughput", "bf16_ceiling_img_s", "train bf16, in-memory ceiling", "img/s"),
    ("train_throughput", "bf16_e2e_over_ceiling", "train bf16, end-to-end / ceiling (wall)", "ratio"),
    ("train_throughput", "bf16_e2e_over_ceiling_cpu_time", "train bf16, end-to-end / ceiling (CPU time)", "ratio"),
    ("train_throughput", "bf16_over_fp32_e2e", "train bf16 / fp32, end to end (wall)", "ratio"),
    ("train_throughput", "bf16_over_fp32_cpu_time", "train bf16 / fp32, end to end (CPU time)", "ratio"),
    ("train_throughput", "bf16_gflop_s", "train bf16, achieved", "GFLOP/s"),
    ("train_throughput", "bf16_conv_gflop_s", "conv2d ceiling, bf16", "GFLOP/s"),
    ("train_throughput", "fp32_gflop_s", "train fp32, achieved", "GFLOP/s"),
    ("train_throughput", "fp32_conv_gflop_s", "conv2d ceiling, fp32", "GFLOP/s"),
    ("pipeline_throughput", "pipeline_augmented_img_s", "tf.data pipeline, augmented", "img/s"),
    ("pipeline_throughput", "reference_img_s", "scikit-image reference, one at a time", "img/s"),
    ("pipeline_throughput", "speedup", "tf.data / reference", "ratio"),
    ("pipeline_throughput", "speedup_cpu_time", "tf.data / reference, CPU time", "ratio"),
    ("pipeline_throughput", "pipeline_over_consumption", "slowest tf.data / training consumption", "ratio"),
    ("embed_throughput", "lite0_img_s", "EfficientNet-Lite0 embed", "img/s"),
    ("embed_throughput", "irv2_img_s", "Inception-ResNet-v2 embed (weights=None)", "img/s"),
    ("embed_throughput", "prepare_ms_per_image", "data.prepare, fresh", "ms/img"),
    ("embed_throughput", "prepare_rerun_ms_per_image", "data.prepare, re-run (cached)", "ms/img"),
    ("embed_throughput", "bytes_per_image", "record cache", "bytes/img"),
    ("embed_throughput", "jpeg444_mean_dab", "JPEG q95 4:4:4 colour error, mean delta ab", "Lab"),
    ("colorize_latency", "512x512_total_s", "colorize 512 x 512", "s"),
    ("colorize_latency", "1024x1024_total_s", "colorize 1024 x 1024", "s"),
    ("colorize_latency", "2000x1333_total_s", "colorize 2000 x 1333", "s"),
    ("video_speed", "coherent_fps", "video 640 x 360 end to end, coherent mode", "frames/s"),
    ("video_speed", "per_frame_fps", "video 640 x 360 end to end, per-frame mode", "frames/s"),
    ("video_speed", "rss_growth_mb", "video memory growth, frame 40 to the end", "MB"),
    ("head_step_cost", "classification_over_mse", "train step, classification head as trained / MSE head (wall)",
     "ratio"),
    ("head_step_cost", "every_pixel_over_mse", "train step, classification head on every pixel / MSE (wall)", "ratio"),
    ("head_step_cost", "classification_over_mse_cpu_time", "train step, classification / MSE (CPU time)", "ratio"),
)


def run_one(name, quick, out_dir):
    """Run one benchmark script in a subprocess; its result dict (or an error record)."""
    out = out_dir / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / f"{name}.py"), "--json", str(out)] + (["--quick"] if quick else [])
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    print(proc.stdout, flush=True)  # the benchmark's own table (stderr holds TensorFlow's chatter)
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        print(f"\n!! {name} failed (exit {proc.returncode}):\n{tail}", flush=True)
        return {"name": name, "error": f"exit {proc.returncode}", "stderr_tail": tail, "wall_s": seconds}
    return json.loads(out.read_text())


def summary(results, info, total_s, quick):
    by_name = {r["name"]: r for r in results}
    rows = []
    for name, key, label, unit in SUMMARY:
        result = by_name.get(name, {})
        value = result.get("figures", {}).get(key) if "error" not in result else None
        rows.append([label, value, unit])
    targets = []
    for result in results:
        for t in result.get("targets", []):
            status = {True: "met", False: "MISSED", None: "-"}[t["met"]]
            targets.append([t["name"], f"{t['op']} {_common.fmt(t['goal'])}", t["value"], status])
        if "error" in result:
            targets.append([result["name"], "runs", None, f"FAILED ({result['error']})"])
    loads = [f"{r['name']} {r['other_cores']:.2f}" for r in results if r.get("other_cores") is not None]
    lines = [
        f"# Benchmarks{' (--quick: tiny sizes, not real figures)' if quick else ''}",
        "",
        f"Command: `python benchmarks/run_all.py{' --quick' if quick else ''}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, {total_s:.0f} s in all)",
        "",
        f"Machine: {_common.machine_line(info)}; Python {info['python']}; "
        f"{', '.join(f'{k} {v}' for k, v in results[0].get('software', {}).items()) if results else ''}",
        "",
        "Cores kept busy by other processes while each ran (of "
        f"{info['cores']}): {', '.join(loads) or 'not measured'}.",
        "",
        _common.markdown_table(["figure", "value", "unit"], rows),
        "",
        _common.markdown_table(["target", "goal", "measured", "status"], targets),
    ]
    for result in results:
        if "error" in result:
            continue
        lines += ["", f"## {result['title']}", "", _common.markdown_table(result["headers"], result["rows"]), ""]
        lines += [f"- {note}" for note in result.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    started = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = RESULTS / ("quick_parts" if args.quick else "parts")
    parts.mkdir(parents=True, exist_ok=True)
    info = _common.machine()
    busy = _common.other_processes()
    print(f"Machine: {_common.machine_line(info)}")
    if busy:
        print("Busy processes at the start (pid, command, cores):")
        for pid, cmd, used in busy:
            print(f"  {pid}  {used:.2f}  {cmd}")
    results = [run_one(name, args.quick, parts) for name in BENCHMARKS]
    total = time.perf_counter() - started
    text = summary(results, info, total, args.quick)
    stem = "quick" if args.quick else "latest"
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"machine": info, "busy_at_start": busy, "total_s": total, "results": results}, indent=1,
                   default=str)
    )
    print()
    print(text)
    print(f"written: {RESULTS / (stem + '.md')} and .json")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
