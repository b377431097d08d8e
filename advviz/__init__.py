"""advviz: interactive exploration of adversarial attacks and defenses on image classifiers.

The core is a set of plain, batched, device-agnostic PyTorch functions (``advviz.data``,
``advviz.models``, ``advviz.train``, ``advviz.attacks``, ``advviz.metrics``,
``advviz.explain``, ``advviz.defenses``); the widgets in ``advviz.widgets`` are thin
stateful wrappers around them.

Conventions used everywhere:

* images are float tensors in ``[0, 1]`` with shape ``(B, C, H, W)``;
* normalisation (mean/std) is the first layer *inside* each model;
* perturbation budgets (``eps``, ``alpha``) are on the ``[0, 1]`` scale.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
