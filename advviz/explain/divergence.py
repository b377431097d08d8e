"""Where an attack takes over: the relative divergence of each layer's features, clean vs. adversarial.

For a layer ``l`` with output ``f_l``: ``d_l = ||f_l(x_adv) - f_l(x)||_2 / ||f_l(x)||_2`` per image
(the norm over all of the layer's output elements). Plotted over the layers in forward order,
it shows where a small input change grows into a different representation. The layers are the
model's ``Conv2d`` and ``Linear`` modules (the last ``Linear`` gives the logits); ``layers=``
chooses others. The features come from :func:`advviz.explain.feature_maps` (one forward pass of
the clean and adversarial images together).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advviz._checks import check_batch
from advviz.explain.features import feature_maps

__all__ = ["feature_divergence", "divergence_layers"]


def divergence_layers(model: nn.Module) -> list[str]:
    """Names of the model's ``Conv2d`` and ``Linear`` modules (registration order, which is forward order
    for the zoo's models)."""
    return [n for n, m in model.named_modules() if n and isinstance(m, (nn.Conv2d, nn.Linear))]


def feature_divergence(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                       layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``{layer: (B,)}`` relative divergences ``||f_l(x_adv) - f_l(x)|| / ||f_l(x)||``, in forward order.

    Args:
        model: classifier taking ``(B, C, H, W)`` in [0, 1]; run in eval mode (its mode is restored).
        x: clean images ``(B, C, H, W)``. x_adv: adversarial images, same shape.
        layers: module names (default :func:`divergence_layers`). A module called several times
            in one forward pass counts at its last call.

    Returns:
        Ordered dict of ``(B,)`` float tensors on ``x``'s device (0 where ``f_l(x)`` is all zero
        and unchanged; ``inf`` where it is all zero and changed).
    """
    check_batch(x)
    check_batch(x_adv, name="x_adv")
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    names = list(layers) if layers is not None else divergence_layers(model)
    if not names:
        return {}
    b = x.shape[0]
    # strict=False: a module the forward pass does not use is left out
    outs = feature_maps(model, torch.cat([x.detach(), x_adv.detach().to(x.device)]), names, strict=False)
    result: dict[str, torch.Tensor] = {}
    for n, out in outs.items():
        f = out.float().flatten(1)
        clean, adv = f[:b], f[b:]
        num = (adv - clean).norm(dim=1)
        den = clean.norm(dim=1)
        result[n] = torch.where(den > 0, num / den.clamp_min(1e-30),
                                torch.where(num > 0, torch.full_like(num, float("inf")), torch.zeros_like(num)))
    return result
