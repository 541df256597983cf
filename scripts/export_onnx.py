"""Build the shipped models' ONNX files from the committed Keras weights.

    python scripts/export_onnx.py            # every shipped model, float16 where parity holds (measured)
                                             # (and removes ONNX files of models that no longer ship)
    python scripts/export_onnx.py --check    # rebuild into a temporary folder, compare with the committed files

Writes ``koala_utils/pretrained/<name>.onnx`` for each shipped model and the
backbone ``koala_utils/pretrained/efficientnet_lite0.onnx``. Each file is first
exported with float32 weights; its float16 copy replaces it only when the
colours it gives stay within ``--tolerance`` Lab units (max |delta ab|, at the
network's resolution) of the Keras model's on the 16 bundled historical photos
(at several temperatures for a classification head). The choice is recorded in
the file (``koala.weights_dtype``), so ``--check`` and the tests rebuild the
same bytes without measuring again.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from koala_utils import engine, onnx_export, pretrained  # noqa: E402

PHOTOS = ROOT / "data" / "historical" / "photos"
TEMPERATURES = (0.2, 0.38, 1.0)
# Float16 weights are kept only while they move no colour by more than this (the parity budget is 1.0).
TOLERANCE = 0.25


def load_shipped(name):
    """The Keras model and its card for a shipped name."""
    kwargs = {"name": name} if getattr(pretrained, "NAMES", None) else {}
    return pretrained.load(return_info=True, **kwargs)


def build(name, out_dir, float16, backbone_float16):
    """Export one shipped model (and its backbone) with the given weight precisions; returns both paths."""
    model, card = load_shipped(name)
    backbone = card.get("backbone", "efficientnet_lite0")
    return onnx_export.export(model, Path(out_dir) / f"{name}.onnx", backbone=backbone, float16=float16,
                              backbone_float16=backbone_float16, name=name, source=engine.shipped_models()[name])


def committed_precision(path):
    """``koala.weights_dtype == "float16"`` of a committed ONNX file (False when there is none)."""
    import onnx

    if not Path(path).is_file():
        return False
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return meta.get("koala.weights_dtype") == "float16"


def max_ab_drift(keras_pair, onnx_pair, photos, temperatures):
    """Largest |delta ab| (Lab units) between two engines over photos and temperatures, at network resolution."""
    from koala_utils import colorize, images

    worst = 0.0
    for photo in photos:
        gray = images.to_gray(images.load_image(photo))
        for temperature in temperatures:
            ab = [colorize.predict_small_ab(gray, model, backbone, temperature=temperature)[0]
                  for model, backbone in (keras_pair, onnx_pair)]
            worst = max(worst, float(np.abs(ab[0] - ab[1]).max()))
    return worst


def measure_and_build(name, out_dir, tolerance):
    """Export float32, measure the float16 copies against Keras, keep float16 where within ``tolerance``."""
    from koala_utils.backbones import get_backbone

    with tempfile.TemporaryDirectory(prefix="koala_onnx_") as tmp:
        build(name, tmp, float16=False, backbone_float16=False)
        model, card = load_shipped(name)
        keras_pair = (model, get_backbone(card.get("backbone", "efficientnet_lite0")))
        head = engine.OnnxColorizer(Path(tmp) / f"{name}.onnx").head
        temperatures = TEMPERATURES if head == "classification" else (None,)
        photos = sorted(PHOTOS.iterdir())
        choice = {"float16": False, "backbone_float16": False}
        for float16, backbone_float16 in ((False, False), (True, False), (True, True)):
            folder = Path(tmp) / f"{int(float16)}{int(backbone_float16)}"
            _copy_precision(Path(tmp), folder, name, float16, backbone_float16)
            drift = max_ab_drift(keras_pair, engine.load_onnx(folder / f"{name}.onnx"), photos, temperatures)
            print(f"{name}: colorizer {'float16' if float16 else 'float32'}, backbone "
                  f"{'float16' if backbone_float16 else 'float32'}: max |delta ab| {drift:.4f} over "
                  f"{len(photos)} photos x {len(temperatures)} temperature(s)")
            if not float16 and drift > 1.0:
                raise SystemExit(f"{name}: the float32 ONNX file is {drift:.3f} Lab units off Keras: export broken")
            if drift <= tolerance:
                choice = {"float16": float16, "backbone_float16": backbone_float16}
    print(f"{name}: keeping {choice}")
    return build(name, out_dir, **choice)


def _copy_precision(src, dst, name, float16, backbone_float16):
    """Copies of the float32 files in ``src`` with float16 weights where asked (no second export)."""
    import onnx

    dst.mkdir(parents=True, exist_ok=True)
    for filename, half in ((f"{name}.onnx", float16), ("efficientnet_lite0.onnx", backbone_float16)):
        proto = onnx.load(str(src / filename))
        if half:
            onnx_export.weights_to_float16(proto)
            for prop in proto.metadata_props:
                if prop.key == "koala.weights_dtype":
                    prop.value = "float16"
        onnx.save(proto, str(dst / filename))


def rebuild_committed(out_dir):
    """Rebuild every shipped model with the precisions the committed files record; returns written paths."""
    written = []
    for name in engine.shipped_models():
        committed = engine.shipped_onnx_path(name)
        backbone_file = pretrained.PRETRAINED_DIR / "efficientnet_lite0.onnx"
        written += build(name, out_dir, committed_precision(committed), committed_precision(backbone_file))
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="rebuild into a temporary folder and compare bytes")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest |delta ab| float16 may add")
    p.add_argument("--out", default=str(pretrained.PRETRAINED_DIR), help="output folder")
    args = p.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory(prefix="koala_onnx_check_") as tmp:
            stale = [path.name for path in rebuild_committed(tmp)
                     if (pretrained.PRETRAINED_DIR / path.name).read_bytes() != path.read_bytes()]
        print("stale: " + ", ".join(stale) if stale else "the committed ONNX files match the Keras weights")
        return 1 if stale else 0
    written = set()
    for name in engine.shipped_models():
        for path in measure_and_build(name, args.out, args.tolerance):
            print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
            written.add(path.name)
    for old in sorted(Path(args.out).glob("*.onnx")):
        if old.name not in written:  # a model that no longer ships
            old.unlink()
            print(f"removed {old} (no shipped model of that name)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
