"""Colorize videos, per frame or with temporal coherence (the default).

This network tiles one global embedding, the backbone's logits, over the whole
picture; the logits jump when the framing changes a little, and the colours of
the whole frame jump with them. That is most of its flicker. The coherent mode:

1. **Embedding smoothing.** The backbone runs on every ``embed_every``-th frame
   and on every cut; its logits are averaged over time (an exponential moving
   average, ``embed_momentum``), and the average restarts at a scene cut,
   detected when the L histograms of consecutive frames differ by more than
   ``cut_threshold`` (total variation distance, 0-1).
2. **Flow propagation.** The previous output's ab is carried along the optical
   flow (DIS, ``flow_preset``, at the network's resolution) and blended with the
   new prediction, ``blend`` of the propagated ab where the forward-backward
   check (``flow_tolerance``) finds the pixel was visible in the previous frame,
   the carried pixel's gray level matches the new one's (weight
   exp(-(dL / ``match_sigma``)^2)) and the new prediction agrees with the
   carried colour (weight exp(-(|d ab| / ``agree_sigma``)^2), |d ab| averaged
   over 9 x 9 px): a small disagreement is flicker and is damped, a large one
   is the network changing its mind (a new object changed what the classifier
   sees) and the new colour wins at once. The new prediction is used where
   the flow fails (occlusions, new content, after a cut).

Both modes run the network on the frame resized so its longest side is
``size``, without the white square padding of photos (the network is fully
convolutional, and the padding would double its cost on 16:9 frames), in
batches; the ab is upsampled to full resolution and merged with the frame's
own L, as for photos. Memory is flat in the clip's length: frames are decoded,
colorized and encoded ``batch`` at a time. Defaults were chosen on clips made from
bundled historical photos and on windows of OpenCV's sample videos
(benchmarks/video_tuning.py, docs/video.md), not on the clips reported there.
"""

import time
from pathlib import Path

import cv2
import numpy as np

from . import color, images, video_io
from .colorize import ab_predictor, check_models
from .video_metrics import consistent, warp
from .video_settings import Settings


def histogram_distance(gray_a, gray_b, bins=64):
    """Total variation distance (0-1) between the intensity histograms of two gray frames."""
    ha, hb = (np.bincount(np.asarray(g).ravel() // (256 // bins), minlength=bins) / np.asarray(g).size
              for g in (gray_a, gray_b))
    return 0.5 * float(np.abs(ha - hb).sum())


class _State:
    """What the coherent mode carries from frame to frame."""

    def __init__(self, settings):
        self.index = 0
        self.small = None  # previous small gray frame
        self.ab = None  # previous output ab, small
        self.embedding = None
        self.since_embed = 0  # frames since the backbone last ran
        self.flow = cv2.DISOpticalFlow_create(settings.flow_preset)


def _prepare(frame, size):
    """Gray, full-resolution L and the small gray frame for the network."""
    gray, full_l = color.gray_and_lightness(np.asarray(frame))
    _, _, h, w = images.pad_box(gray.shape[0], gray.shape[1], size)
    small = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)
    return gray, full_l, small


def _embeddings(grays, smalls, state, settings, backbone, timings):
    """One embedding per frame: smoothed, held between backbone runs, reset at cuts."""
    cuts, wanted, since = [], [], state.since_embed
    previous = state.small
    for i, small in enumerate(smalls):
        cut = previous is None or histogram_distance(previous, small) > settings.cut_threshold
        cuts.append(cut)
        since = 0 if cut or since + 1 >= settings.embed_every else since + 1
        if since == 0:
            wanted.append(i)
        previous = small
    state.since_embed = since
    start = time.perf_counter()
    fresh = dict(zip(wanted, backbone.embed([grays[i] for i in wanted]), strict=True)) if wanted else {}
    timings["backbone"] += time.perf_counter() - start
    out = []
    for i in range(len(smalls)):
        if i in fresh:
            if cuts[i] or state.embedding is None:
                state.embedding = fresh[i]
            else:
                momentum = settings.embed_momentum
                state.embedding = momentum * state.embedding + (1 - momentum) * fresh[i]
        out.append(state.embedding)
    return np.stack(out), cuts


def _propagate(ab_pred, small, cut, state, settings):
    """Blend the new ab with the previous output's, carried along the flow where reliable."""
    if settings.blend <= 0 or cut or state.ab is None or state.ab.shape != ab_pred.shape:
        return ab_pred
    back = state.flow.calc(small, state.small, None)  # t -> t-1
    fwd = state.flow.calc(state.small, small, None)  # t-1 -> t
    reliable = consistent(back, fwd, beta=settings.flow_tolerance).astype(np.float32)
    if settings.match_sigma > 0:  # the carried pixel must also look like this one
        diff = warp(state.small, back).astype(np.float32) - small.astype(np.float32)
        reliable *= np.exp(-((diff / settings.match_sigma) ** 2))
    carried = warp(state.ab, back)
    if settings.agree_sigma > 0:  # a new prediction far from the carried colour is a change, not flicker
        gap = np.sqrt(((carried - ab_pred) ** 2).sum(axis=-1))
        reliable *= np.exp(-((cv2.blur(gap, (9, 9)) / settings.agree_sigma) ** 2))
    weight = settings.blend * cv2.blur(reliable, (5, 5))[..., None]
    return weight * carried + (1 - weight) * ab_pred


def _run_batch(frames, model_fn, backbone, settings, state, timings):
    prepared = [_prepare(f, settings.size) for f in frames]
    grays, lights, smalls = zip(*prepared, strict=True)
    embeddings, cuts = _embeddings(grays, smalls, state, settings, backbone, timings)
    start = time.perf_counter()
    l_scaled = np.stack([color.scale_l(color.lightness(images.gray_to_rgb(s))) for s in smalls])[..., None]
    # A short last batch is padded to the usual size: a new batch shape would retrace the network.
    pad = settings.batch - len(frames)
    if pad > 0:
        l_scaled = np.concatenate([l_scaled, np.repeat(l_scaled[-1:], pad, axis=0)])
        embeddings = np.concatenate([embeddings, np.repeat(embeddings[-1:], pad, axis=0)])
    ab_batch = color.unscale_ab(model_fn(l_scaled, embeddings))[: len(frames)]
    timings["network"] += time.perf_counter() - start
    out = []
    for gray, light, small, ab_pred, cut in zip(grays, lights, smalls, ab_batch, cuts, strict=True):
        start = time.perf_counter()
        ab = _propagate(ab_pred, small, cut, state, settings)
        state.small, state.ab = small, ab
        mid = time.perf_counter()
        full_ab = cv2.resize(ab, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
        out.append((color.lab_to_rgb_fast(light, full_ab), ab, cut))
        timings["flow"] += mid - start
        timings["merge"] += time.perf_counter() - mid
        state.index += 1
    return out


def colorize_frames(frames, model, backbone, settings=None, return_ab=False, timings=None, temperature=None,
                    cast_guard=None, mix=None, partner=None):
    """Colorize a stream of frames; yields each output as soon as its batch is done.

    Parameters
    ----------
    frames : iterable of ndarray of uint8, shape (H, W, 3) or (H, W)
        Colour frames are made gray first. All of one size.
    model : keras.Model
        A trained colorization network.
    backbone : backbones.Backbone
        The backbone it was trained with.
    settings : Settings, optional
        Default ``Settings()`` (coherent); ``Settings.per_frame()`` for the baseline.
    return_ab : bool
        Also yield the small ab map (h, w, 2), float32 in Lab units, and whether
        the frame starts a new scene.
    timings : dict, optional
        Receives seconds spent in ``backbone``, ``network``, ``flow``, ``merge``.
    temperature, cast_guard, mix, partner : optional
        The vivid model's decoding knobs, as for photos (:func:`koala_utils.colorize.colorize`): the
        annealed-mean temperature, the colour cast guard, and a mix of its colour into the regression
        model ``partner``'s.

    Yields
    ------
    rgb : ndarray of uint8, shape (H, W, 3)
    (rgb, ab, cut) when ``return_ab``.

    Raises
    ------
    koala_utils.backbone_record.BackboneMismatchError, ValueError
        Before any frame is read: a backbone the model was not trained with, or a mix that cannot be made.
    """
    check_models(model, backbone, mix, partner)
    settings = settings or Settings()
    timings = timings if timings is not None else {}
    for key in ("backbone", "network", "flow", "merge"):
        timings.setdefault(key, 0.0)
    # Keras or the onnx engine (koala_utils.engine), with the vivid model's decoding knobs
    predictor = ab_predictor(model, temperature, cast_guard, mix, partner)
    state, batch = _State(settings), []
    for frame in frames:
        frame = np.asarray(frame)
        batch.append(frame if frame.ndim == 3 else images.gray_to_rgb(frame))
        if len(batch) == settings.batch:
            yield from _emit(_run_batch(batch, predictor, backbone, settings, state, timings), return_ab)
            batch = []
    if batch:
        yield from _emit(_run_batch(batch, predictor, backbone, settings, state, timings), return_ab)


def _emit(results, return_ab):
    for rgb, ab, cut in results:
        yield (rgb, ab, cut) if return_ab else rgb


def colorize_video(source, output, model, backbone, settings=None, fps=None, max_frames=None, overwrite=False,
                   progress=True, temperature=None, cast_guard=None, mix=None, partner=None):
    """Colorize a video file (or a folder of numbered frames) into an MP4 with the source's audio.

    Parameters
    ----------
    source : path
        Any video FFmpeg reads, or a folder of numbered frames.
    output : path
        The MP4 to write; written under a temporary name and renamed at the end.
    model, backbone, settings
        See :func:`colorize_frames`.
    fps : float, optional
        Frame rate of a folder of frames (default 25).
    max_frames : int, optional
        Stop after this many frames (the audio is cut to match).
    overwrite : bool
        Replace an existing output (never the source).
    progress : bool
        Show a progress bar with frames per second.
    temperature, cast_guard, mix, partner : optional
        See :func:`colorize_frames`.

    Returns
    -------
    dict
        ``output``, ``frames``, ``seconds``, ``fps`` (frames per second end to
        end) and per-stage ``timings``.
    """
    source, output = Path(source), Path(output)
    check_models(model, backbone, mix, partner)
    info = video_io.probe(source, fps=fps)
    if output.exists() and output.resolve() == source.resolve():
        raise FileExistsError(f"{output}: output would overwrite the input")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: output exists (use --overwrite to replace it)")
    total = min(info.frames or max_frames or 0, max_frames or info.frames or 0) or None
    timings, start = {}, time.perf_counter()
    frames = video_io.read_frames(source, max_frames=max_frames)
    bar = _progress(total, progress)
    with video_io.VideoWriter(output, info.width, info.height, info.fps, audio_from=source) as writer:
        for rgb in colorize_frames(frames, model, backbone, settings, timings=timings, temperature=temperature,
                                   cast_guard=cast_guard, mix=mix, partner=partner):
            writer.write(rgb)
            bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    return {"output": str(output), "frames": writer.frames, "seconds": seconds, "fps": writer.frames / seconds,
            "timings": timings}


def _progress(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", disable=not enabled, dynamic_ncols=True)


def pan_clip(image, frames=48, size=(180, 320), zoom=1.3, start=(0.0, 0.0), end=(1.0, 1.0)):
    """A synthetic clip that pans and zooms across a still photo (known motion).

    A window of the photo's aspect ``size`` moves from ``start`` to ``end``
    (fractions of the free room, y then x) while zooming in by ``zoom``.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
    frames : int
    size : tuple of int
        Output (height, width).
    zoom : float
        Ratio of the first window's width to the last's (1: a pure pan).
    start, end : tuple of float

    Yields
    ------
    ndarray of uint8, shape (*size, 3)
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = images.gray_to_rgb(image)
    aspect = size[1] / size[0]
    first_w = min(image.shape[1], image.shape[0] * aspect) * 0.9
    # Shrink the photo once (area filter) so the last, smallest window maps about 1:1 to the output.
    shrink = min(1.0, size[1] * zoom / first_w)
    if shrink < 1.0:
        image = cv2.resize(image, (round(image.shape[1] * shrink), round(image.shape[0] * shrink)),
                           interpolation=cv2.INTER_AREA)
        first_w *= shrink
    height, width = image.shape[:2]
    for t in range(frames):
        s = t / max(1, frames - 1)
        win_w = first_w / (1 + (zoom - 1) * s)
        win_h = win_w / aspect
        top = ((1 - s) * start[0] + s * end[0]) * (height - win_h)
        left = ((1 - s) * start[1] + s * end[1]) * (width - win_w)
        # An affine map from output pixels to the window: sub-pixel motion, no rounding jitter.
        scale = win_w / size[1]
        matrix = np.array([[scale, 0, left], [0, scale, top]], np.float32)
        yield cv2.warpAffine(image, matrix, (size[1], size[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
