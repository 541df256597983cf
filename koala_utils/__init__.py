"""Koalarization: Deep Koalarization (Baldassarre et al., 2017) in Keras 3.

Modules, one per pipeline stage: ``color``, ``images``, ``backbones``,
``model``, ``data``, ``train``, ``evaluate``, ``colorize``, ``cli``. A stage
that grew long is split by responsibility, its first module re-exporting the
rest (see DEVELOPERS.md, "Layout and rules").
"""

__version__ = "0.1.0"
