"""Koalarization: Deep Koalarization (Baldassarre et al., 2017) in Keras 3.

Modules, one per pipeline stage: ``color``, ``images``, ``backbones``,
``model``, ``data``, ``train``, ``evaluate``, ``colorize``, ``cli``.
"""

__version__ = "0.1.0"
