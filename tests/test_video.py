"""Video: reading and writing (frames, size, rate, audio), the metrics, the coherent mode, bad input."""

import av
import cv2
import numpy as np
import pytest
import skimage.data

from koala_utils import color, evaluate, historical, images, pretrained, video, video_io
from koala_utils.video_metrics import TemporalMetrics, js_divergence, measure


@pytest.fixture(scope="module")
def model():
    return pretrained.load()


def _audio_seconds(path):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def test_round_trip_keeps_frames_size_rate_and_audio(model, lite0, tmp_path):
    source = video_io.sample_clip("bigbuckbunny")  # 1280x720, 25 fps, 5.1 AAC
    out = tmp_path / "bunny.mp4"
    report = video.colorize_video(source, out, model, lite0, max_frames=12, progress=False)
    info = video_io.probe(out)
    assert (info.width, info.height, info.fps, info.frames) == (1280, 720, 25, 12)
    assert report["frames"] == 12 and info.has_audio
    assert abs(_audio_seconds(out) - 12 / 25) < 0.05  # the audio is cut where the video ends
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.channels == 6
    frames = list(video_io.read_frames(out))
    assert len(frames) == 12 and frames[0].shape == (720, 1280, 3)
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file must be renamed away"


def test_folder_of_numbered_frames_is_read_in_number_order(tmp_path):
    photo = skimage.data.astronaut()[:64, :96]
    for number in (10, 2, 1):  # 'frame_10' sorts before 'frame_2' as text
        cv2.imwrite(str(tmp_path / f"frame_{number}.png"), np.full_like(photo, number)[..., ::-1])
    assert [f[0, 0, 0] for f in video_io.read_frames(tmp_path)] == [1, 2, 10]
    assert video_io.probe(tmp_path, fps=12).fps == 12


def _shifted_clip(frames=6, step=(2, 3)):
    """Crops of a real photo moving by a known integer step: frame t+1 is frame t shifted by -step."""
    photo = skimage.data.astronaut()
    dy, dx = step
    return [photo[100 + t * dy : 260 + t * dy, 100 + t * dx : 300 + t * dx].copy() for t in range(frames)]


def _known_flows(shape, step, count):
    """The exact (forward, backward) flows of :func:`_shifted_clip`."""
    forward = np.empty((*shape, 2), np.float32)
    forward[..., 0], forward[..., 1] = -step[1], -step[0]
    return [(forward, -forward)] * count


def test_warping_error_of_a_translated_clip():
    clip = _shifted_clip()
    guides = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip]
    # The same content moving: no warping error, with the estimated flow as with the exact one.
    assert measure(clip, guides)["warping_error"] < 2e-4
    flows = _known_flows(clip[0].shape[:2], (2, 3), len(clip))
    assert measure(clip, guides, flows=flows)["warping_error"] < 1e-6
    # Every other frame 20 levels redder: each pair differs by 20/255 on one channel of three.
    flicker = [f.astype(np.int16) for f in clip]
    for f in flicker[1::2]:
        f[..., 0] += 20
    flicker = [np.clip(f, 0, 255).astype(np.uint8) for f in flicker]
    exact = measure(flicker, guides, flows=flows)["warping_error"]
    assert exact == pytest.approx((20 / 255) ** 2 / 3, rel=0.05)  # a few red values clip at 255
    assert measure(flicker, guides)["warping_error"] == pytest.approx(exact, rel=0.1)


def test_cdc_is_zero_for_a_still_clip_and_grows_with_colour_change():
    photo = skimage.data.coffee()
    assert measure([photo] * 5)["cdc"] == 0
    tinted = [np.clip(photo.astype(int) + (t % 2) * 30, 0, 255).astype(np.uint8) for t in range(5)]
    hists = [np.stack([np.bincount(f[..., c].ravel(), minlength=256) / f[..., c].size for c in range(3)])
             for f in tinted[:2]]
    # Frames t and t+1 differ, t and t+2 or t+4 do not: the mean over d in (1, 2, 4) is a third of d=1's.
    assert measure(tinted)["cdc"] == pytest.approx(js_divergence(*hists).mean() / 3)
    assert measure(tinted)["cdc"] > 0.05
    disjoint = js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert disjoint == pytest.approx(1.0)


@pytest.fixture(scope="module")
def pan_results(model, lite0):
    """A zooming pan over a real colour photo (a Prokudin-Gorskii plate), colorized both ways."""
    plate = historical.load_plate(historical.plate_paths()[3])
    truth = list(video.pan_clip(plate, frames=24, size=(144, 256), zoom=1.4))
    meter = TemporalMetrics(["truth", "gray", "per-frame", "coherent"])
    outputs = {name: list(video.colorize_frames(truth, model, lite0, settings))
               for name, settings in (("per-frame", video.Settings.per_frame()), ("coherent", video.Settings()))}
    psnrs = {name: np.mean([evaluate.psnr(o, t) for o, t in zip(frames, truth, strict=True)])
             for name, frames in outputs.items()}
    for t, frame in enumerate(truth):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        meter.update(gray, {"truth": frame, "gray": np.repeat(gray[..., None], 3, axis=-1),
                            **{name: frames[t] for name, frames in outputs.items()}})
    return meter.result(), psnrs


def test_coherent_mode_reduces_flicker_on_a_pan(pan_results):
    metrics, psnrs = pan_results
    floor = metrics["gray"]["warping_error"]  # what the shared L alone costs
    excess = {name: metrics[name]["warping_error"] - floor for name in ("per-frame", "coherent")}
    assert excess["coherent"] < 0.8 * excess["per-frame"], excess
    assert metrics["coherent"]["cdc"] < metrics["per-frame"]["cdc"], metrics
    assert abs(psnrs["coherent"] - psnrs["per-frame"]) < 0.2, psnrs


class _StillOracle:
    """A stand-in network whose answer never moves: the true ab of the clip's first frame, for every frame.

    Per frame, its colours stay where they were in frame 0; any motion of the colours in the coherent mode's
    output can only come from the flow propagation. The backbone's embedding is blank.
    """

    def __init__(self, first_ab):
        self.first_ab = color.scale_ab(first_ab).astype(np.float32)

    def onnx_predictor(self, temperature=None):  # what video.colorize_frames asks a model for
        return lambda l_scaled, embeddings: np.broadcast_to(self.first_ab, (len(l_scaled), *self.first_ab.shape))

    def embed(self, grays):
        return np.zeros((len(grays), 1000), np.float32)


def test_flow_propagation_carries_colour_along_the_motion():
    """Crops of a real photo moving by a known step (content goes up and left): frame 0's colours, carried
    from frame to frame along the flow, must follow the content."""
    step, frames = (3, 8), 8  # px per frame at 144 x 256; new content enters at the bottom and the right
    photo = skimage.data.astronaut()
    clip = [photo[100 + t * step[0] : 244 + t * step[0], 50 + t * step[1] : 306 + t * step[1]].copy()
            for t in range(frames)]
    settings = video.Settings(embed_every=1, embed_momentum=0.0, blend=1.0, agree_sigma=0.0)
    _, _, h, w = images.pad_box(144, 256, settings.size)
    truth_ab = [color.rgb_to_lab(cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA))[..., 1:] for f in clip]
    oracle = _StillOracle(truth_ab[0])
    out = list(video.colorize_frames(clip, oracle, oracle, settings, return_ab=True))
    assert not any(cut for _, _, cut in out[1:])
    scale = h / 144
    for t in range(1, frames):
        # The part of frame t already on screen in frame 0 (a margin for the box filter and resampling).
        keep = tuple(slice(0, n - int(np.ceil(t * d * scale)) - 4) for n, d in zip((h, w), step, strict=True))
        carried = np.abs(out[t][1][keep] - truth_ab[t][keep]).mean()
        unmoved = np.abs(truth_ab[0][keep] - truth_ab[t][keep]).mean()  # the oracle's answer, per frame
        assert carried < 0.35 * unmoved, (t, carried, unmoved)


class _ScriptedOracle(_StillOracle):
    """A stand-in network that answers ``answers[i]`` (ab, Lab units) for the i-th frame it is shown."""

    def __init__(self, answers):
        self.answers, self.shown = [color.scale_ab(a).astype(np.float32) for a in answers], 0

    def onnx_predictor(self, temperature=None):
        def predict(l_scaled, embeddings):
            out = [self.answers[min(self.shown + i, len(self.answers) - 1)] for i in range(len(l_scaled))]
            self.shown += len(l_scaled)
            return np.stack(out)

        return predict


def test_coherent_mode_follows_a_change_of_mind_and_damps_small_flicker():
    """A still shot of a real photo. The network's answer jitters by +-2 Lab units around the true ab, and from
    frame 8 on it changes its mind: +25 in b everywhere (as when a new object changes what the classifier sees).
    The default coherent mode must take the new colour within a few frames and still damp the jitter; carrying
    colour regardless of the new answer (agree_sigma 0) holds the old colour."""
    crop = skimage.data.astronaut()[100:244, 50:306]
    clip = [crop.copy() for _ in range(16)]
    _, _, h, w = images.pad_box(144, 256, video.Settings().size)
    truth = color.rgb_to_lab(cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA))[..., 1:]
    jitter = [np.float32(2 * (-1) ** t) for t in range(16)]
    answers = [truth + jitter[t] + np.float32([0, 25 if t >= 8 else 0]) for t in range(16)]

    def run(settings):
        return [ab for _, ab, _ in video.colorize_frames(clip, _ScriptedOracle(answers), _StillOracle(truth),
                                                        settings, return_ab=True)]

    coherent, holding = run(video.Settings()), run(video.Settings(agree_sigma=0.0))
    assert video.Settings().agree_sigma > 0
    lag = [np.abs(out[11] - answers[11]).mean() for out in (coherent, holding)]
    assert lag[0] < 5 < lag[1], lag  # 3 frames after the change: followed (25 units away when held)
    swing = np.abs(coherent[6] - coherent[7]).mean()  # frame to frame, before the change: the answers swing by 4
    assert swing < 2, swing


def test_cut_detection_on_real_photos():
    plates = [historical.load_plate(p) for p in historical.plate_paths()[:2]]
    clip = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for p in plates for f in video.pan_clip(p, 24, (126, 224), zoom=1.3)]
    distances = [video.histogram_distance(a, b) for a, b in zip(clip[:-1], clip[1:], strict=True)]
    cuts = [i + 1 for i, d in enumerate(distances) if d > video.Settings().cut_threshold]
    assert cuts == [24], distances


def test_truncated_file_fails_naming_it_and_writes_nothing(model, lite0, tmp_path):
    data = video_io.sample_clip("bikes").read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.mp4"
    with pytest.raises(video_io.VideoError, match="broken.mp4"):
        video.colorize_video(broken, out, model, lite0, progress=False)
    assert list(tmp_path.iterdir()) == [broken]


def test_file_cut_after_its_index_fails_after_some_frames(model, lite0, tmp_path):
    """A 'fast start' MP4 (index first) cut in half decodes without error, only fewer frames."""
    source = video_io.sample_clip("bikes")
    whole = tmp_path / "faststart.mp4"
    with av.open(str(source)) as inp, av.open(str(whole), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    target = tmp_path / "out.mp4"
    with pytest.raises(video_io.VideoError, match="cut.mp4: truncated"):
        video.colorize_video(cut, target, model, lite0, progress=False)
    assert not target.exists() and not list(tmp_path.glob(".*tmp*"))


def test_no_video_stream_and_no_frames(model, lite0, tmp_path):
    audio = tmp_path / "audio.m4a"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 48000
        for i in range(5):
            frame.pts = i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(video_io.VideoError, match="audio.m4a: holds no video stream"):
        video.colorize_video(audio, tmp_path / "a.mp4", model, lite0, progress=False)
    empty = tmp_path / "frames"
    empty.mkdir()
    with pytest.raises(video_io.VideoError, match="frames: folder holds no frames"):
        video.colorize_video(empty, tmp_path / "b.mp4", model, lite0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.m4a", "frames"]


def test_a_backbone_the_model_was_not_trained_with_is_refused(lite0, tmp_path):
    """A model trained on Inception-ResNet-v2 embeddings (also 1000 logits) with Lite0 would run, wrongly."""
    from koala_utils.backbone_record import BackboneMismatchError
    from koala_utils.model import build_model

    irv2_model = build_model(backbone="inception_resnet_v2")
    frames = iter([np.full((32, 48, 3), 128, np.uint8)] * 2)
    with pytest.raises(BackboneMismatchError, match="inception_resnet_v2.*efficientnet_lite0"):
        next(video.colorize_frames(frames, irv2_model, lite0))
    out = tmp_path / "out.mp4"
    with pytest.raises(BackboneMismatchError):
        video.colorize_video(video_io.sample_clip("carphone_pristine"), out, irv2_model, lite0)
    assert not out.exists()


def test_existing_output_is_kept(model, lite0, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="out.mp4"):
        video.colorize_video(video_io.sample_clip("carphone_pristine"), out, model, lite0, progress=False)
    assert out.read_bytes() == b"mine"


def test_cli_colorize_video(tmp_path, capsys):
    from koala_utils import cli

    out = tmp_path / "clip.mp4"
    source = video_io.sample_clip("carphone_pristine")
    assert cli.main(["colorize-video", str(source), "-o", str(out), "--max-frames", "10", "--quiet"]) == cli.EXIT_OK
    assert video_io.probe(out).frames == 10 and "coherent mode" in capsys.readouterr().out
    assert cli.main(["colorize-video", str(source), "-o", str(out), "--quiet"]) == cli.EXIT_USAGE  # exists
    assert "clip.mp4: output exists" in capsys.readouterr().err and video_io.probe(out).frames == 10
    missing = tmp_path / "nope.mp4"
    assert cli.main(["colorize-video", str(missing), "-o", str(tmp_path)]) == cli.EXIT_USAGE
    assert "nope.mp4" in capsys.readouterr().err


def _record_colorize_video(monkeypatch):
    """Stand in for video.colorize_video; the list receives each call's (settings, keyword arguments)."""
    calls = []

    def fake_colorize_video(source, output, model, backbone, settings, **kwargs):
        calls.append((settings, kwargs))
        return {"output": output, "frames": 1, "seconds": 1.0, "fps": 1.0}

    monkeypatch.setattr(video, "colorize_video", fake_colorize_video)
    return calls


def test_cli_video_knobs_reach_the_settings(tmp_path, monkeypatch, capsys):
    """--blend and --agree end up in the Settings that colorize_video gets; the defaults are Settings()'s."""
    from koala_utils import cli

    calls = _record_colorize_video(monkeypatch)
    source = video_io.sample_clip("carphone_pristine")
    for extra in ([], ["--agree", "3", "--blend", "0.5"], ["--model", "vivid"], ["--model", "vivid", "--agree", "3"]):
        assert cli.main(["colorize-video", str(source), "-o", str(tmp_path / "c.mp4"), "--quiet", *extra]) == 0
    seen = [settings for settings, _ in calls]
    assert seen[0] == video.Settings()
    assert (seen[1].agree_sigma, seen[1].blend) == (3.0, 0.5)
    assert seen[2] == video.Settings() and seen[3].agree_sigma == 3.0  # the vivid model: the same defaults


def _chroma(abs_):
    return float(np.mean([np.hypot(ab[..., 0], ab[..., 1]).mean() for ab in abs_]))


def test_vivid_decoding_knobs_reach_the_frames(model, lite0):
    """The vivid model's temperature and the mix into paper's colour work on video as on photos."""
    vivid = pretrained.load("vivid")
    frames = list(video_io.read_frames(video_io.sample_clip("carphone_pristine"), max_frames=8))
    settings = video.Settings(size=128, batch=4)

    def small_ab(net, **knobs):
        return [ab for _, ab, _ in video.colorize_frames(frames, net, lite0, settings, return_ab=True, **knobs)]

    mean_colour, mode_colour = small_ab(vivid, temperature=1.0), small_ab(vivid, temperature=0.1)
    assert _chroma(mode_colour) > _chroma(mean_colour)  # lower T, bolder colour
    assert np.abs(np.stack(mode_colour) - np.stack(mean_colour)).mean() > 1.0
    paper_ab, vivid_ab = small_ab(model), small_ab(vivid)
    assert np.allclose(np.stack(vivid_ab), np.stack(small_ab(vivid, temperature=0.2)))  # the default T
    assert np.abs(np.stack(vivid_ab) - np.stack(paper_ab)).mean() > 1.0
    mixed = {a: small_ab(vivid, mix=a, partner=model) for a in (0.0, 0.5, 1.0)}
    assert np.allclose(np.stack(mixed[0.0]), np.stack(paper_ab), atol=1e-3)
    assert np.allclose(np.stack(mixed[1.0]), np.stack(vivid_ab), atol=1e-2)
    half = np.stack(mixed[0.5])
    assert 0 < np.abs(half - np.stack(paper_ab)).mean() < np.abs(np.stack(vivid_ab) - np.stack(paper_ab)).mean()
    with pytest.raises(ValueError, match="partner"):  # refused before a frame is read
        next(video.colorize_frames(iter(()), vivid, lite0, settings, mix=0.5))


def test_cli_colorize_video_decoding_knobs(tmp_path, monkeypatch, capsys):
    """--temperature, --cast-guard and --mix reach colorize_video (with the paper model as the mix's partner);
    a bad value or a mix with the paper model is refused before anything is written."""
    from koala_utils import cli

    calls = _record_colorize_video(monkeypatch)
    source = video_io.sample_clip("carphone_pristine")
    out = tmp_path / "c.mp4"
    assert cli.main(["colorize-video", str(source), "-o", str(out), "--quiet", "--model", "vivid",
                     "--temperature", "0.5", "--cast-guard", "0.3", "--mix", "0.75"]) == cli.EXIT_OK
    knobs = calls[0][1]
    assert (knobs["temperature"], knobs["cast_guard"], knobs["mix"]) == (0.5, 0.3, 0.75)
    assert knobs["partner"] is not None and "paper" in capsys.readouterr().err
    for args, word in ((["--model", "vivid", "--temperature", "0"], "--temperature"),
                       (["--model", "vivid", "--mix", "1.5"], "--mix"),
                       (["--model", "paper", "--mix", "0.5"], "regression")):
        assert cli.main(["colorize-video", str(source), "-o", str(out), "--quiet", *args]) == cli.EXIT_USAGE
        assert word in capsys.readouterr().err
    assert len(calls) == 1 and not out.exists()
