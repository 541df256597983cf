"""Training throughput: koala_utils.train on cached records vs the same train step on in-memory tensors.

    python benchmarks/train_throughput.py [--quick]

For float32 and mixed_bfloat16, in one process:

1. ``koala_utils.train.train`` runs a short epoch (augmented record pipeline, then
   ``model.fit``) on records of 200 ImageNet sample photos cached in benchmarks/.cache;
   a callback times its steps after warm-up: the "train() img/s" column.
2. Then, with the very models train() returned and their compiled train step (Keras'
   ``model.train_function``, what ``fit`` calls once per step), single steps alternate
   in cycles: fp32 fed by the record pipeline (the same ``data.load`` call train() makes),
   fp32 fed by one in-memory batch of random tensors (the ceiling: no input pipeline at
   all), then the same two for bf16; every other cycle runs in reverse order. Step by
   step interleaving makes the ratios robust to the load of other processes, which drifts
   over seconds on a shared machine. The ratios come from these sums.

Each step's wall time and this process's CPU time are recorded: the CPU-time ratios are
steadier still where other processes compete for the cores. Achieved GFLOP/s count
15.1 GFLOP per image forward at 224 px and 3x that per train step, against a big 3x3
conv2d measured in the same process.
"""

import time

import _common

FORWARD_GFLOP_224 = 15.1  # multiply-adds counted as 2 flops, 224 x 224 input
TRAIN_FACTOR = 3.0  # forward + backward (input and weight gradients)
POLICIES = (("fp32", None), ("bf16", "mixed_bfloat16"))


def gflop_per_train_image(size):
    return TRAIN_FACTOR * FORWARD_GFLOP_224 * (size / 224) ** 2


def batch_timer(warmup):
    """A Keras callback recording each train batch's end; ``rate(batch)`` is img/s after ``warmup`` steps."""
    import keras

    class BatchTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

        def rate(self, batch_size):
            timed = len(self.ends) - warmup
            if timed < 1:
                raise RuntimeError("no step timed after warm-up")
            return timed * batch_size / (self.ends[-1] - self.ends[warmup - 1])

    return BatchTimer()


def random_batch(batch, size, embed_dim):
    import tensorflow as tf

    gen = tf.random.Generator.from_seed(0)
    x = {
        "l": gen.uniform((batch, size, size, 1), -1.0, 1.0),
        "embedding": gen.normal((batch, embed_dim)),
    }
    return x, gen.uniform((batch, size, size, 2), -0.5, 0.5)


def conv_ceiling(dtype, batch, size, repeats):
    """GFLOP/s of one big 3x3 conv (256 -> 256 channels at size/4), the CPU's practical peak."""
    import tensorflow as tf

    side = max(8, size // 4)
    x = tf.random.normal((batch, side, side, 256), dtype=tf.float32)
    w = tf.random.normal((3, 3, 256, 256), dtype=tf.float32) * 0.02
    x, w = tf.cast(x, dtype), tf.cast(w, dtype)
    conv = tf.function(lambda v: tf.nn.conv2d(v, w, 1, "SAME"))
    conv(x).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        out = conv(x)
    out.numpy()
    seconds = (time.perf_counter() - start) / repeats
    return batch * side * side * 256 * 256 * 9 * 2 / seconds / 1e9


def run_train(records, label, cfg):
    """A short koala_utils.train run; returns the trained model and its img/s after warm-up."""
    from koala_utils.train import train

    run_dir = _common.fresh_dir(_common.CACHE / "runs" / f"train_throughput_{label}")
    timer = batch_timer(cfg["warmup"])
    model, _ = train(
        records,
        run_dir,
        epochs=1,
        batch_size=cfg["batch"],
        mixed_precision=label,
        image_size=cfg["size"],
        steps_per_epoch=cfg["warmup"] + cfg["train_steps"],
        validation_steps=1,
        verbose=0,
        tensorboard=False,
        callbacks=[timer],
    )
    return model, timer.rate(cfg["batch"])


class Steps:
    """Wall and CPU seconds of the timed steps of one kind (policy x data source)."""

    def __init__(self, batch):
        self.batch, self.wall, self.cpu = batch, [], []

    def run(self, step):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)

    @property
    def img_s(self):
        return self.batch * len(self.wall) / sum(self.wall)

    @property
    def cpu_s_per_img(self):
        return sum(self.cpu) / (self.batch * len(self.cpu))


def interleaved(models, records, cfg):
    """Alternate single train steps: {(label, "e2e" | "ceiling"): Steps}."""
    import tensorflow as tf

    from koala_utils import data

    manifest = data.read_manifest(records)
    size = cfg["size"] or manifest["image_size"]
    x, y = random_batch(cfg["batch"], size, manifest["embed_dim"])
    sources = {
        # The very pipeline train() builds for its training split.
        "e2e": lambda: data.load(records, "train", cfg["batch"], augment=True, image_size=cfg["size"], seed=1,
                                 repeat=True),
        "ceiling": lambda: tf.data.Dataset.from_tensors((x, y)).repeat(),
    }
    kinds, steps = [], {}
    for label, _ in POLICIES:
        train_function = models[label].make_train_function()
        for source, make in sources.items():
            iterator = iter(make())

            def step(fn=train_function, it=iterator):
                float(fn(it)["loss"])  # waits for the step to finish

            step()  # warm-up: traces the step for this input signature, starts the pipeline
            kinds.append(((label, source), step))
            steps[(label, source)] = Steps(cfg["batch"])
    for cycle in range(cfg["cycles"]):
        for key, step in kinds if cycle % 2 == 0 else reversed(kinds):
            steps[key].run(step)
    return steps


def config(quick):
    if quick:
        return {"photos": 32, "size": 32, "batch": 2, "warmup": 1, "train_steps": 2, "cycles": 2,
                "conv_batch": 1, "conv_repeats": 2}
    return {"photos": 200, "size": None, "batch": 8, "warmup": 2, "train_steps": 3, "cycles": 8,
            "conv_batch": 8, "conv_repeats": 10}


def run(quick=False):
    _common.quiet_tensorflow()
    import tensorflow as tf

    cfg = config(quick)
    records = _common.cached_records(cfg["photos"])
    size = cfg["size"] or 224
    gflop = gflop_per_train_image(size)
    with _common.LoadMonitor() as load:
        conv = {label: conv_ceiling(dt, cfg["conv_batch"], size, cfg["conv_repeats"])
                for label, dt in (("fp32", tf.float32), ("bf16", tf.bfloat16))}
        models, train_rate = {}, {}
        for label, _ in POLICIES:
            models[label], train_rate[label] = run_train(records, label, cfg)
        steps = interleaved(models, records, cfg)
    rows, figures, runs = [], {}, {}
    for label, _ in POLICIES:
        e2e, ceiling = steps[(label, "e2e")], steps[(label, "ceiling")]
        ratio = e2e.img_s / ceiling.img_s
        cpu_ratio = ceiling.cpu_s_per_img / e2e.cpu_s_per_img
        achieved = e2e.img_s * gflop
        rows.append([label, train_rate[label], e2e.img_s, ceiling.img_s, ratio, cpu_ratio, achieved, conv[label],
                     achieved / conv[label]])
        figures.update({
            f"{label}_train_call_img_s": train_rate[label],
            f"{label}_e2e_img_s": e2e.img_s,
            f"{label}_ceiling_img_s": ceiling.img_s,
            f"{label}_e2e_over_ceiling": ratio,
            f"{label}_e2e_over_ceiling_cpu_time": cpu_ratio,
            f"{label}_gflop_s": achieved,
            f"{label}_conv_gflop_s": conv[label],
        })
        runs[label] = {kind: {"wall_s": steps[(label, kind)].wall, "cpu_s": steps[(label, kind)].cpu}
                       for kind in ("e2e", "ceiling")}
    fp32, bf16 = steps[("fp32", "e2e")], steps[("bf16", "e2e")]
    figures["bf16_over_fp32_e2e"] = bf16.img_s / fp32.img_s
    figures["bf16_over_fp32_cpu_time"] = fp32.cpu_s_per_img / bf16.cpu_s_per_img
    figures["bf16_over_fp32_ceiling"] = steps[("bf16", "ceiling")].img_s / steps[("fp32", "ceiling")].img_s
    figures["bf16_over_fp32_train_call"] = train_rate["bf16"] / train_rate["fp32"]
    figures["bf16_over_fp32_conv"] = conv["bf16"] / conv["fp32"]
    rows.append(["bf16 / fp32", figures["bf16_over_fp32_train_call"], figures["bf16_over_fp32_e2e"],
                 figures["bf16_over_fp32_ceiling"], None, figures["bf16_over_fp32_cpu_time"], None,
                 figures["bf16_over_fp32_conv"], None])
    return {
        "name": "train_throughput",
        "title": f"Training throughput at {size} px, batch {cfg['batch']} (koala_utils.train vs in-memory ceiling)",
        "headers": ["dtype", "train() img/s", "end-to-end img/s", "ceiling img/s", "e2e / ceiling",
                    "e2e / ceiling, CPU time", "achieved GFLOP/s", "conv2d GFLOP/s", "achieved / conv2d"],
        "rows": rows,
        "figures": figures,
        "runs": runs,
        "other_cores": load.other_cores,
        "targets": [
            _common.target("fp32 end-to-end / ceiling", figures["fp32_e2e_over_ceiling"], ">=", 0.95),
            _common.target("bf16 end-to-end / ceiling", figures["bf16_e2e_over_ceiling"], ">=", 0.95),
            _common.target("bf16 / fp32 (end-to-end)", figures["bf16_over_fp32_e2e"], ">=", 1.8),
            _common.target("fp32 end-to-end / ceiling, CPU time", figures["fp32_e2e_over_ceiling_cpu_time"], ">=",
                           0.95),
            _common.target("bf16 end-to-end / ceiling, CPU time", figures["bf16_e2e_over_ceiling_cpu_time"], ">=",
                           0.95),
            _common.target("bf16 / fp32 (end-to-end), CPU time", figures["bf16_over_fp32_cpu_time"], ">=", 1.8),
        ],
        "notes": [
            f"records: {cfg['photos']} imagenet_sample_1000 photos, augmented (flip + crop) as train() does; "
            f"{gflop:.1f} GFLOP per train image ({TRAIN_FACTOR:g} x {FORWARD_GFLOP_224} at {size} px)",
            f"train(): {cfg['train_steps']} steps timed after {cfg['warmup']} warm-up steps; end-to-end and "
            f"ceiling: {cfg['cycles']} interleaved cycles of one step each (per-step times in the JSON)",
            "'bf16 / fp32' row: the ratio of each column; under 'e2e / ceiling, CPU time' it is bf16 / fp32 "
            "end to end in CPU time",
            "conv2d ceiling: 3x3, 256->256 channels at 56x56, tf.nn.conv2d (oneDNN), same process",
        ],
        "software": _common.software(),
    }


def main(argv=None):
    return _common.main(run, __doc__, argv)


if __name__ == "__main__":
    main()
