"""Optical flow and the temporal-coherence metrics of a video: warping error and CDC.

* **Warping error** (Lai et al., "Learning Blind Video Temporal Consistency",
  ECCV 2018): for consecutive frames, the mean squared difference, on RGB in
  [0, 1], between frame t and frame t+1 warped back to t by the optical flow,
  over the pixels the forward-backward check finds visible in both; averaged
  over the clip.
* **CDC**, colour distribution consistency (Liu et al., "Temporally Consistent
  Video Colorization", 2021): the Jensen-Shannon divergence (base-2 logs, so in
  [0, 1]) of the per-channel 256-bin histograms of frames t and t+d, averaged
  over channels and t, then over d in {1, 2, 4}.

Both stream: :class:`TemporalMetrics` keeps only the previous frames it needs,
and measures several versions of one clip (ground truth, per-frame, coherent)
with one flow, computed on a guide (the gray source), so that all are warped
alike. Flow is OpenCV's DIS (Kroeger et al. 2016).
"""

import cv2
import numpy as np

CDC_STEPS = (1, 2, 4)
METRIC_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


def flow_estimator(preset=METRIC_PRESET):
    """A callable ``(gray_from, gray_to) -> flow`` (DIS optical flow).

    ``flow[y, x] = (dx, dy)``: pixel (x, y) of ``gray_from`` is at
    (x + dx, y + dy) in ``gray_to``. Inputs uint8 (H, W); output float32 (H, W, 2).
    """
    dis = cv2.DISOpticalFlow_create(preset)
    return lambda a, b: dis.calc(np.ascontiguousarray(a), np.ascontiguousarray(b), None)


def _grid(height, width):
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def warp(image, flow):
    """Sample ``image`` at x + flow(x): brings a frame back along a flow.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C), float32 or uint8
    flow : ndarray of float32, shape (H, W, 2)
        From the frame to be produced to ``image`` (see :func:`flow_estimator`).

    Returns
    -------
    ndarray, same shape and dtype as ``image``; bilinear, edges replicated.
    """
    xs, ys = _grid(*flow.shape[:2])
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistent(flow, back_flow, alpha=0.01, beta=0.5):
    """The forward-backward check: where following ``flow`` then ``back_flow`` returns home.

    Parameters
    ----------
    flow : ndarray of float32, shape (H, W, 2)
        From frame A to frame B.
    back_flow : ndarray of float32, shape (H, W, 2)
        From B to A.
    alpha, beta : float
        A pixel passes when ``|f + b'|^2 < alpha (|f|^2 + |b'|^2) + beta``
        (b' is ``back_flow`` sampled where ``flow`` lands), the test of
        Sundaram et al. (2010) that Lai et al. use.

    Returns
    -------
    ndarray of bool, shape (H, W)
        True where the pixel of A is visible in B (not occluded, not off the frame).
    """
    height, width = flow.shape[:2]
    back = warp(back_flow, flow)
    error = np.sum((flow + back) ** 2, axis=-1)
    bound = alpha * (np.sum(flow**2, axis=-1) + np.sum(back**2, axis=-1)) + beta
    xs, ys = _grid(height, width)
    tx, ty = xs + flow[..., 0], ys + flow[..., 1]
    inside = (tx >= 0) & (tx <= width - 1) & (ty >= 0) & (ty <= height - 1)
    return (error < bound) & inside


def _histograms(rgb):
    """Per-channel 256-bin histograms of a uint8 RGB frame, as probabilities (3, 256)."""
    rgb = np.asarray(rgb)
    counts = np.stack([np.bincount(rgb[..., c].ravel(), minlength=256) for c in range(3)])
    return counts.astype(np.float64) / max(1, rgb.shape[0] * rgb.shape[1])


def js_divergence(p, q):
    """Jensen-Shannon divergence (base 2, in [0, 1]) along the last axis of two distributions."""
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(a > 0, a * np.log2(a / np.where(b > 0, b, 1)), 0.0)
        return terms.sum(axis=-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


class TemporalMetrics:
    """Warping error and CDC of one or more versions of a clip, streamed frame by frame.

    Parameters
    ----------
    names : sequence of str
        The versions measured together (e.g. ``("truth", "per-frame", "coherent")``).
    max_side : int, optional
        Frames larger than this are measured at this longest side (area
        resampling) to keep the flow affordable; None: full resolution.
    flow : callable, optional
        ``(gray_from, gray_to) -> flow``; default :func:`flow_estimator`.

    Examples
    --------
    >>> meter = TemporalMetrics(["truth", "ours"])           # doctest: +SKIP
    >>> for gray, truth, ours in frames:                     # doctest: +SKIP
    ...     meter.update(gray, {"truth": truth, "ours": ours})
    >>> meter.result()["ours"]["warping_error"]              # doctest: +SKIP
    """

    def __init__(self, names, max_side=None, flow=None):
        self.names = tuple(names)
        self.max_side = max_side
        self.flow = flow or flow_estimator()
        self.previous = None  # (guide, {name: float rgb})
        self.histograms = {name: [] for name in self.names}  # the last max(CDC_STEPS) frames
        self.warp_sums = {name: [] for name in self.names}
        self.cdc_sums = {name: {d: [] for d in CDC_STEPS} for name in self.names}

    def _fit(self, image):
        if self.max_side is None or max(image.shape[:2]) <= self.max_side:
            return np.asarray(image)
        scale = self.max_side / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        return cv2.resize(np.asarray(image), size, interpolation=cv2.INTER_AREA)

    def update(self, guide, frames, flows=None):
        """Add frame t of every version.

        Parameters
        ----------
        guide : ndarray of uint8, shape (H, W)
            The gray frame the flow is computed on (the same for all versions).
        frames : dict of str to ndarray of uint8, shape (H, W, 3)
        flows : tuple of ndarray, optional
            ``(flow t-1 -> t, flow t -> t-1)`` when known (e.g. a synthetic
            clip); else they are estimated on the guides. At the measured size.
        """
        guide = self._fit(guide)
        current = {name: self._fit(frames[name]) for name in self.names}
        if self.previous is not None:
            last_guide, last = self.previous
            if flows is None:
                flows = (self.flow(last_guide, guide), self.flow(guide, last_guide))
            forward, backward = flows
            visible = consistent(forward, backward)
            if visible.any():
                for name in self.names:
                    warped = warp(current[name].astype(np.float32) / 255.0, forward)
                    diff = (last[name] - warped) ** 2
                    self.warp_sums[name].append(float(diff[visible].mean()))
        for name in self.names:
            hist = _histograms(current[name])
            recent = self.histograms[name]
            for d in CDC_STEPS:
                if len(recent) >= d:
                    self.cdc_sums[name][d].append(float(js_divergence(recent[-d], hist).mean()))
            recent.append(hist)
            del recent[: -max(CDC_STEPS)]
        self.previous = (guide, {name: current[name].astype(np.float32) / 255.0 for name in self.names})

    def result(self):
        """``{name: {"warping_error": float, "cdc": float}}`` (NaN when the clip is too short)."""
        out = {}
        for name in self.names:
            warps = self.warp_sums[name]
            cdcs = [np.mean(v) for v in self.cdc_sums[name].values() if v]
            out[name] = {"warping_error": float(np.mean(warps)) if warps else float("nan"),
                         "cdc": float(np.mean(cdcs)) if cdcs else float("nan")}
        return out


def measure(frames, guides=None, flows=None, max_side=None):
    """Warping error and CDC of one clip: ``{"warping_error", "cdc"}``.

    Parameters
    ----------
    frames : iterable of ndarray of uint8, shape (H, W, 3)
    guides : iterable of ndarray of uint8, shape (H, W), optional
        Gray frames for the flow; default the frames' own gray.
    flows : iterable of tuple, optional
        Known ``(forward, backward)`` flows for each frame after the first.
    max_side : int, optional
    """
    meter = TemporalMetrics(["clip"], max_side=max_side)
    guides = iter(guides) if guides is not None else None
    flows = iter(flows) if flows is not None else None
    for t, frame in enumerate(frames):
        guide = next(guides) if guides is not None else cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2GRAY)
        meter.update(guide, {"clip": frame}, flows=next(flows) if flows is not None and t > 0 else None)
    return meter.result()["clip"]
