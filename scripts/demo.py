"""`make demo`: the whole pipeline on data that ships with the project, in a few minutes.

1. prepare records from bundled colour photos (the aligned Prokudin-Gorskii plates and the
   photos inside scikit-image and matplotlib),
2. train a small model for a couple of minutes on them (a few-minute model, only to show the loop),
3. colorize the bundled historical black-and-white photos at full resolution with the shipped
   model (or, if the package lacks it, with the few-minute model, and it says so),
4. write a before/after gallery to outputs/demo_gallery.png.
"""

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "data" / "historical" / "photos"


def bundled_colour_photos():
    """(name, RGB array) pairs that need no download."""
    import matplotlib.cbook
    import skimage.data

    from koala_utils import historical, images

    photos = [(f"plate_{p.stem}", historical.load_plate(p)) for p in historical.plate_paths()]
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field"):
        photos.append((f"skimage_{name}", getattr(skimage.data, name)()))
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        photos.append(("matplotlib_grace_hopper", images.load_image(fh.name if hasattr(fh, "name") else fh)))
    return photos


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "outputs"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()

    from koala_utils import data, pretrained
    from koala_utils.backbones import get_backbone
    from koala_utils.colorize import colorize_files
    from koala_utils.evaluate import before_after_gallery
    from koala_utils.images import list_images, load_image, to_gray
    from koala_utils.train import train

    out = Path(args.out)
    start = time.time()
    print("1/4 preparing records from bundled colour photos ...")
    manifest = data.prepare(bundled_colour_photos(), out / "demo_records", shard_size=64)
    print(f"    {manifest['counts']['train']} train / {manifest['counts']['val']} val records, "
          f"{manifest['bytes_per_image'] / 1024:.1f} KB per photo")

    print("2/4 training a few-minute model (128 px, bf16) ...")
    quick, history = train(out / "demo_records", out / "demo_run", epochs=args.epochs, batch_size=8,
                           mixed_precision="bf16", image_size=128, steps_per_epoch=args.steps, verbose=2)
    print(f"    loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f} over {len(history['loss'])} epochs")

    if pretrained.available():
        model, card = pretrained.load(return_info=True)
        label = f"the shipped model ({card['summary']})"
    else:
        model, label = quick, "the few-minute demo model (no shipped model in this installation)"
    print(f"3/4 colorizing {PHOTOS.relative_to(ROOT)} with {label} ...")
    backbone = get_backbone("efficientnet_lite0")
    photos = list_images(PHOTOS)
    report = colorize_files(photos, out / "colorized", model, backbone, overwrite=True, log=lambda line: None)
    for _, reason in report["failed"]:
        print(f"    failed: {reason}")

    print("4/4 writing the gallery ...")
    pairs = [(to_gray(load_image(src)), load_image(dst)) for src, dst in report["written"]]
    titles = [Path(src).stem for src, _ in report["written"]]
    gallery = before_after_gallery([p[0] for p in pairs], [p[1] for p in pairs], titles, out / "demo_gallery.png")
    print(f"done in {time.time() - start:.0f} s: {gallery} ({len(pairs)} photos; full size in {out / 'colorized'})")
    print(f"colours by {label}.")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
