"""The benchmarks run: each one with --quick (tiny sizes) in its own process prints its table.

Correctness only, no timing asserts: the figures belong in benchmarks/results, not in tests.
The four CPU benchmarks and the GPU script's --smoke run concurrently, on records built
once into a temporary cache, to keep the whole module within about a minute.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CPU_BENCHMARKS = {
    "train_throughput": ["| fp32 |", "| bf16 |", "| bf16 / fp32 |", "conv2d GFLOP/s"],
    "pipeline_throughput": ["scikit-image reference", "tf.data data.load", "training consumes"],
    "embed_throughput": ["EfficientNet-Lite0 embed", "data.prepare, re-run", "JPEG q95 4:4:4 (used)", "PNG"],
    "colorize_latency": ["| 512 x 512 |", "| 1024 x 1024 |", "| 2000 x 1333", "backbone", "merge"],
    "video_speed": ["| per-frame |", "| coherent |", "resident memory"],
    "head_step_cost": ["| mse |", "| classification, stride 1 |", "| classification, stride 2 |",
                      "MSE step (wall)"],
}
# Runs gpu_train.py with TensorFlow made unimportable: the GPU machine may not have it.
BLOCK_TF = textwrap.dedent(
    """
    import importlib.abc, runpy, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the smoke test)", name=name)
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    sys.argv = [sys.argv[1]] + sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def _load_common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample_folder, lite0):
    """Start every benchmark at once; return {name: (returncode, stdout, stderr, json path)}."""
    cache = tmp_path_factory.mktemp("bench_cache")
    out = tmp_path_factory.mktemp("bench_out")
    env = {**os.environ, "KOALA_BENCH_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2",
           "KOALA_DATA": str(sample_folder.parent)}
    # The records the quick benchmarks share, built once here (concurrent builders would collide).
    os.environ["KOALA_BENCH_CACHE"] = str(cache)
    try:
        _load_common().cached_records(32)
    finally:
        os.environ.pop("KOALA_BENCH_CACHE")
    procs = {}
    for name in CPU_BENCHMARKS:
        cmd = [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--json", str(out / f"{name}.json")]
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
    gpu_cmd = [sys.executable, "-c", BLOCK_TF, str(BENCH / "gpu_train.py"), "--smoke", "--policies",
               "mixed_float16", "--json", str(out / "gpu_train.json")]
    procs["gpu_train"] = subprocess.Popen(gpu_cmd, cwd=ROOT, env={**env, "KERAS_BACKEND": "tensorflow"},
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        results[name] = (proc.returncode, stdout, stderr, out / f"{name}.json")
    return results


def _check_ran(runs, name):
    code, stdout, stderr, _ = runs[name]
    assert code == 0, f"{name} exited with {code}:\n{stdout[-2000:]}\n{stderr[-3000:]}"
    return stdout


@pytest.mark.parametrize("name", sorted(CPU_BENCHMARKS))
def test_cpu_benchmark_prints_its_table(runs, name):
    stdout = _check_ran(runs, name)
    assert "Machine: " in stdout and " cores" in stdout
    assert "|---|" in stdout
    for text in CPU_BENCHMARKS[name]:
        assert text in stdout, f"{name}: {text!r} missing from its output:\n{stdout}"
    result = json.loads(runs[name][3].read_text())
    assert result["name"] == name and result["quick"] is True
    assert result["rows"] and all(len(row) == len(result["headers"]) for row in result["rows"])
    numbers = [v for row in result["rows"] for v in row if isinstance(v, (int, float))]
    assert numbers and all(v == v and v >= 0 for v in numbers)  # no NaN, nothing negative


def test_gpu_script_runs_on_cpu_with_jax_and_without_tensorflow(runs):
    stdout = _check_ran(runs, "gpu_train")
    assert "on jax" in stdout
    assert "| mixed_float16 | 2 |" in stdout and "TFLOP/s" in stdout
    assert "tensorflow imported: no" in stdout
    rows = json.loads(runs["gpu_train"][3].read_text())["rows"]
    assert rows and all("error" not in r and r["img_s"] > 0 for r in rows)


def test_run_all_summarises_the_results(runs):
    for name in CPU_BENCHMARKS:
        _check_ran(runs, name)
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
        run_all = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(run_all)
    finally:
        sys.path.remove(str(BENCH))
    results = [json.loads(runs[name][3].read_text()) for name in run_all.BENCHMARKS]
    by_name = {r["name"]: r for r in results}
    for name, key, _, _ in run_all.SUMMARY:
        assert key in by_name[name]["figures"], f"summary figure {name}.{key} is not in the result"
        value = by_name[name]["figures"][key]
        # Inception-ResNet-v2 is left out of --quick runs; every other figure is measured.
        assert isinstance(value, (int, float)) or (key == "irv2_img_s" and value is None), (key, value)
    text = run_all.summary(results, results[0]["machine"], 1.0, quick=True)
    assert "Machine: " in text and "| figure | value | unit |" in text and "| target | goal |" in text
    assert "FAILED" not in text
