"""Two small mechanisms every part of advviz shares: the model guard and the device of a module.

* :func:`model_guard`: run a module in eval mode and/or with frozen parameters (and optionally
  with its BatchNorm statistics kept), restoring every submodule's ``training`` flag, every
  parameter's ``requires_grad`` and the saved buffers on exit, also when the body raises.
  Guards nest: each restores exactly what it found.
* :func:`module_device`: where a module's parameters (else buffers) live; CPU for a module with
  neither. The math of advviz runs on the *input's* device; this is only for code that must place
  a freshly made tensor (noise, a batch of a dataset) next to a module it was handed.

(A module's weights' identity, :func:`advviz._weights.tensors_sha256`, lives with the weight files.)

This module imports nothing from advviz, so that the attacks, Grad-CAM and the training engine
can all use it without import cycles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["model_guard", "module_device"]


@contextlib.contextmanager
def model_guard(model: nn.Module, *, eval: bool = True, freeze: bool = True,
                keep_batchnorm_stats: bool = False) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with frozen parameters (each optional); restore everything afterwards.

    Args:
        model: any module.
        eval: put the model (every submodule) in eval mode inside the block.
        freeze: set ``requires_grad=False`` on every parameter inside the block. Parameter
            ``.grad`` is never touched: frozen parameters accumulate nothing.
        keep_batchnorm_stats: save every BatchNorm buffer (running mean/var, batch counter) and
            copy it back on exit, so that forward passes in training mode inside the block leave
            the running statistics as they were.

    Restores each submodule's ``training`` flag, each parameter's ``requires_grad`` and the saved
    buffers on exit, also when the body raises; nested guards restore in order.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()] if freeze else []
    saved = [(buf, buf.detach().clone()) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for buf in m.buffers()] if keep_batchnorm_stats else []
    try:
        if eval:
            model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def module_device(module: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    """The device of ``module``'s first parameter, else of its first buffer, else ``default``."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device(default)
