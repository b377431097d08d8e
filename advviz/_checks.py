"""Input validation shared by every part of advviz that takes image batches."""

from __future__ import annotations

import torch

__all__ = ["check_batch", "check_images"]


def check_batch(x: torch.Tensor, *, name: str = "x", allow_empty: bool = False) -> None:
    """Raise unless ``x`` is a float ``(B, C, H, W)`` tensor (any value range), non-empty unless ``allow_empty``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype} "
                         "(convert uint8 images with x.float() / 255)")
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is an empty batch")


def check_images(x: torch.Tensor, *, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a float ``(B, C, H, W)`` batch in ``[0, 1]``, finite."""
    check_batch(x, name=name)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = " (it looks like 0-255 pixels: divide by 255)" if hi > 1.0 else ""
        raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]{hint}")
