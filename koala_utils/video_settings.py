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
    blend: float = 0.7  # weight of the flow-propagated ab where the flow is reliable (0: none)

    @classmethod
    def per_frame(cls, **kwargs):
        """Every frame on its own: backbone on each, no smoothing, no propagation."""
        return cls(**{"embed_every": 1, "embed_momentum": 0.0, "blend": 0.0, **kwargs})
