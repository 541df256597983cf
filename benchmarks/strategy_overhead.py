"""MirroredStrategy's overhead: two logical CPUs against the default strategy, same global batch.

    python benchmarks/strategy_overhead.py [--quick] [--json PATH]

The CPU is split into two logical devices (``koala_utils.distribute.split_cpu``),
which share the same cores and thread pools: a MirroredStrategy over them cannot
run faster than one device, so the img/s ratio measured here is the price of the
strategy itself (splitting each batch, running two replicas, all-reducing the
gradients, mirrored variable updates). On several GPUs the same code scales; on
one machine's CPU, do not use it. Besides img/s (wall time), it reports the process
CPU time per image: on a machine shared with other work, the scheduler's share of the
cores drifts and favours the process with more runnable threads, so the CPU time is
the steadier measure of the extra work.

Both models train on one in-memory batch of random tensors repeated (no input
pipeline), at the same global batch. The two are timed in alternation, several
rounds each, batch end to batch end after a warm-up, so that a drift in the
background load hits both alike; the ratio of the medians is reported.
"""

import statistics
import time

import _common

_common.quiet_tensorflow()


def step_timer():
    """A Keras callback recording when each training batch ends (wall and process CPU time)."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends, self.cpu = [], []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def per_step(self):
            return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)

        def cpu_per_step(self):
            return (self.cpu[-1] - self.cpu[0]) / (len(self.cpu) - 1)

    return StepTimer()


def random_data(global_batch, size, embed_dim):
    """One global batch of random inputs and targets, repeated forever."""
    import tensorflow as tf

    gen = tf.random.Generator.from_seed(0)
    x = {"l": gen.uniform((global_batch, size, size, 1), -1.0, 1.0), "embedding": gen.normal((global_batch, embed_dim))}
    y = gen.uniform((global_batch, size, size, 2), -0.5, 0.5)
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def compiled_model(strategy):
    import keras

    from koala_utils import distribute
    from koala_utils.model import build_model

    keras.utils.set_random_seed(0)
    if strategy is None:
        model = build_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        return model
    with strategy.scope():
        model = build_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        distribute.fit_workarounds(model, strategy)
    return model


def main():
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    started = time.perf_counter()
    from koala_utils import distribute

    devices = distribute.split_cpu(2)  # before TensorFlow starts
    size, global_batch, steps, rounds = (32, 8, 4, 2) if args.quick else (64, 16, 8, 5)
    dataset = random_data(global_batch, size, 1000)
    runs = {"default": compiled_model(None), "mirrored": compiled_model(distribute.make_strategy("mirrored"))}
    per_step, cpu_step = {name: [] for name in runs}, {name: [] for name in runs}
    with _common.LoadMonitor() as load:
        for model in runs.values():  # warm-up: tracing, first steps
            model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
        for _ in range(rounds):
            for name, model in runs.items():
                timer = step_timer()
                model.fit(dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[timer], shuffle=False)
                per_step[name].append(timer.per_step())
                cpu_step[name].append(timer.cpu_per_step())
    rows, rate, cpu = [], {}, {}
    for name, times in per_step.items():
        median = statistics.median(times)
        rate[name] = global_batch / median
        cpu[name] = statistics.median(cpu_step[name]) / global_batch
        replicas = 2 if name == "mirrored" else 1
        spread = f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f}"
        rows.append([name, replicas, global_batch, size, median * 1000, spread, rate[name], cpu[name] * 1000])
    ratio = rate["mirrored"] / rate["default"]
    cpu_ratio = cpu["mirrored"] / cpu["default"]
    rows.append(["mirrored / default", "", "", "", "", "", ratio, cpu_ratio])
    result = {
        "title": "MirroredStrategy overhead on 2 logical CPUs (same global batch)",
        "software": _common.software(),
        "other_cores": load.other_cores,
        "headers": ["strategy", "replicas", "global batch", "px", "ms/step (median)", "range ms", "img/s",
                    "CPU ms/img"],
        "rows": rows,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "notes": [
            f"logical devices: {', '.join(devices)}; {rounds} alternating rounds of {steps} timed steps each",
            "both replicas share the same physical cores: img/s ratio < 1 is the strategy's cost; CPU ms/img "
            "(process CPU time, all threads) is the work done, less sensitive to other processes' load",
        ],
    }
    _common.finish(result, args, started)


if __name__ == "__main__":
    main()
