"""Training throughput on a GPU with Keras 3 on JAX: img/s and TFLOP/s at 224 px, synthetic data.

    python benchmarks/gpu_train.py                 # on a GPU machine, < 6 minutes
    python benchmarks/gpu_train.py --smoke         # on any CPU, seconds: checks that it runs

Self-contained: imports only keras, numpy and jax, plus ``koala_utils.model`` from this
repository (pure Keras; TensorFlow is never imported, and the script checks it). The
network's train step (Adam, MSE on ab) runs on one synthetic batch placed on the device
once, for batch sizes 32 to 256 in float32, mixed_bfloat16 and mixed_float16 (with loss
scaling). TFLOP/s count 15.1 GFLOP per image forward at 224 px and 3x that per train
step. See benchmarks/gpu_README.md.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported, whatever the caller set
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from koala_utils.model import build_model  # noqa: E402

FORWARD_GFLOP_224 = 15.1
TRAIN_FACTOR = 3.0
POLICIES = ("mixed_bfloat16", "mixed_float16", "float32")


def device_name():
    dev = jax.devices()[0]
    return f"{dev.platform}: {getattr(dev, 'device_kind', str(dev))} x{len(jax.devices())}"


def build(policy, learning_rate=1e-3):
    model = build_model(dtype_policy=None if policy == "float32" else policy)
    optimizer = keras.optimizers.Adam(learning_rate)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
    return model


def synthetic_batch(batch, size, seed=0):
    """One batch of L, embedding and ab, placed on the accelerator once."""
    rng = np.random.default_rng(seed)
    x = {
        "l": rng.uniform(-1, 1, (batch, size, size, 1)).astype("float32"),
        "embedding": rng.normal(size=(batch, 1000)).astype("float32"),
    }
    y = rng.uniform(-0.5, 0.5, (batch, size, size, 2)).astype("float32")
    return jax.device_put(x), jax.device_put(y)


def time_config(policy, batch, size, warmup, min_steps, min_seconds):
    """img/s of ``train_on_batch`` after ``warmup`` steps (the first compiles)."""
    model = build(policy)
    x, y = synthetic_batch(batch, size)
    start = time.perf_counter()
    for _ in range(warmup):
        loss = model.train_on_batch(x, y)
    compile_s = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < min_seconds:
        loss = model.train_on_batch(x, y)
        steps += 1
    seconds = time.perf_counter() - start
    if not np.isfinite(loss):
        raise FloatingPointError(f"{policy} batch {batch}: loss is {loss}")
    return {"policy": policy, "batch": batch, "steps": steps, "img_s": steps * batch / seconds,
            "compile_s": compile_s}


def table(rows, size):
    gflop = TRAIN_FACTOR * FORWARD_GFLOP_224 * (size / 224) ** 2
    lines = ["| dtype policy | batch | img/s | TFLOP/s | steps timed | warm-up s |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['policy']} | {r['batch']} | {r['error']} | - | - | - |")
            continue
        tflops = r["img_s"] * gflop / 1000
        r["tflop_s"] = tflops
        lines.append(f"| {r['policy']} | {r['batch']} | {r['img_s']:,.1f} | {tflops:.2f} | {r['steps']} | "
                     f"{r['compile_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: checks that the script runs")
    p.add_argument("--batch-sizes", default="32,64,128,256")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--budget-s", type=float, default=330.0, help="skip the remaining configs past this time")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    started = time.perf_counter()
    if args.smoke:
        batches, size, warmup, min_steps, min_seconds = [2], 32, 1, 2, 0.0
    else:
        batches, size, warmup, min_steps, min_seconds = [int(b) for b in args.batch_sizes.split(",")], args.size, 2, \
            5, 3.0
    policies = args.policies.split(",")
    print(f"device: {device_name()}; keras {keras.__version__} on {keras.backend.backend()}, jax {jax.__version__}, "
          f"python {platform.python_version()}")
    rows = []
    for policy in policies:
        for batch in batches:
            if time.perf_counter() - started > args.budget_s:
                rows.append({"policy": policy, "batch": batch, "error": "skipped (time budget)"})
                continue
            try:
                rows.append(time_config(policy, batch, size, warmup, min_steps, min_seconds))
            except Exception as exc:  # out of memory on a small GPU, say: report it and go on
                rows.append({"policy": policy, "batch": batch, "error": f"{type(exc).__name__}"})
                print(f"{policy} batch {batch}: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
            keras.backend.clear_session()
            print(f"  done {policy} batch {batch} ({time.perf_counter() - started:.0f} s)", flush=True)
    print()
    print(f"## Train step on {device_name()}, {size} px, synthetic data (Keras {keras.__version__}, JAX)")
    print()
    print(table(rows, size))
    tf_loaded = "tensorflow" in sys.modules
    print()
    print(f"tensorflow imported: {'YES' if tf_loaded else 'no'}; wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name(), "size": size, "rows": rows}, indent=1))
    return 1 if tf_loaded else 0


if __name__ == "__main__":
    sys.exit(main())
