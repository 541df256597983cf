"""Backbone embedding throughput, record preparation cost, and the storage format of the record cache.

    python benchmarks/embed_throughput.py [--quick]

* img/s of ``Backbone.embed`` (white-padded resize, gray stacked to 3 channels, forward
  pass) for EfficientNet-Lite0 with its real ImageNet weights and for Inception-ResNet-v2
  built with ``weights=None`` (no network here; speed does not depend on the weights);
* seconds per image of ``data.prepare`` into a fresh folder, and of the same call again
  when every shard is complete (it only checks checksums);
* bytes per cached image, and the colour error of the stored 224 px photo against the
  original: JPEG q95 4:4:4 (the format used) vs 4:2:0 JPEG and lossless PNG.
"""

import io
import time
import warnings

import _common

FORMATS = (
    ("JPEG q95 4:4:4 (used)", {"format": "JPEG", "quality": 95, "subsampling": 0}),
    ("JPEG q95 4:2:0", {"format": "JPEG", "quality": 95, "subsampling": 2}),
    ("JPEG q90 4:2:0", {"format": "JPEG", "quality": 90, "subsampling": 2}),
    ("PNG (lossless)", {"format": "PNG", "optimize": False}),
)


def embed_rate(backbone, grays, batch_size=32):
    backbone.embed(grays[: min(len(grays), batch_size)], batch_size=batch_size)  # warm-up, builds the function
    start = time.perf_counter()
    backbone.embed(grays, batch_size=batch_size)
    return len(grays) / (time.perf_counter() - start)


def prepare_cost(paths, backbone):
    """Seconds per image of data.prepare, fresh and on a re-run with everything cached."""
    from koala_utils import data

    out = _common.fresh_dir(_common.CACHE / "prepare_bench")
    start = time.perf_counter()
    manifest = data.prepare(paths, out, backbone=backbone, shard_size=max(4, len(paths) // 2), progress=False)
    fresh = time.perf_counter() - start
    start = time.perf_counter()
    again = data.prepare(paths, out, backbone=backbone, shard_size=max(4, len(paths) // 2), progress=False)
    rerun = time.perf_counter() - start
    if again["reused_images"] != len(paths):
        raise RuntimeError(f"re-run re-did work: reused {again['reused_images']} of {len(paths)}")
    return fresh / len(paths), rerun / len(paths), manifest["bytes_per_image"]


def storage_errors(paths, size=224):
    """Per format: mean bytes per image and mean / 99th-percentile |delta ab| against the original."""
    import numpy as np
    from PIL import Image

    from koala_utils import color, images

    stats = {name: {"bytes": [], "dab": []} for name, _ in FORMATS}
    for path in paths:
        padded, (top, left, h, w) = images.resize_pad(images.load_image(path), size)
        truth = color.rgb_to_lab(padded)[top : top + h, left : left + w, 1:]
        for name, options in FORMATS:
            buffer = io.BytesIO()
            Image.fromarray(padded).save(buffer, **options)
            stats[name]["bytes"].append(buffer.tell())
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            ab = color.rgb_to_lab(decoded)[top : top + h, left : left + w, 1:]
            stats[name]["dab"].append(np.sqrt(((ab - truth) ** 2).sum(-1)).ravel())
    out = {}
    for name, st in stats.items():
        dab = np.concatenate(st["dab"])
        out[name] = {"bytes": float(np.mean(st["bytes"])), "mean_dab": float(dab.mean()),
                     "p99_dab": float(np.percentile(dab, 99))}
    return out


def run(quick=False):
    _common.quiet_tensorflow()
    from koala_utils import backbones, images

    # --quick leaves Inception-ResNet-v2 out: building and tracing it alone takes ~20 s on 2 cores.
    cfg = {"embed": 8, "irv2": 0, "prepare": 6, "storage": 6} if quick else \
        {"embed": 96, "irv2": 16, "prepare": 48, "storage": 100}
    paths = _common.sample_photos(max(cfg.values()))
    grays = [images.to_gray(images.load_image(p)) for p in paths[: cfg["embed"]]]
    records = _common.cached_records(32 if quick else 200)
    from koala_utils import data

    cache_bytes = data.read_manifest(records)["bytes_per_image"]
    with _common.LoadMonitor() as load:
        lite0 = backbones.get_backbone("efficientnet_lite0")
        lite0_rate = embed_rate(lite0, grays)
        irv2_rate = None
        if cfg["irv2"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", backbones.RandomWeightsWarning)
                irv2 = backbones.get_backbone("inception_resnet_v2", weights=None)
            irv2_rate = embed_rate(irv2, grays[: cfg["irv2"]], batch_size=8)
        per_image, rerun_per_image, prepare_bytes = prepare_cost(paths[: cfg["prepare"]], lite0)
        storage = storage_errors(paths[: cfg["storage"]])
    used = storage["JPEG q95 4:4:4 (used)"]
    rows = [
        ["EfficientNet-Lite0 embed (real ImageNet weights), img/s", lite0_rate],
        ["Inception-ResNet-v2 embed (weights=None, same speed), img/s", irv2_rate if irv2_rate else "not run"],
        ["data.prepare, fresh, ms per image", per_image * 1000],
        ["data.prepare, re-run (all cached), ms per image", rerun_per_image * 1000],
        ["cached record, bytes per image (200-photo cache)", cache_bytes],
    ]
    fmt_rows = [[name, st["bytes"] / 1000, st["mean_dab"], st["p99_dab"]] for name, st in storage.items()]
    figures = {
        "lite0_img_s": lite0_rate,
        "irv2_img_s": irv2_rate,
        "prepare_ms_per_image": per_image * 1000,
        "prepare_rerun_ms_per_image": rerun_per_image * 1000,
        "bytes_per_image": cache_bytes,
        "prepare_bench_bytes_per_image": prepare_bytes,
        "jpeg444_mean_dab": used["mean_dab"],
        "storage": storage,
    }
    notes = [
        f"embed: {len(grays)} gray photos (Lite0), {cfg['irv2'] or 'not run with --quick'} (Inception-ResNet-v2), "
        "batch 32 / 8, after warm-up",
        f"prepare: {cfg['prepare']} photos, Lite0 built beforehand; the re-run only hashes inputs and shards",
        "record bytes = JPEG + 1000 float32 logits (4 KB) + name and box",
        "delta ab = Euclidean distance in the ab plane (Lab units) per pixel, inside the photo's box, "
        f"vs the uncompressed 224 px photo; {cfg['storage']} photos",
        "storage formats:\n\n" + _common.markdown_table(["format", "KB per image", "mean delta ab", "p99 delta ab"],
                                                         fmt_rows),
    ]
    targets = [
        _common.target("bytes per cached image", cache_bytes, "<=", 60_000),
        _common.target("prepare re-run / fresh", rerun_per_image / per_image, "<=", 0.05),
    ]
    return _common.report("embed_throughput", "Backbone embedding, record preparation and record size",
                          ["what", "value"], rows, figures=figures, load=load, targets=targets, notes=notes)


def main(argv=None):
    return _common.main(run, __doc__, argv)


if __name__ == "__main__":
    main()
