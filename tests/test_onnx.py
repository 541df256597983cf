"""The ONNX files and the onnxruntime engine: parity with Keras on real photos, no TensorFlow needed, bad files named.

Parity (issue 15): between the engines, max |delta ab| <= 1.0 Lab unit and PSNR >= 45 dB between the RGB
outputs, on the 16 bundled historical photos and 50 ImageNet-val photos, for every shipped model (at several
temperatures for a classification head).
"""

import importlib.util
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra brings tomli
    import tomli as tomllib

from koala_utils import colorize, engine, images
from koala_utils.cli import main

ROOT = Path(__file__).resolve().parents[1]
HISTORICAL = ROOT / "data" / "historical" / "photos"
VAL = Path(os.environ.get("KOALA_DATA", ROOT.parent / "shared" / "data")) / "imagenet_val_1300"
TEMPERATURES = (0.2, 0.38, 1.0)
MAX_AB, MIN_PSNR = 1.0, 45.0
# Never in the light install (`koalarization[colorize]`): light_install_blocked() must block at least these.
HEAVY = ("tensorflow", "keras", "jax", "skimage", "scipy", "h5py", "matplotlib")


def parity_photos():
    historical = sorted(HISTORICAL.iterdir())
    val = sorted(VAL.glob("*.JPEG"))[:50]
    assert len(historical) == 16 and len(val) == 50, f"photos missing: {HISTORICAL}, {VAL}"
    return historical + val


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("name", list(engine.shipped_models()))
def test_onnx_engine_matches_keras_on_real_photos(name):
    onnx_model, onnx_backbone = engine.load_onnx(name)
    keras_model, keras_backbone = engine.load_keras(name)
    temperatures = TEMPERATURES if onnx_model.head == "classification" else (None,)
    worst = {temperature: [0.0, float("inf")] for temperature in temperatures}  # max |delta ab|, min PSNR
    for photo in parity_photos():
        gray = images.to_gray(images.load_image(photo))
        for temperature in temperatures:
            ab_keras = colorize.predict_small_ab(gray, keras_model, keras_backbone, temperature=temperature)[0]
            ab_onnx = colorize.predict_small_ab(gray, onnx_model, onnx_backbone, temperature=temperature)[0]
            worst[temperature][0] = max(worst[temperature][0], float(np.abs(ab_keras - ab_onnx).max()))
            # The RGB outputs at full resolution, through the public functions.
            rgb_keras = colorize.colorize(photo, keras_model, keras_backbone, temperature=temperature)
            rgb_onnx = engine.colorize(photo, name, engine="onnx", temperature=temperature)
            assert rgb_onnx.shape == rgb_keras.shape
            worst[temperature][1] = min(worst[temperature][1], psnr(rgb_keras, rgb_onnx))
    for temperature, (ab, db) in worst.items():
        print(f"{name} T={temperature}: max |delta ab| {ab:.4f}, min PSNR {db:.1f} dB")
    assert max(ab for ab, _ in worst.values()) <= MAX_AB
    assert min(db for _, db in worst.values()) >= MIN_PSNR


def test_committed_onnx_files_are_what_the_script_builds(tmp_path):
    spec = importlib.util.spec_from_file_location("export_onnx", ROOT / "scripts" / "export_onnx.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    written = script.rebuild_committed(tmp_path)
    committed_files = {p.name for p in engine.pretrained.PRETRAINED_DIR.glob("*.onnx")}
    assert {p.name for p in written} == committed_files >= {f"{name}.onnx" for name in engine.shipped_models()}
    for path in written:
        committed = engine.pretrained.PRETRAINED_DIR / path.name
        if committed.read_bytes() != path.read_bytes():
            assert_same_but_rounding(committed, path)


def assert_same_but_rounding(committed, built, rtol=1e-6):
    """The same graph, metadata and weights, the weights equal up to float32 rounding (at most ``rtol`` of each
    tensor's largest value): the float32 backbone converted on another CPU differs in the last bits
    (2e-7 of the largest weight between this machine and the one that built the committed file)."""
    import onnx
    from onnx import numpy_helper

    old, new = onnx.load(str(committed)), onnx.load(str(built))
    weights = [{i.name: numpy_helper.to_array(i) for i in m.graph.initializer} for m in (old, new)]
    for m in (old, new):
        m.graph.ClearField("initializer")
    stale = f"{committed} is stale: python scripts/export_onnx.py"
    assert old.SerializeToString() == new.SerializeToString(), stale
    assert weights[0].keys() == weights[1].keys(), stale
    for name, a in weights[0].items():
        b = weights[1][name]
        assert a.dtype == b.dtype and a.shape == b.shape, f"{stale} ({name})"
        scale = float(np.abs(a).max()) if a.size and a.dtype.kind == "f" else 0.0
        assert np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0) <= rtol * scale, f"{stale} ({name})"


def _normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def light_install():
    """Normalised names of the distributions ``pip install koalarization[colorize]`` brings, read from
    pyproject.toml and expanded through the installed distributions' own requirements."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["colorize"]]
    found = set()
    while todo:
        requirement = todo.pop()
        name = _normalise(requirement.name)
        if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        found.add(name)
        todo += [Requirement(r) for r in metadata.distribution(name).requires or []]
    return found


def light_install_blocked():
    """Top-level modules of every installed distribution outside the light install (none that one inside shares)."""
    allowed = light_install() | {"koalarization"}
    owners = metadata.packages_distributions()
    blocked = {module for module, dists in owners.items() if not {_normalise(d) for d in dists} & allowed}
    assert blocked >= set(HEAVY), sorted(set(HEAVY) - blocked)
    return sorted(blocked)


def _run_without_tensorflow(tmp_path, *args):
    """``python -m koala_utils.cli ARGS`` where only the light install's packages (and the standard library)
    import: every other installed distribution's modules fail to import, TensorFlow and Keras among them."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in light_install_blocked())
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "koala_utils.cli", *map(str, args)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_cli_colorizes_with_tensorflow_and_keras_unimportable(tmp_path):
    photo = HISTORICAL / "einstein_1921_schmutzer.jpg"
    result = _run_without_tensorflow(tmp_path, "colorize", photo, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "onnx engine" in result.stderr
    written = tmp_path / "out" / "einstein_1921_schmutzer_colorized.png"
    with Image.open(written) as img:
        rgb = np.asarray(img.convert("RGB"))
    assert rgb.shape[:2] == images.load_image(photo).shape[:2]
    assert np.array_equal(rgb, engine.colorize(photo, engine="onnx"))  # the same pixels as in this process
    assert np.abs(rgb.astype(int) - rgb.mean(axis=-1, keepdims=True)).max() > 10  # it has colour
    # The shim does block them: the Keras engine cannot start there, and says why.
    result = _run_without_tensorflow(tmp_path, "colorize", photo, "-o", tmp_path / "out2", "--engine", "keras")
    assert result.returncode == 2
    assert "the keras engine needs Keras and TensorFlow" in result.stderr


def test_a_corrupt_onnx_file_is_named_once(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(engine.shipped_onnx_path(engine.default_model_name()).read_bytes()[:5000])
    with pytest.raises(engine.OnnxModelError, match="broken.onnx"):
        engine.load_onnx(bad)
    result = _run_without_tensorflow(tmp_path, "colorize", HISTORICAL / "buffalo_bank_1908.jpg", "-o",
                                     tmp_path / "out", "--model", bad)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and str(bad) in errors[0], result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_mismatched_backbone_file_is_named(tmp_path):
    colorizer = engine.shipped_onnx_path(engine.default_model_name()).read_bytes()
    (tmp_path / "mine.onnx").write_bytes(colorizer)
    (tmp_path / "efficientnet_lite0.onnx").write_bytes(colorizer)  # a colorizer where the backbone belongs
    with pytest.raises(engine.OnnxModelError, match="efficientnet_lite0.onnx.*not a Koalarization backbone"):
        engine.load_onnx(tmp_path / "mine.onnx")


def test_an_onnx_file_from_other_weights_is_refused(tmp_path):
    other = tmp_path / "other.weights.h5"
    other.write_bytes(b"not the weights the ONNX file was built from")
    path = engine.shipped_onnx_path(engine.default_model_name())
    with pytest.raises(engine.OnnxModelError, match=f"{path.name}.*stale"):
        engine.OnnxColorizer(path, source=other)
    engine.OnnxColorizer(path, source=engine.shipped_models()[engine.default_model_name()])  # the right ones pass


def test_a_foreign_onnx_file_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), str(path))
    with pytest.raises(engine.OnnxModelError, match="identity.onnx.*not a Koalarization colorizer"):
        engine.OnnxColorizer(path)


def test_the_onnx_backbone_converts_gray_input_as_the_keras_one():
    backbone = engine.OnnxBackbone(engine.pretrained.PRETRAINED_DIR / "efficientnet_lite0.onnx")
    gray = images.to_gray(images.load_image(sorted(HISTORICAL.iterdir())[0]))
    as_uint8 = backbone.embed([gray, gray[..., None]])
    assert np.array_equal(as_uint8[0], as_uint8[1])
    # A float gray photo in [0, 1] is the same photo (images.gray_uint8), not truncated to black.
    as_float = backbone.embed([gray.astype(np.float32) / 255.0])
    assert np.array_equal(as_float[0], as_uint8[0])


def test_engine_choice():
    assert engine.choose("auto", None) == "onnx"  # onnxruntime is installed and the shipped model has its file
    assert engine.choose("keras", None) == "keras"
    assert engine.choose("auto", "runs/mine") == "keras"  # no ONNX file for a run folder
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        engine.choose("onnx", "runs/mine")
    with pytest.raises(ValueError, match="unknown engine"):
        engine.choose("tflite", None)


def test_koala_export_writes_files_that_colorize_like_keras(tmp_path, capsys):
    out = tmp_path / "mine.onnx"
    assert main(["export", "pretrained", str(out)]) == 0
    assert (tmp_path / "efficientnet_lite0.onnx").is_file()
    photo = HISTORICAL / "migrant_mother_nipomo_1936.jpg"
    keras_model, keras_backbone = engine.load_keras(None)
    expected = colorize.colorize(photo, keras_model, keras_backbone)
    assert psnr(engine.colorize(photo, out), expected) >= MIN_PSNR
    # An existing file is not replaced without --overwrite, and the error names it.
    capsys.readouterr()
    assert main(["export", "pretrained", str(out)]) == 2
    assert str(out) in capsys.readouterr().err


def _clip(count=8):
    from koala_utils import video

    return list(video.pan_clip(images.load_image(HISTORICAL / "detroit_circa_1915.jpg"), frames=count, size=(144, 256)))


def test_video_on_the_onnx_engine_matches_keras():
    from koala_utils import video

    frames = _clip()
    outputs = {}
    for name, (model, backbone) in {"onnx": engine.load_onnx(None), "keras": engine.load_keras(None)}.items():
        outputs[name] = list(video.colorize_frames(frames, model, backbone, video.Settings(batch=4)))
    assert len(outputs["onnx"]) == len(frames)
    assert min(psnr(a, b) for a, b in zip(outputs["onnx"], outputs["keras"], strict=True)) >= MIN_PSNR


def test_cli_colorizes_a_video_with_tensorflow_and_keras_unimportable(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(_clip()):
        Image.fromarray(frame).save(folder / f"frame_{index:03d}.png")
    out = tmp_path / "clip.mp4"
    result = _run_without_tensorflow(tmp_path, "colorize-video", folder, "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "onnx engine" in result.stderr
    assert out.is_file() and out.stat().st_size > 1000


def test_an_onnx_colorizer_that_names_no_backbone_is_refused(tmp_path):
    import onnx

    proto = onnx.load(str(engine.shipped_onnx_path(engine.default_model_name())))
    kept = [p for p in proto.metadata_props if p.key != "koala.backbone"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    path = tmp_path / "anonymous.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(engine.OnnxModelError, match="anonymous.onnx.*backbone"):
        engine.OnnxColorizer(path)


def test_the_keras_engine_refuses_a_model_file_that_names_no_backbone(tmp_path):
    from koala_utils import backbone_record
    from koala_utils.model import build_model

    path = tmp_path / "bare.keras"
    build_model(1000).save(path)  # records no backbone, and no config.json beside it
    with pytest.raises(backbone_record.BackboneMismatchError, match="bare.keras"):
        engine.load_keras(path)
