"""Train-step cost of the classification head against the paper's MSE head, side by side in one process.

    python benchmarks/head_step_cost.py [--quick]

Both networks are built under mixed_bfloat16 and compiled as koala_utils.train compiles them (the classification
one with the rebalanced cross-entropy: soft encoding inside the loss, a prior from the records). Single train steps
on the same batch of real photos from the record pipeline (``data.load``, augmented, as in training) alternate
MSE, classification, classification, MSE, ... so that the load of other processes hits both alike; the ratio
of the median step times (and of this process's CPU time) is the figure. Target: <= 1.3, for the head as
``koala train --loss classification`` trains it (``koala_utils.train.SUPERVISION_STRIDE``); the head that
supervises every pixel is timed beside it.
"""

import time

import _common

TARGET = 1.3


def run(quick):
    _common.quiet_tensorflow()
    import numpy as np

    from koala_utils import data
    from koala_utils.classification import ab_bins, rebalancing_weights
    from koala_utils.model import build_model, compile_model
    from koala_utils.rebalanced_loss import RebalancedCrossEntropy, prior_from_records
    from koala_utils.train import SUPERVISION_STRIDE

    batch, size, cycles = (2, 32, 2) if quick else (16, 128, 12)
    records = _common.cached_records(32 if quick else 200)
    x, y = next(iter(data.load(records, "train", batch, augment=True, image_size=size)))
    bins = ab_bins()
    prior = prior_from_records(records, bins, photos=24)
    weights = rebalancing_weights(prior)

    def classifier(stride):
        model = build_model(dtype_policy="mixed_bfloat16", head="classification", bins=bins, prior=prior,
                            supervision_stride=stride)
        return compile_model(model, 1e-3, loss=RebalancedCrossEntropy(bins, weights, supervision_stride=stride))

    models = {"mse": compile_model(build_model(dtype_policy="mixed_bfloat16"), 1e-3)}
    for stride in sorted({1, 2, SUPERVISION_STRIDE}):
        models[f"classification, stride {stride}"] = classifier(stride)
    default = f"classification, stride {SUPERVISION_STRIDE}"
    for model in models.values():  # compile and warm up
        model.train_on_batch(x, y)
        model.train_on_batch(x, y)
    wall = {k: [] for k in models}
    cpu = {k: [] for k in models}
    for cycle in range(cycles):
        order = list(models) if cycle % 2 == 0 else list(models)[::-1]
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            models[name].train_on_batch(x, y)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    med = {k: float(np.median(v)) for k, v in wall.items()}
    med_cpu = {k: float(np.median(v)) for k, v in cpu.items()}
    ratio = med[default] / med["mse"]
    ratio_cpu = med_cpu[default] / med_cpu["mse"]
    every_pixel = med["classification, stride 1"] / med["mse"]
    return {
        "name": "head_step_cost",
        "title": f"Classification head vs MSE head, one train step (batch {batch}, {size} px, bf16)",
        "headers": ["head", "median step (s)", "median CPU time (s)", "img/s"],
        "rows": [[k, med[k], med_cpu[k], batch / med[k]] for k in models],
        "figures": {"classification_over_mse": ratio, "classification_over_mse_cpu_time": ratio_cpu,
                    "every_pixel_over_mse": every_pixel, "supervision_stride": SUPERVISION_STRIDE,
                    "num_bins": len(bins)},
        "targets": [_common.target(f"classification step (stride {SUPERVISION_STRIDE}, as trained) / MSE step (wall)",
                                   ratio, "<=", TARGET)],
        "notes": [f"CPU-time ratio {ratio_cpu:.3f}; every pixel supervised (stride 1): {every_pixel:.3f}; "
                  f"{cycles} interleaved cycles after 2 warm-up steps each"],
        "software": _common.software(),
    }


if __name__ == "__main__":
    _common.main(run, __doc__)
