"""Choosing the coherent mode's knobs on tuning clips (never the clips video_quality.py reports).

    python benchmarks/video_tuning.py [--quick] [--json OUT]

Tuning clips, all with true colours (so PSNR is measured), 24 frames at 144 x 256:

* four zooming pans across Prokudin-Gorskii plates (``pan 00029u`` ...), as in docs/video.md;
* two "crossing" clips: a slow pan over one plate while a patch of another plate crosses
  the frame at 10 px a frame (fast motion and occlusion, the case where carried colours go wrong).

Every setting of ``GRID`` runs through ``koala_utils.video.colorize_frames`` itself; the
network's and the backbone's answers are memoised in ``benchmarks/.cache`` (the same
inputs give the same outputs), so the grid costs little more than one pass per embedding
schedule. Printed per setting and clip: colour WE ratio, CDC ratio and colour CDC
ratio (coherent / per-frame; "colour": above the gray source's, the part its L does
not set) and the PSNR difference to per-frame (dB).
"""

import hashlib
import pickle

import _common
import numpy as np

PLATES = ("00029u", "00106v", "00163v", "00757v")
CROSSINGS = (("00087u", "00888v"), ("00351v", "00992u"))
WIDE = (("00128u", "00737u"), ("00137v", "00822u"))
SIZE = (144, 256)
WIDE_SIZE = (272, 640)
FRAMES = 24
GRID = {
    "per-frame": {"embed_every": 1, "embed_momentum": 0.0, "blend": 0.0},
    "old default (2, 0.3, 0.7)": {"blend": 0.7, "flow_preset": 0, "flow_tolerance": 0.5, "match_sigma": 0.0},
    "embedding only": {"blend": 0.0},
    "blend 0.9, fast flow, tolerance 2, match 10": {"blend": 0.9},
    "blend 0.8, fast flow, tolerance 2, match 10": {"blend": 0.8},
    "blend 0.7, fast flow, tolerance 2, match 10": {"blend": 0.7},
    "blend 0.9, fast flow, tolerance 2, match 5": {"blend": 0.9, "match_sigma": 5.0},
    "blend 0.8, fast flow, tolerance 2, match 5": {"blend": 0.8, "match_sigma": 5.0},
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


def tuning_clips():
    from koala_utils import video

    clips = {f"pan {p}": list(video.pan_clip(_plate(p), frames=FRAMES, size=SIZE, zoom=1.4)) for p in PLATES}
    for back, front in CROSSINGS:
        clips[f"crossing {back}/{front}"] = list(crossing_clip(_plate(back), _plate(front)))
    for back, front in WIDE:
        clips[f"wide {back}/{front}"] = list(wide_clip(_plate(back), _plate(front)))
    return clips


class Memo:
    """The shipped model and Lite0 behind a cache keyed by their inputs' bytes (kept on disk)."""

    def __init__(self, path):
        self.path = path
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
            self._predict = predictor_for(pretrained.load())

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


def run(quick=False):
    _common.quiet_tensorflow()
    grid = {k: GRID[k] for k in list(GRID)[:2]} if quick else GRID
    memo = Memo(_common.CACHE / "video_tuning_memo.pkl")
    with _common.LoadMonitor() as load:
        results = {label: evaluate_clip(clip, memo, grid) for label, clip in tuning_clips().items()}
    memo.save()
    rows, figures = [], {}
    for name in grid:
        cells = []
        for label, r in results.items():
            base, m, floor = r["per-frame"], r[name], r["gray"]["warping_error"]
            colour = (m["warping_error"] - floor) / (base["warping_error"] - floor)
            gray_cdc = r["gray"]["cdc"]
            cells.append((colour, m["cdc"] / base["cdc"], (m["cdc"] - gray_cdc) / (base["cdc"] - gray_cdc),
                          m["psnr"] - base["psnr"]))
            figures.setdefault(name, {})[label] = {"colour_we_ratio": colour, "cdc_ratio": cells[-1][1],
                                                    "colour_cdc_ratio": cells[-1][2], "dpsnr": cells[-1][3], **m}
        rows.append([name, *(", ".join(f"{c[i]:.2f}" for c in cells) for i in range(4)),
                     max(c[1] for c in cells), min(c[3] for c in cells)])
    floors = [[label, r["truth"]["cdc"] * 1e3, r["gray"]["cdc"] * 1e3, r["per-frame"]["cdc"] * 1e3,
               r["per-frame"]["psnr"]] for label, r in results.items()]
    notes = ["clips, in this order: " + ", ".join(results),
             "CDC x 1e-3 of truth, gray source and per-frame, and per-frame PSNR:\n\n"
             + _common.markdown_table(["clip", "truth CDC", "gray CDC", "per-frame CDC", "per-frame PSNR"], floors)]
    return _common.report("video_tuning", "Coherent-mode knobs on the tuning clips (coherent vs per-frame)",
                          ["setting", "colour WE ratio", "CDC ratio", "colour CDC ratio", "dPSNR dB", "worst CDC ratio",
                           "worst dPSNR"], rows, figures=figures, load=load, notes=notes)


def main(argv=None):
    return _common.main(run, __doc__, argv)


if __name__ == "__main__":
    main()
