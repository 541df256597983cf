"""Sparse supervision of the classification head (issue 10, step cost): the pixels kept, the layer, the loss."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from koala_utils import classification as cls
from koala_utils.model import Predictor, build_model, compile_model, load_model
from koala_utils.rebalanced_loss import RebalancedCrossEntropy, SupervisedPixels, phase_subsample


@pytest.fixture(scope="module")
def bins():
    return cls.ab_bins()


def numpy_subsample(x, stride):
    """The reference: example n keeps rows p // stride and columns p % stride (mod stride), p = n % stride²."""
    out = []
    for n, example in enumerate(x):
        p = n % stride**2
        out.append(example[p // stride :: stride, p % stride :: stride])
    return np.stack(out)


def test_phase_subsample_keeps_one_pixel_per_block_at_offsets_that_cycle_over_the_batch():
    x = np.random.default_rng(0).normal(0, 1, (6, 8, 12, 3)).astype(np.float32)
    got = keras.ops.convert_to_numpy(phase_subsample(x, 2))
    assert got.shape == (6, 4, 6, 3)
    assert np.array_equal(got, numpy_subsample(x, 2))
    # four examples of the same picture together see every pixel once
    same = np.repeat(x[:1], 4, axis=0)
    seen = keras.ops.convert_to_numpy(phase_subsample(same, 2))
    assert sorted(seen.ravel().tolist()) == sorted(x[0].ravel().tolist())


def test_supervised_pixels_subsample_only_while_training_and_add_no_weights(tmp_path, bins):
    plain = build_model(head="classification", bins=bins)
    sparse = build_model(head="classification", bins=bins, supervision_stride=2)
    assert isinstance(sparse.get_layer("supervised_pixels"), SupervisedPixels)
    assert [w.shape for w in sparse.weights] == [w.shape for w in plain.weights]
    sparse.set_weights(plain.get_weights())
    rng = np.random.default_rng(1)
    inputs = {"l": rng.uniform(-1, 1, (4, 32, 48, 1)).astype(np.float32),
              "embedding": rng.normal(0, 1, (4, 1000)).astype(np.float32)}
    dense = keras.ops.convert_to_numpy(plain(inputs, training=True))
    assert np.allclose(keras.ops.convert_to_numpy(sparse(inputs)), dense, atol=1e-5)
    trained = keras.ops.convert_to_numpy(sparse(inputs, training=True))
    assert trained.shape == (4, 8, 12, len(bins))
    assert np.allclose(trained, numpy_subsample(dense, 2), atol=1e-5)
    sparse.save(tmp_path / "sparse.keras")
    loaded = load_model(tmp_path / "sparse.keras")
    assert loaded.get_layer("supervised_pixels").stride == 2
    assert np.allclose(Predictor(loaded)(inputs["l"], inputs["embedding"]),
                       Predictor(plain)(inputs["l"], inputs["embedding"]), atol=1e-5)


def test_the_sparse_loss_is_the_dense_loss_at_the_supervised_pixels(bins):
    rng = np.random.default_rng(2)
    ab = rng.uniform(-60, 60, (5, 16, 16, 2)).astype(np.float32) / 127
    logits = rng.normal(0, 1, (5, 8, 8, len(bins))).astype(np.float32)
    weights = rng.uniform(0.5, 2, len(bins)).astype(np.float32)
    dense = RebalancedCrossEntropy(bins, weights, reduction=None)
    sparse = RebalancedCrossEntropy(bins, weights, supervision_stride=2, reduction=None)
    per_pixel = keras.ops.convert_to_numpy(dense(ab, logits))
    got = keras.ops.convert_to_numpy(sparse(ab, numpy_subsample(logits, 2)))
    assert got.shape == (5, 4, 4)
    assert np.allclose(got, numpy_subsample(per_pixel[..., None], 2)[..., 0], rtol=1e-5, atol=1e-5)
    # validation hands it every pixel: then it is the dense loss
    assert np.allclose(keras.ops.convert_to_numpy(sparse(ab, logits)), per_pixel, rtol=1e-5, atol=1e-5)


def test_the_sparse_loss_names_logits_that_fit_no_grid(bins):
    loss = RebalancedCrossEntropy(bins, np.ones(len(bins), np.float32), supervision_stride=2)
    with pytest.raises(ValueError, match="height 3"):
        loss(np.zeros((1, 16, 16, 2), np.float32), np.zeros((1, 3, 3, len(bins)), np.float32))


JAX_STEP = """
import sys
import numpy as np
import keras
from koala_utils import classification as cls
from koala_utils.model import build_model, compile_model
from koala_utils.rebalanced_loss import RebalancedCrossEntropy
assert keras.backend.backend() == "jax"
bins = cls.ab_bins()
loss = RebalancedCrossEntropy(bins, np.ones(len(bins), np.float32), supervision_stride=2)
model = compile_model(build_model(head="classification", bins=bins, supervision_stride=2), 1e-3, loss=loss)
x = {"l": np.load(sys.argv[1] + "/l.npy"), "embedding": np.load(sys.argv[1] + "/e.npy")}
y = np.load(sys.argv[1] + "/ab.npy")
np.save(sys.argv[1] + "/jax_losses.npy", np.array([float(model.train_on_batch(x, y)) for _ in range(6)]))
"""


def test_a_sparse_training_step_lowers_the_loss_on_tf_and_jax(tmp_path, bins):
    rng = np.random.default_rng(3)
    x = {"l": rng.uniform(-1, 1, (4, 32, 32, 1)).astype(np.float32),
         "embedding": rng.normal(0, 1, (4, 1000)).astype(np.float32)}
    y = np.repeat(np.repeat(rng.uniform(-0.4, 0.4, (4, 4, 4, 2)), 8, axis=1), 8, axis=2).astype(np.float32)
    loss = RebalancedCrossEntropy(bins, np.ones(len(bins), np.float32), supervision_stride=2)
    keras.utils.set_random_seed(0)
    model = compile_model(build_model(head="classification", bins=bins, supervision_stride=2), 1e-3, loss=loss)
    losses = [float(model.train_on_batch(x, y)) for _ in range(6)]
    assert losses[-1] < losses[0]
    for name, value in (("l", x["l"]), ("e", x["embedding"]), ("ab", y)):
        np.save(tmp_path / f"{name}.npy", value)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    subprocess.run([sys.executable, "-c", JAX_STEP, str(tmp_path)], check=True, env=env, timeout=300)
    jax_losses = np.load(tmp_path / "jax_losses.npy")
    assert np.all(np.isfinite(jax_losses)) and jax_losses[-1] < jax_losses[0]
