"""Choosing the coherent mode's knobs on tuning clips (never the clips video_quality.py reports).

    python benchmarks/video_tuning.py [--quick] [--json OUT] [--footage DIR] [--model vivid]

Tuning clips, all with true colours (so PSNR is measured):

* **stills**, 24 frames at 144 x 256: four zooming pans across Prokudin-Gorskii plates
  (``pan 00029u`` ...); two "crossing" clips, a slow pan over one plate while a patch of
  another crosses at 10 px a frame; two "wide" clips, a fast diagonal pan at 2.35:1 with
  a patch crossing at 30 px a frame;
* **footage**, real moving pictures in 24-frame windows at up to 640 px: the colour sample
  videos of OpenCV, which Debian packages (``Megamind.avi``, 270 frames of an animated
  film; ``vtest.avi``, 795 frames of people walking across a square). Not in shared/;
  on a Debian machine::

      apt-get download opencv-doc && dpkg-deb -x opencv-doc_*.deb /tmp/opencv-doc
      python benchmarks/video_tuning.py --footage /tmp/opencv-doc/usr/share/doc/opencv-doc/examples/data

  Without them only the stills run, and the report says so. The stills move rigid
  photos; only real footage shows a network changing its mind about a surface it
  already coloured (a new object enters, the classifier's logits move), which is
  where carried colour costs accuracy.

Every setting of ``GRID`` runs through ``koala_utils.video.colorize_frames`` itself; the
network's and the backbone's answers are memoised in ``benchmarks/.cache`` (the same
inputs give the same outputs), so the grid costs little more than one pass per embedding
schedule. Printed per setting, over each group of clips: mean colour WE ratio, CDC ratio
and colour CDC ratio (coherent / per-frame; "colour": above the gray source's, the part
its L does not set), mean and worst PSNR difference to per-frame (dB). The rule that
picks the default: the least flicker with every tuning clip within 0.2 dB of per-frame.
"""

import hashlib
import pickle
import statistics
import time
from pathlib import Path

import _common
import numpy as np

PLATES = ("00029u", "00106v", "00163v", "00757v")
CROSSINGS = (("00087u", "00888v"), ("00351v", "00992u"))
WIDE = (("00128u", "00737u"), ("00137v", "00822u"))
SIZE = (144, 256)
WIDE_SIZE = (272, 640)
FRAMES = 24
FOOTAGE = Path("/usr/share/doc/opencv-doc/examples/data")  # where Debian's opencv-doc puts them
FOOTAGE_CLIPS = {"Megamind": range(0, 264, 24), "vtest": range(0, 790, 72)}  # 24-frame windows from these frames
FOOTAGE_SIDE = 640
# Flow knobs fixed at the second round's choice (fast DIS, 2 px^2, match 10; docs/video.md).
GRID = {
    "per-frame": {"embed_every": 1, "embed_momentum": 0.0, "blend": 0.0},
    "embedding only": {"blend": 0.0, "agree_sigma": 0.0},
    "blend 0.9, no agreement check (earlier default)": {"blend": 0.9, "agree_sigma": 0.0},
    "blend 0.7, no agreement check": {"blend": 0.7, "agree_sigma": 0.0},
    "blend 0.9, agreement 10": {"blend": 0.9, "agree_sigma": 10.0},
    "blend 0.9, agreement 8": {"blend": 0.9, "agree_sigma": 8.0},
    "blend 0.9, agreement 6": {"blend": 0.9, "agree_sigma": 6.0},
    "blend 0.9, agreement 4": {"blend": 0.9, "agree_sigma": 4.0},
    "blend 0.95, agreement 6": {"blend": 0.95, "agree_sigma": 6.0},
    "blend 0.8, agreement 10": {"blend": 0.8, "agree_sigma": 10.0},
    "blend 0.9, agreement 12": {"blend": 0.9, "agree_sigma": 12.0},  # wider checks, for the vivid model's
    "blend 0.9, agreement 16": {"blend": 0.9, "agree_sigma": 16.0},  # bigger frame-to-frame swings
}


def _plate(name):
    from koala_utils import historical

    path = next(p for p in historical.plate_paths() if p.stem == name)
    return historical.load_plate(path)


def crossing_clip(background, patch, frames=FRAMES, size=SIZE, speed=10):
    """A slow pan over ``background`` while a 64 x 80 crop of ``patch`` crosses left to right."""
    import cv2

    from koala_utils import video

    h, w = size
    crop = cv2.resize(patch[patch.shape[0] // 3:, patch.shape[1] // 3:][: patch.shape[0] // 3, : patch.shape[1] // 3],
                      (80, 64), interpolation=cv2.INTER_AREA)
    for t, frame in enumerate(video.pan_clip(background, frames=frames, size=size, zoom=1.1)):
        frame = frame.copy()
        left, top = -60 + speed * t, h // 2 - 32 + round(8 * np.sin(t / 3))
        x0, x1 = max(0, left), min(w, left + 80)
        if x1 > x0:
            frame[top:top + 64, x0:x1] = crop[:, x0 - left:x1 - left]
        yield frame


def wide_clip(background, patch, frames=FRAMES, size=WIDE_SIZE, step=(10, 10), speed=30):
    """A fast diagonal pan (``step`` px a frame) at 2.35:1 while a 96 x 120 patch crosses right to left.

    Wide frames give the network a small picture (224 x 95 here), the hard case for the flow.
    """
    import cv2

    h, w = size
    back = cv2.resize(background, (900, round(background.shape[0] * 900 / background.shape[1])),
                      interpolation=cv2.INTER_AREA)
    crop = cv2.resize(patch[patch.shape[0] // 3:, patch.shape[1] // 3:][: patch.shape[0] // 3, : patch.shape[1] // 3],
                      (120, 96), interpolation=cv2.INTER_AREA)
    for t in range(frames):
        y, x = min(t * step[0], back.shape[0] - h), t * step[1]
        frame = back[y:y + h, x:x + w].copy()
        left = w - speed * t
        x0, x1 = max(0, left), min(w, left + 120)
        if x1 > x0:
            frame[h // 2 - 48:h // 2 + 48, x0:x1] = crop[:, x0 - left:x1 - left]
        yield frame


def still_clips():
    from koala_utils import video

    clips = {f"pan {p}": list(video.pan_clip(_plate(p), frames=FRAMES, size=SIZE, zoom=1.4)) for p in PLATES}
    for back, front in CROSSINGS:
        clips[f"crossing {back}/{front}"] = list(crossing_clip(_plate(back), _plate(front)))
    for back, front in WIDE:
        clips[f"wide {back}/{front}"] = list(wide_clip(_plate(back), _plate(front)))
    return clips


def footage_window(path, start, frames=FRAMES, max_side=FOOTAGE_SIDE):
    """Frames ``start`` to ``start + frames`` of a video as RGB uint8, shrunk to ``max_side`` (even sizes)."""
    import cv2

    from koala_utils import video_io

    out = []
    for index, frame in enumerate(video_io.read_frames(path, max_frames=start + frames)):
        if index < start:
            continue
        scale = min(1.0, max_side / max(frame.shape[:2]))
        size = (round(frame.shape[1] * scale) // 2 * 2, round(frame.shape[0] * scale) // 2 * 2)
        out.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if scale < 1 else frame)
    return out


def footage_clips(folder):
    """{"Megamind@0": frames, ...} from the OpenCV sample videos in ``folder``; {} when they are not there."""
    folder = Path(folder)
    return {f"{name}@{start}": footage_window(folder / f"{name}.avi", start)
            for name, starts in FOOTAGE_CLIPS.items() if (folder / f"{name}.avi").is_file() for start in starts}


def _shipped_digest(name=None):
    """The first 12 hex digits of a shipped model's weights' SHA-256: a new model, a new memo."""
    from koala_utils import pretrained

    return hashlib.sha256(pretrained.weights_path(name).read_bytes()).hexdigest()[:12]


class Memo:
    """A shipped model (at its default decoding) and Lite0 behind a cache keyed by their inputs' bytes (on disk)."""

    def __init__(self, path, model_name=None):
        self.path, self.model_name = path, model_name
        self.store = pickle.loads(path.read_bytes()) if path.exists() else {}
        self.misses = 0
        self._model = self._backbone = self._predict = None

    @staticmethod
    def _key(*arrays):
        digest = hashlib.sha1()
        for a in arrays:
            a = np.ascontiguousarray(a)
            digest.update(str((a.shape, a.dtype)).encode())
            digest.update(a.tobytes())
        return digest.hexdigest()

    def _load(self):
        if self._predict is None:
            from koala_utils import pretrained
            from koala_utils.backbones import get_backbone
            from koala_utils.colorize import predictor_for

            self._backbone = get_backbone("efficientnet_lite0")
            self._predict = predictor_for(pretrained.load(self.model_name))

    def onnx_predictor(self, temperature=None):  # video.colorize_frames asks the "model" for its predictor
        def predict(l_scaled, embeddings):
            key = self._key(l_scaled, embeddings)
            if key not in self.store:
                self._load()
                self.store[key] = np.asarray(self._predict(l_scaled, embeddings))
                self.misses += 1
            return self.store[key]

        return predict

    def embed(self, grays):
        out = []
        for gray in grays:
            key = self._key(gray)
            if key not in self.store:
                self._load()
                self.store[key] = np.asarray(self._backbone.embed([gray])[0])
                self.misses += 1
            out.append(self.store[key])
        return np.stack(out)

    def save(self):
        if self.misses:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(pickle.dumps(self.store))


def evaluate_clip(truth, memo, grid):
    """{setting: {"we", "cdc", "psnr"}} plus "truth" and "gray", with one flow for all."""
    import cv2

    from koala_utils import evaluate, video
    from koala_utils.video_metrics import TemporalMetrics, flow_estimator

    outputs = {name: list(video.colorize_frames(truth, memo, memo, video.Settings(**knobs)))
               for name, knobs in grid.items()}
    meter = TemporalMetrics(("truth", "gray", *grid))
    flow, last = flow_estimator(), None
    for t, frame in enumerate(truth):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        flows = None if last is None else (flow(last, gray), flow(gray, last))
        meter.update(gray, {"truth": frame, "gray": np.repeat(gray[..., None], 3, axis=-1),
                            **{name: out[t] for name, out in outputs.items()}}, flows=flows)
        last = gray
    result = meter.result()
    for name, out in outputs.items():
        result[name]["psnr"] = float(np.mean([evaluate.psnr(o, f) for o, f in zip(out, truth, strict=True)]))
    return result


def _ratios(result, name):
    """Colour WE, CDC and colour CDC ratios (coherent / per-frame) and the PSNR difference, for one clip."""
    base, m, gray = result["per-frame"], result[name], result["gray"]
    colour = ((m["warping_error"] - gray["warping_error"]) / (base["warping_error"] - gray["warping_error"]))
    return {"colour_we_ratio": colour, "cdc_ratio": m["cdc"] / base["cdc"],
            "colour_cdc_ratio": (m["cdc"] - gray["cdc"]) / (base["cdc"] - gray["cdc"]),
            "dpsnr": m["psnr"] - base["psnr"]}


def run(quick=False, footage=FOOTAGE, model_name=None):
    _common.quiet_tensorflow()
    grid = {k: GRID[k] for k in list(GRID)[:3]} if quick else GRID
    memo = Memo(_common.CACHE / f"video_tuning_memo_{_shipped_digest(model_name)}.pkl", model_name)
    groups = {"stills": still_clips()}
    found = footage_clips(footage)
    if found:
        groups["footage"] = dict(list(found.items())[:2]) if quick else found
    with _common.LoadMonitor() as load:
        results = {group: {label: evaluate_clip(clip, memo, grid) for label, clip in clips.items()}
                   for group, clips in groups.items()}
    memo.save()
    rows, figures, every = [], {}, {}  # every: {setting: ratios of each clip, all groups}
    for name in grid:
        every[name] = []
        for group, clips in results.items():
            cells = {label: _ratios(r, name) for label, r in clips.items()}
            figures.setdefault(name, {}).update(cells)
            every[name] += cells.values()
            worst = min(cells, key=lambda k: cells[k]["dpsnr"])
            rows.append([name, group, len(cells), *(statistics.mean(c[key] for c in cells.values())
                                                    for key in ("colour_we_ratio", "cdc_ratio", "colour_cdc_ratio",
                                                                "dpsnr")),
                         f"{cells[worst]['dpsnr']:+.2f} ({worst})"])
        figures[name]["worst_dpsnr"] = min(c["dpsnr"] for c in every[name])
    eligible = [n for n in grid if n != "per-frame" and figures[n]["worst_dpsnr"] >= -0.2]
    flicker = {n: statistics.mean(c["colour_we_ratio"] + c["cdc_ratio"] for c in every[n]) for n in eligible}
    notes = ["groups: " + "; ".join(f"{g} ({len(c)} clips: " + ", ".join(c) + ")" for g, c in results.items())]
    if "footage" not in results:
        notes.append(f"NO REAL FOOTAGE: {footage} has no OpenCV sample videos (see the docstring); stills only")
    if eligible:
        pick = min(flicker, key=flicker.get)
        notes.append(f"the rule (every tuning clip within 0.2 dB of per-frame, then the least mean colour WE ratio + "
                     f"CDC ratio) picks: {pick}")
    floors = [[f"{group}: {label}", r["truth"]["cdc"] * 1e3, r["gray"]["cdc"] * 1e3, r["per-frame"]["cdc"] * 1e3,
               r["per-frame"]["psnr"]] for group, clips in results.items() for label, r in clips.items()]
    notes.append("CDC x 1e-3 of truth, gray source and per-frame, and per-frame PSNR:\n\n"
                 + _common.markdown_table(["clip", "truth CDC", "gray CDC", "per-frame CDC", "per-frame PSNR"], floors))
    title = "Coherent-mode knobs on the tuning clips (coherent vs per-frame, means)"
    title += f", {model_name} model" if model_name else ""
    return _common.report("video_tuning", title,
                          ["setting", "clips", "n", "colour WE ratio", "CDC ratio", "colour CDC ratio", "dPSNR dB",
                           "worst dPSNR dB"], rows, figures=figures, load=load, notes=notes)


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--footage", default=str(FOOTAGE), help="folder with OpenCV's Megamind.avi and vtest.avi")
    p.add_argument("--model", default=None, choices=["paper", "vivid"], help="shipped model (default: the default one)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    return _common.finish(run(args.quick, args.footage, args.model), args, started)


if __name__ == "__main__":
    main()
