"""The knobs of the video colorizer, in a module with no heavy imports (the CLI reads their defaults)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """The knobs of :func:`colorize_frames`; ``Settings.per_frame()`` is the baseline."""

    size: int = 224  # longest side of the network input, px
    batch: int = 8  # frames per network call
    embed_every: int = 2  # the backbone runs on every n-th frame (and on cuts)
    embed_momentum: float = 0.3  # EMA weight of the past embedding at each backbone run (0: none)
    cut_threshold: float = 0.2  # L-histogram distance (0-1) above which a frame starts a new scene
    blend: float = 0.9  # weight of the flow-propagated ab where the flow is reliable (0: none)
    flow_preset: int = 1  # DIS preset of the propagation's flow: 0 ultrafast, 1 fast, 2 medium
    flow_tolerance: float = 2.0  # forward-backward check: squared px of round-trip error let through
    match_sigma: float = 10.0  # gray levels: the carried colour's weight falls as exp(-(dL / match_sigma)^2)
    agree_sigma: float = 12.0  # Lab units: ... and as exp(-(|ab carried - ab new| / agree_sigma)^2) (0: off)
    # (blend 0.9 and agree 12: the pick of benchmarks/video_tuning.py's rule with both shipped models, docs/video.md)

    @classmethod
    def per_frame(cls, **kwargs):
        """Every frame on its own: backbone on each, no smoothing, no propagation."""
        return cls(**{"embed_every": 1, "embed_momentum": 0.0, "blend": 0.0, **kwargs})
