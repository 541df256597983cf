"""The network: parameter count, any input size, safe saving, both backends."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from koala_utils.model import PARAMS_1000, FusionLayer, Predictor, build_model, load_model


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model()


def test_parameter_count_matches_the_paper_architecture(model):
    assert model.count_params() == PARAMS_1000 == 6_573_794


# Table 1 of the paper, in order: (kind, filters, kernel, stride, activation); "up" is a x2 upsampling.
TABLE_1 = [
    ("conv", 64, 3, 2, "relu"), ("conv", 128, 3, 1, "relu"), ("conv", 128, 3, 2, "relu"),
    ("conv", 256, 3, 1, "relu"), ("conv", 256, 3, 2, "relu"), ("conv", 512, 3, 1, "relu"),
    ("conv", 512, 3, 1, "relu"), ("conv", 256, 3, 1, "relu"),  # encoder
    ("fusion",), ("conv", 256, 1, 1, "relu"),  # fusion: tile, concatenate, 1x1 conv
    ("conv", 128, 3, 1, "relu"), ("up",), ("conv", 64, 3, 1, "relu"), ("conv", 64, 3, 1, "relu"), ("up",),
    ("conv", 32, 3, 1, "relu"), ("conv", 2, 3, 1, "tanh"), ("up",),  # decoder: the last upsampling after the tanh
]


def _describe(layer):
    if isinstance(layer, keras.layers.Conv2D):
        return ("conv", layer.filters, *layer.kernel_size[:1], *layer.strides[:1], layer.activation.__name__)
    if isinstance(layer, keras.layers.UpSampling2D):
        return ("up",) if tuple(layer.size) == (2, 2) and layer.interpolation == "nearest" else ("up?", layer.size)
    if isinstance(layer, FusionLayer):
        return ("fusion",)
    return (type(layer).__name__,)


def test_every_layer_matches_table_1(model):
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert [_describe(layer) for layer in layers] == TABLE_1
    for layer in layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.padding == "same" and tuple(layer.kernel_size) == (layer.kernel_size[0],) * 2, layer.name
            assert tuple(layer.strides) == (layer.strides[0],) * 2 and layer.use_bias, layer.name


def test_layer_shapes(model):
    shapes = {layer.name: layer.output.shape for layer in model.layers}
    assert shapes["encoder_8"] == (None, None, None, 256)
    assert shapes["fusion_tile"] == (None, None, None, 1256)
    assert shapes["fusion_conv"] == (None, None, None, 256)
    assert model.get_layer("decoder_ab").activation.__name__ == "tanh"
    # The last upsampling comes after the tanh, as in the authors' code.
    assert isinstance(model.layers[-1], keras.layers.UpSampling2D)


def test_fusion_tiles_the_embedding():
    features = np.zeros((2, 3, 5, 4), np.float32)
    embedding = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = keras.ops.convert_to_numpy(FusionLayer()([features, embedding]))
    assert out.shape == (2, 3, 5, 7)
    assert (out[1, 2, 4, 4:] == [3, 4, 5]).all() and (out[0, 0, 0, 4:] == [0, 1, 2]).all()


@pytest.mark.parametrize("size", [(224, 224), (37, 53), (1, 1), (8, 200), (129, 64)])
def test_predict_any_size(model, size):
    l_scaled = np.random.default_rng(0).uniform(-1, 1, (1, *size, 1)).astype(np.float32)
    ab = Predictor(model)(l_scaled, np.zeros((1, 1000), np.float32))
    assert ab.shape == (1, *size, 2)
    assert np.abs(ab).max() <= 1.0


def test_output_layer_stays_float32_under_mixed_precision():
    mixed = build_model(dtype_policy="mixed_bfloat16")
    assert mixed.get_layer("encoder_1").compute_dtype == "bfloat16"
    assert mixed.get_layer("decoder_ab").compute_dtype == "float32"
    assert mixed.output.dtype == "float32"
    assert mixed.count_params() == PARAMS_1000


def test_save_and_load_with_safe_mode(model, tmp_path):
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    x = {"l": np.zeros((1, 16, 16, 1), np.float32), "embedding": np.ones((1, 1000), np.float32)}
    assert np.allclose(model.predict_on_batch(x), loaded.predict_on_batch(x), atol=1e-6)
    # No Lambda layers anywhere: the config is plain data.
    assert "Lambda" not in json.dumps(model.get_config())


def test_the_backbone_record_survives_saving_with_safe_mode(tmp_path):
    from koala_utils import pretrained
    from koala_utils.backbone_record import recorded

    path = tmp_path / "irv2.keras"
    build_model(backbone="inception_resnet_v2").save(path)
    assert recorded(load_model(path)) == ("inception_resnet_v2", 1000)
    assert recorded(build_model(embed_dim=7)) == (None, 7)  # built without one: nothing is assumed
    assert recorded(pretrained.load("paper")) == ("efficientnet_lite0", 1000)  # the shipped weights, from the card


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_model(tmp_path / "missing.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"no zip here")
    with pytest.raises(ValueError, match="junk.keras"):
        load_model(junk)


JAX_SCRIPT = """
import sys, numpy as np, keras
from koala_utils.model import build_model, Predictor, load_model
assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(1)
m = build_model()
x = np.linspace(-1, 1, 37 * 45, dtype="float32").reshape(1, 37, 45, 1)
e = np.linspace(-3, 3, 1000, dtype="float32")[None]
np.save(sys.argv[1] + "/jax_out.npy", Predictor(m)(x, e))
m.save(sys.argv[1] + "/jax_model.keras")
print(m.count_params())
"""


def test_jax_backend_builds_saves_and_agrees_with_tensorflow(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    run = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith(str(PARAMS_1000))
    loaded = load_model(tmp_path / "jax_model.keras")  # a JAX-saved model loads on TensorFlow
    x = np.linspace(-1, 1, 37 * 45, dtype="float32").reshape(1, 37, 45, 1)
    e = np.linspace(-3, 3, 1000, dtype="float32")[None]
    assert np.allclose(Predictor(loaded)(x, e), np.load(tmp_path / "jax_out.npy"), atol=1e-4)
