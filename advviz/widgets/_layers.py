"""Which layers of a model have spatial outputs (for Grad-CAM and feature-map dropdowns)."""

from __future__ import annotations

import torch
from torch import nn

from advviz._modules import model_guard
from advviz.explain import capture_layers

__all__ = ["spatial_layers"]


@torch.no_grad()
def spatial_layers(model: nn.Module, input_size: tuple[int, int, int], *, device: torch.device | str = "cpu",
                   convs_only: bool = False) -> list[str]:
    """Names of modules whose output is a ``(B, K, h, w)`` map with ``h, w > 1``, in forward order.

    Keeps convolutions, the modules right after them (activations, blocks, stages) and the
    model's ``last_conv``; normalisation inputs and pooling-only modules are left out.

    Args:
        model: the classifier (left in its mode; one forward pass on a zero image).
        input_size: ``(C, H, W)``.
        device: where the model is.
        convs_only: only ``Conv2d`` modules and ``last_conv``.
    """
    last_conv = getattr(model, "last_conv", "")
    layers = {}
    for name, m in model.named_modules():
        if not name or type(m).__name__ in ("Normalize",) or isinstance(m, (nn.BatchNorm2d, nn.MaxPool2d,
                                                                               nn.AvgPool2d, nn.Identity)):
            continue
        if convs_only and not isinstance(m, nn.Conv2d) and name != last_conv:
            continue
        layers[name] = m
    with model_guard(model, freeze=False), capture_layers(model, layers, clone=False, every_call=True) as cap:
        model(torch.zeros(1, *input_size, device=device))
    seen: list[str] = []
    for name, out in cap.calls:
        if out.ndim == 4 and out.shape[2] > 1 and out.shape[3] > 1 and name not in seen:
            seen.append(name)
    if last_conv and last_conv not in seen:
        seen.append(last_conv)
    return seen
