"""The README's figure: four bundled historical photos, gray | the `paper` model | the `vivid` model.

    python scripts/readme_figure.py       # -> docs/images/historical_before_after.jpg
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("ansel_adams_colorado_1941.png", "new_york_riverfront_december_15_1931.jpg",
          "migrant_mother_nipomo_1936.jpg", "detroit_circa_1915.jpg")
OUT = ROOT / "docs" / "images" / "historical_before_after.jpg"


def main():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from koala_utils import pretrained
    from koala_utils.backbones import get_backbone
    from koala_utils.colorize import colorize
    from koala_utils.images import load_image, to_gray

    backbone = get_backbone("efficientnet_lite0")
    models = {name: pretrained.load(name) for name in ("paper", "vivid")}
    fig, axes = plt.subplots(len(PHOTOS), 3, figsize=(10.5, 3.0 * len(PHOTOS)))
    for row, name in enumerate(PHOTOS):
        gray = to_gray(load_image(ROOT / "data" / "historical" / "photos" / name))
        shown = [("black and white", gray)] + [(f"'{m}' model", colorize(gray, model, backbone))
                                               for m, model in models.items()]
        for ax, (title, image) in zip(axes[row], shown, strict=True):
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(OUT, dpi=80, pil_kwargs={"quality": 85})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
