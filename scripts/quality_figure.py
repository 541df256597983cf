"""The README's and model card's vividness figure: PSNR against CF ratio on the three sets of the quality benchmark.

    python scripts/quality_figure.py      # benchmarks/results/quality.json -> docs/images/vividness_curve.png
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "results" / "quality.json"
OUT = ROOT / "docs" / "images" / "vividness_curve.png"
SETS = (("selection", "Selection slice (settings chosen here)"), ("imagenet_val_1300", "ImageNet val, 1284 photos"),
        ("prokudin_gorskii", "Prokudin-Gorskii plates, 23"))


def main():
    from matplotlib.figure import Figure

    from koala_utils.figures import plot_vividness

    report = json.loads(REPORT.read_text())
    fig = Figure(figsize=(6.0 * len(SETS), 4.6))
    for ax, (set_name, title) in zip(fig.subplots(1, len(SETS)), SETS, strict=True):
        plot_vividness(report, set_name, ax, title=title)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
