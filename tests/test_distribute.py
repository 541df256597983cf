"""Scaling out: logical CPUs, MirroredStrategy, two-process MultiWorkerMirroredStrategy, sharded prepare.

TensorFlow's device list is fixed per process once it is initialised, so every
test that needs several devices or several workers runs in fresh subprocesses
(started and, on any failure or timeout, killed here). Sizes are tiny: 20 real
photos stored at 64 px, training at 32 px for 2-3 steps.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from koala_utils import data, distribute
from koala_utils.cli import EXIT_USAGE, main

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds for any group of subprocesses; they take ~10-30 s here


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _run_together(commands, envs, logs, timeout=TIMEOUT, meanwhile=None):
    """Start the commands at once; wait for all; kill all when one fails or time runs out.

    ``meanwhile``, a callable, runs in this process while they run. Returns the exit
    codes; raises AssertionError (with each log's tail) on failure.
    """
    procs, handles = [], []
    try:
        for cmd, env, log in zip(commands, envs, logs, strict=True):
            handles.append(open(log, "w"))
            procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=handles[-1], stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        if meanwhile is not None:
            meanwhile()
        while any(p.poll() is None for p in procs):
            failed = any(p.returncode not in (None, 0) for p in procs)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for handle in handles:
            handle.close()
    codes = [p.returncode for p in procs]
    if any(codes):
        pairs = zip(logs, codes, strict=False)
        tails = "\n".join(f"--- {log} (exit {c}):\n{Path(log).read_text()[-3000:]}" for log, c in pairs)
        raise AssertionError(f"subprocesses failed or timed out: {codes}\n{tails}")
    return codes


def _python(tmp_path, name, script, *args, timeout=TIMEOUT, env=None):
    """Run a Python script in a fresh process; return its stdout's last line parsed as JSON."""
    path = tmp_path / f"{name}.py"
    path.write_text(script)
    log = tmp_path / f"{name}.log"
    _run_together([[sys.executable, str(path), *map(str, args)]], [env or _env()], [log], timeout)
    return json.loads(Path(log).read_text().strip().splitlines()[-1])


def _koala(*args):
    return [sys.executable, "-m", "koala_utils.cli", *map(str, args)]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------- records, sharded and not
@pytest.fixture(scope="module")
def photos20(sample_folder, tmp_path_factory):
    """A folder linking 20 real colour photos."""
    gray = set((sample_folder / "GRAYSCALE_FILES.txt").read_text().split())
    chosen = [p for p in sorted(sample_folder.glob("*.JPEG")) if p.name not in gray][:20]
    folder = tmp_path_factory.mktemp("photos20")
    for photo in chosen:
        (folder / photo.name).symlink_to(photo.resolve())
    return folder


@pytest.fixture(scope="module")
def prepared(photos20, tmp_path_factory):
    """The same photos prepared by three worker processes plus a merge, and by this process."""
    base = tmp_path_factory.mktemp("prepared")
    single, sharded = base / "single", base / "sharded"
    common = ["--size", 64, "--shard-size", 3, "--num-shards", 3]
    commands = [_koala("prepare", photos20, sharded, *common, "--shard-index", i) for i in range(3)]
    logs = [base / f"prepare{i}.log" for i in range(3)]

    def one_process():
        data.prepare(photos20, single, size=64, shard_size=3, progress=False)

    _run_together(commands, [_env()] * 3, logs, meanwhile=one_process)
    _run_together([_koala("merge", sharded)], [_env()], [base / "merge.log"])
    return single, sharded


def test_three_prepare_workers_then_merge_equal_one_process(prepared):
    single, sharded = prepared
    one, merged = data.read_manifest(single), data.read_manifest(sharded)
    assert merged["counts"] == one["counts"]
    assert [s["file"] for s in merged["shards"]] == [s["file"] for s in one["shards"]]
    # 20 photos in shards of 3: every one of the three workers wrote shards and a partial manifest.
    assert len(merged["shards"]) >= 6
    assert len(list(sharded.glob("manifest-*-of-003.json"))) == 3
    for split in ("train", "val"):
        a, b = data.load_arrays(single, split), data.load_arrays(sharded, split)
        assert b["names"] == a["names"] and len(a["names"]) > 0
        np.testing.assert_allclose(b["embedding"], a["embedding"], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(b["rgb"], a["rgb"])
        np.testing.assert_array_equal(b["box"], a["box"])
    assert sum(one["counts"][s] for s in ("train", "val")) == 20


def test_each_worker_reads_its_own_shards(prepared):
    single, _ = prepared
    whole = data.load(single, "train", batch_size=64, shuffle=False, with_names=True)
    everything = sorted(n.decode() for batch in whole for n in batch[2].numpy())

    def names(workers, index, split="train"):
        ds = data.load(single, split, batch_size=64, shuffle=False, with_names=True, num_workers=workers,
                       worker_index=index)
        return sorted(n.decode() for batch in ds for n in batch[2].numpy())

    # Six train shards over two workers: whole shards each; one val shard: one record in two each.
    for split in ("train", "val"):
        parts = [names(2, i, split) for i in range(2)]
        assert not set(parts[0]) & set(parts[1]) and parts[0] and parts[1]
        assert sorted(parts[0] + parts[1]) == (everything if split == "train" else sorted(
            data.load_arrays(single, "val")["names"]))


# ----------------------------------------------------------------- one machine, two logical CPUs
EQUIVALENCE_SCRIPT = """
import json, sys
import numpy as np
from koala_utils import distribute
names = distribute.split_cpu(2)
again = distribute.split_cpu(2)  # the same split again is fine
import keras
import tensorflow as tf
tf.config.experimental.enable_op_determinism()  # the data pipeline keeps its order
from koala_utils import data
from koala_utils.model import build_model
from koala_utils.train import train

records, out = sys.argv[1], sys.argv[2]


class StepLosses(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


keras.utils.set_random_seed(7)
start = build_model(data.read_manifest(records)["embed_dim"])
np.savez(f"{out}/start.npz", *start.get_weights())
result = {}
for name, strategy, per_replica in (("single", None, 4), ("mirrored", distribute.make_strategy("mirrored"), 2)):
    steps = StepLosses()
    model, history = train(records, f"{out}/{name}", epochs=1, batch_size=per_replica, strategy=strategy,
                           image_size=32, augment=False, steps_per_epoch=3, verbose=0, tensorboard=False,
                           initial_model=start, callbacks=[steps])
    np.savez(f"{out}/{name}.npz", *model.get_weights())
    config = json.load(open(f"{out}/{name}/config.json"))
    result[name] = {"steps": steps.losses, "val_loss": history["val_loss"], "global_batch": config["global_batch"],
                    "replicas": config["replicas"], "chief": distribute.is_chief(strategy),
                    "workers": distribute.num_workers(strategy)}
result["devices"] = {"names": names, "again": again}
try:
    distribute.split_cpu(3)
except RuntimeError as exc:
    result["devices"]["late"] = str(exc)
try:
    distribute.make_strategy("tpu")
except RuntimeError as exc:
    result["devices"]["tpu"] = str(exc)
print(json.dumps(result))
"""


def test_mirrored_two_cpus_matches_one_device_on_the_same_global_batch(prepared, tmp_path):
    single, _ = prepared
    out = _python(tmp_path, "equivalence", EQUIVALENCE_SCRIPT, single, tmp_path)
    devices = out["devices"]
    assert len(devices["names"]) == 2 and devices["again"] == devices["names"]
    assert "before creating any tensor" in devices["late"]  # too late once TensorFlow runs
    assert "no TPU found" in devices["tpu"]
    one, two = out["single"], out["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["chief"] and two["chief"] and one["workers"] == two["workers"] == 1
    assert one["global_batch"] == two["global_batch"] == 4
    assert len(one["steps"]) == len(two["steps"]) == 3
    # Losses change from step to step (training happens), and agree between the two runs.
    assert len(set(np.round(one["steps"], 6))) == 3
    np.testing.assert_allclose(two["steps"], one["steps"], rtol=1e-4)
    np.testing.assert_allclose(two["val_loss"], one["val_loss"], rtol=1e-4)
    # Final weights: three Adam steps of lr 1e-3 move them by up to 3e-3; the two runs agree to 1e-4
    # (Adam's first steps are about lr * sign(gradient), so a weight whose gradient is ~0 on both
    # may step apart on float round-off: a few thousand of 6.5 million do, by < 5e-5).
    start, a, b = (np.load(tmp_path / f"{n}.npz") for n in ("start", "single", "mirrored"))
    assert a.files == b.files == start.files
    moved = max(np.abs(a[k] - start[k]).max() for k in a.files)
    assert moved > 2e-3
    for key in a.files:
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-4, err_msg=key)
    differ = sum(int((np.abs(b[k] - a[k]) > 1e-6).sum()) for k in a.files)
    assert differ < 0.01 * sum(a[k].size for k in a.files)


# ----------------------------------------------------------------- two worker processes
def test_two_process_multiworker_training_writes_only_the_chiefs_files(prepared, tmp_path):
    single, _ = prepared
    run = tmp_path / "run"
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    temps = [tmp_path / f"tmp{i}" for i in range(2)]
    envs = []
    for i, temp in enumerate(temps):
        temp.mkdir()
        config = {"cluster": cluster, "task": {"type": "worker", "index": i}}
        envs.append(_env(TF_CONFIG=json.dumps(config), TMPDIR=str(temp)))
    command = _koala("train", single, run, "--strategy", "multiworker", "--epochs", 1, "--steps-per-epoch", 2,
                     "--batch-size", 2, "--image-size", 32, "--verbose", 0)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    _run_together([command, command], envs, logs)

    config = json.loads((run / "config.json").read_text())
    assert config["replicas"] == 2 and config["global_batch"] == 4
    assert (run / "best.keras").is_file() and (run / "last.keras").is_file()
    lines = (run / "log.csv").read_text().strip().splitlines()
    assert len(lines) == 2, lines  # the header and one epoch, written once (by the chief)
    assert (run / "backup" / "latest.weights.h5").is_file()
    # The non-chief wrote its copies into its own temporary folder and removed it.
    assert not any(temps[1].iterdir()), list(temps[1].iterdir())
    # Both workers trained the same replicated model: they report the same loss.
    finals = [[ln for ln in Path(log).read_text().splitlines() if ln.startswith("done:")] for log in logs]
    assert finals[0] and finals[0] == finals[1]


# ----------------------------------------------------------------- errors, in this process
def test_tf_config_errors_are_clear(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG="):
        distribute.make_strategy("multiworker")
    with pytest.raises(ValueError, match="not valid JSON"):
        distribute.read_tf_config({"TF_CONFIG": "{cluster"})
    with pytest.raises(ValueError, match="no cluster.worker"):
        distribute.read_tf_config({"TF_CONFIG": json.dumps({"task": {"type": "worker", "index": 0}})})
    bad_index = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}
    with pytest.raises(ValueError, match="not in the cluster"):
        distribute.read_tf_config({"TF_CONFIG": json.dumps(bad_index)})
    good = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert distribute.read_tf_config({"TF_CONFIG": json.dumps(good)}) == good
    with pytest.raises(ValueError, match="unknown strategy"):
        distribute.make_strategy("horovod")


def test_cli_train_without_tf_config_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = main(["train", str(tmp_path / "records"), str(tmp_path / "run"), "--strategy", "multiworker"])
    assert code == EXIT_USAGE
    assert "TF_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_default_strategy_is_tensorflows_default():
    import tensorflow as tf

    strategy = distribute.make_strategy("default")
    assert strategy is tf.distribute.get_strategy()
    assert distribute.is_chief(strategy) and distribute.num_workers(strategy) == 1


def _fake_worker(index, workers=2):
    """A stand-in for a multi-worker strategy: only its cluster resolver is looked at."""
    import types

    import tensorflow as tf

    spec = tf.train.ClusterSpec({"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers)]})
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(spec, task_type="worker", task_id=index)
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_only_worker_0_writes_into_the_run_folder(tmp_path):
    chief, other = _fake_worker(0), _fake_worker(1)
    assert distribute.is_chief(chief) and not distribute.is_chief(other)
    assert distribute.num_workers(other) == 2
    assert distribute.write_dir(tmp_path, chief) == tmp_path
    private = distribute.write_dir(tmp_path, other)
    try:
        assert private.is_dir() and tmp_path not in private.parents and not any(private.iterdir())
    finally:
        private.rmdir()


def test_non_chief_resumes_from_the_chiefs_backup_and_saves_elsewhere(tmp_path):
    import keras

    def tiny():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        return model

    class StartWeights(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = self.model.get_weights()

    x, y = np.random.default_rng(0).normal(size=(8, 3)).astype("float32"), np.ones((8, 1), "float32")
    chief_dir, own_dir = tmp_path / "chief", tmp_path / "own"
    chief = tiny()
    chief.fit(x, y, epochs=2, verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(str(chief_dir), delete_checkpoint=False)])
    chief_meta = (chief_dir / "training_metadata.json").read_text()
    # A restarted non-chief worker: fresh weights, restored from the chief's backup.
    worker, start = tiny(), StartWeights()
    callback = distribute.RestoreFromChief(str(chief_dir), str(own_dir), delete_checkpoint=False)
    history = worker.fit(x, y, epochs=3, verbose=0, callbacks=[callback, start])
    assert len(history.history["loss"]) == 1  # epochs 0 and 1 were done by then
    for got, want in zip(start.weights, chief.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert json.loads((own_dir / "training_metadata.json").read_text())["epoch"] == 3
    assert (chief_dir / "training_metadata.json").read_text() == chief_meta  # the chief's backup untouched
