"""Build the training photo folder from the pinned public repositories (issue 11).

With network (clones the repositories at their pinned commits, blobless and sparse, then writes the photos that
data/training_manifest.csv lists, checking each SHA-256):

    python scripts/training_photos.py --clone-to ~/koala_sources --out ~/koala_photos
    python scripts/training_photos.py --clone-to ~/koala_sources --out ~/koala_photos --limit 20000   # a part

Offline, from bare snapshots (the library's `fetch` tool puts them under /work/.mirror/OWNER+NAME/repo):

    python scripts/training_photos.py --mirror /work/.mirror --out ../photos

`--rebuild-manifest` re-runs the selection (gray, ImageNet-val and duplicate filters, subject cap) and rewrites the
manifest instead of reading it; it is deterministic, so it reproduces the committed file.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from koala_utils import photo_sources  # noqa: E402

MANIFEST = ROOT / "data" / "training_manifest.csv"
VAL = ROOT.parent / "shared" / "data" / "imagenet_val_1300"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--clone-to", help="clone the repositories here (needs network)")
    where.add_argument("--mirror", help="folder of bare snapshots named OWNER+NAME/repo (offline)")
    parser.add_argument("--out", required=True, help="write the photos here, as <source>/<path>")
    parser.add_argument("--manifest", default=str(MANIFEST), help="the manifest to read (or write)")
    parser.add_argument("--limit", type=int, default=None, help="take only this many photos (an even sample)")
    parser.add_argument("--rebuild-manifest", action="store_true", help="re-run the selection, rewrite the manifest")
    parser.add_argument("--val", default=str(VAL), help="validation photos kept out by perceptual hash")
    parser.add_argument("--contact-sheet", default=None, help="also write a sheet of random samples (a .jpg)")
    args = parser.parse_args(argv)

    if args.clone_to:
        git_dirs = photo_sources.fetch(args.clone_to)
    else:
        git_dirs = {s.key: Path(args.mirror) / s.repo.replace("/", "+") / "repo" for s in photo_sources.SOURCES}
    if args.rebuild_manifest:
        exclude = photo_sources.reference_hashes(args.val) if Path(args.val).is_dir() else []
        if not len(exclude):
            print(f"warning: {args.val} not found; ImageNet-val photos are excluded by name only", file=sys.stderr)
        rows = photo_sources.select(git_dirs, exclude_hashes=exclude)
        photo_sources.write_manifest(rows, args.manifest)
        print(f"{args.manifest}: {len(rows)} photos {photo_sources.composition(rows)}")
    rows = photo_sources.read_manifest(args.manifest)
    written = photo_sources.write_photos(rows, git_dirs, args.out, limit=args.limit)
    print(f"{args.out}: wrote {written} photos, {len(rows) if not args.limit else args.limit} listed")
    if args.contact_sheet:
        contact_sheet(rows, Path(args.out), Path(args.contact_sheet))


def contact_sheet(rows, folder, out, count=60, columns=12, side=96, seed=0):
    """A grid of random training photos, ImageNet-derived ones left out (ImageNet photos are never committed)."""
    import numpy as np
    from PIL import Image, ImageOps

    allowed = [r for r in rows if r["licence"] != "imagenet-terms" and "breed_dataset" not in r["path"]]
    chosen = sorted(np.random.default_rng(seed).choice(len(allowed), size=count, replace=False))
    sheet = Image.new("RGB", (columns * side, -(-count // columns) * side), "white")
    for k, i in enumerate(chosen):
        photo = ImageOps.fit(Image.open(folder / allowed[i]["name"]).convert("RGB"), (side - 2, side - 2))
        sheet.paste(photo, ((k % columns) * side + 1, (k // columns) * side + 1))
    sheet.save(out, quality=85)
    print(f"{out}: {count} random photos of {len(allowed)} (Imagenette and ImageNet dog/cat breeds left out)")


if __name__ == "__main__":
    main()
