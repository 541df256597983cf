"""Training: logs, checkpoints, resume, mixed precision, and that it actually learns."""

import keras
import numpy as np
import pytest

from koala_utils import data
from koala_utils import train as train_mod
from koala_utils.model import load_model

QUICK = dict(batch_size=4, image_size=32, steps_per_epoch=2, verbose=0, augment=False)


def test_run_folder_layout_and_log(small_records, tmp_path):
    records, _ = small_records
    run = tmp_path / "run"
    model, history = train_mod.train(records, run, epochs=2, **QUICK)
    assert history["epoch"] == [0, 1]
    assert all(np.isfinite(history["loss"])) and "val_loss" in history
    for name in ("config.json", "log.csv", "best.keras", "last.keras"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert load_model(run / "last.keras").count_params() == model.count_params()


def test_resume_continues_the_epoch_counter(small_records, tmp_path):
    records, _ = small_records
    run = tmp_path / "run"
    train_mod.train(records, run, epochs=2, **QUICK)
    first = (run / "last.keras").stat().st_mtime_ns
    _, history = train_mod.train(records, run, epochs=4, **QUICK)
    assert history["epoch"] == [0, 1, 2, 3]
    assert (run / "last.keras").stat().st_mtime_ns > first
    # A finished run is not trained again.
    _, again = train_mod.train(records, run, epochs=4, **QUICK)
    assert again["epoch"] == [0, 1, 2, 3]


def _state(model):
    """The weights and every optimizer variable (step counter, Adam's moments), as numpy arrays."""
    return [keras.ops.convert_to_numpy(v) for v in [*model.weights, *model.optimizer.variables]]


def test_resume_restores_weights_and_optimizer_state(small_records, tmp_path):
    records, _ = small_records
    run = tmp_path / "run"
    trained, _ = train_mod.train(records, run, epochs=2, **QUICK)
    before = _state(trained)
    assert int(keras.ops.convert_to_numpy(trained.optimizer.iterations)) == 2 * QUICK["steps_per_epoch"]
    # Resuming the finished run builds a fresh model and trains nothing: everything must come from the backup.
    # (Another seed: training is deterministic here, so redoing both epochs with seed 0 would match too.)
    resumed, _ = train_mod.train(records, run, epochs=2, **{**QUICK, "seed": 1})
    after = _state(resumed)
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


def _mse_and_gray_mse(model, records, split, image_size):
    """MSE of the model's scaled ab on every photo of a split, and that of the gray baseline (ab = 0)."""
    model_err, gray_err, count = 0.0, 0.0, 0
    for inputs, ab in data.load(records, split, 4, image_size=image_size, shuffle=False):
        pred = keras.ops.convert_to_numpy(model.predict_on_batch(inputs))
        model_err += float(np.sum((pred - ab.numpy()) ** 2))
        gray_err += float(np.sum(ab.numpy() ** 2))
        count += ab.numpy().size
    return model_err / count, gray_err / count


def test_learns_on_a_tiny_set(small_records, tmp_path):
    records, _ = small_records
    model, history = train_mod.train(records, tmp_path / "r", epochs=6, batch_size=4, image_size=32,
                                     steps_per_epoch=3, verbose=0, augment=False, tensorboard=False)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    # A model that collapsed to gray halves its first loss too: it must beat gray on the photos it saw.
    mse, gray_mse = _mse_and_gray_mse(model, records, "train", 32)
    assert mse < 0.9 * gray_mse, (mse, gray_mse)


def test_bf16_training_keeps_float32_output(small_records, tmp_path):
    records, _ = small_records
    model, history = train_mod.train(records, tmp_path / "bf16", epochs=1, mixed_precision="bf16", **QUICK)
    assert model.get_layer("encoder_1").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"
    assert np.isfinite(history["loss"][0])


def test_resolve_policy():
    assert train_mod.resolve_policy(None) is None
    assert train_mod.resolve_policy("fp32") is None
    assert train_mod.resolve_policy("bf16") == "mixed_bfloat16"
    assert train_mod.resolve_policy("fp16") == "mixed_float16"
    assert train_mod.resolve_policy("auto") == "mixed_bfloat16"  # no GPU here
    with pytest.raises(ValueError, match="unknown"):
        train_mod.resolve_policy("fp8")


def test_initial_model_weights_are_used(small_records, tmp_path):
    records, _ = small_records
    keras.utils.set_random_seed(3)
    from koala_utils.model import build_model

    start = build_model()
    model, _ = train_mod.train(records, tmp_path / "ft", epochs=1, learning_rate=0.0, initial_model=start,
                               tensorboard=False, **QUICK)
    assert all(np.allclose(a, b) for a, b in zip(start.get_weights(), model.get_weights(), strict=True))
