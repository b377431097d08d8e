"""Provenance of an evaluated model: its name and the sha256 of the weight file behind it.

One small function on purpose: a later refactor (``advviz.artifacts`` Records) replaces it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["weights_provenance"]


def weights_provenance(name: str) -> dict[str, Any]:
    """``{"model", "weights", "sha256", "dataset"}`` for a pretrained entry of :mod:`advviz.models`.

    The file is found as :func:`advviz.models.load` finds it (``$ADVVIZ_WEIGHTS``, the package's
    weights, the user cache); call this after loading, so that trained-on-first-use weights exist.
    """
    from advviz import models
    from advviz._paths import find_weights
    from advviz.models import _sha256

    spec = models.get_weights_spec(name)
    path = find_weights(spec.filename)
    return {"model": name, "arch": spec.arch, "dataset": spec.dataset, "weights": spec.filename,
            "path": str(path) if path else None, "sha256": _sha256(path) if path else None}
