"""Views of an adversarial perturbation ``delta = x_adv - x`` for display.

All functions take batches ``(B, C, H, W)`` and are pure tensor operations (no gradients).
"""

from __future__ import annotations

import torch

from advviz._checks import check_batch

__all__ = ["amplify", "perturbation_magnitude", "signed_perturbation"]


def _pair(x: torch.Tensor, x_adv: torch.Tensor) -> None:
    check_batch(x, name="x")
    check_batch(x_adv, name="x_adv")
    if x.shape != x_adv.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} must have the same shape")


def signed_perturbation(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """``x_adv - x`` ``(B, C, H, W)`` (detached), in ``[-1, 1]`` for images in ``[0, 1]``."""
    _pair(x, x_adv)
    return (x_adv.detach() - x.detach().to(x_adv.device))


def perturbation_magnitude(x: torch.Tensor, x_adv: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """Per-pixel size of the perturbation, ``(B, 1, H, W)``, not rescaled.

    Args:
        x: clean images ``(B, C, H, W)``.
        x_adv: adversarial images, same shape.
        reduce: ``"max"``: ``max_c |delta_c|`` (the L-infinity size at each pixel);
            ``"l2"``: ``sqrt(sum_c delta_c^2)``.

    Returns:
        ``(B, 1, H, W)``, non-negative (0 where nothing changed).
    """
    delta = signed_perturbation(x, x_adv)
    if reduce == "max":
        return delta.abs().amax(dim=1, keepdim=True)
    if reduce == "l2":
        return delta.square().sum(dim=1, keepdim=True).sqrt()
    raise ValueError(f"reduce must be 'max' or 'l2', got {reduce!r}")


def amplify(delta: torch.Tensor, factor: float | None = None) -> torch.Tensor:
    """A perturbation made visible: ``0.5 + delta * factor``, clipped to ``[0, 1]``.

    Grey (0.5) means unchanged; brighter/darker means the pixel went up/down.

    Args:
        delta: signed perturbation ``(B, C, H, W)`` (:func:`signed_perturbation`).
        factor: magnification; default per image ``0.5 / max|delta|`` so the largest change
            spans the full range (an image with ``delta == 0`` stays uniform grey).

    Returns:
        ``(B, C, H, W)`` in ``[0, 1]``.
    """
    if isinstance(factor, torch.Tensor) and factor.shape == getattr(delta, "shape", None):
        raise TypeError("amplify takes the perturbation delta = x_adv - x, not (x, x_adv): "
                        "use amplify(signed_perturbation(x, x_adv))")
    check_batch(delta, name="delta")
    delta = delta.detach()
    if factor is None:
        peak = delta.abs().amax(dim=(1, 2, 3), keepdim=True)
        scale = torch.where(peak > 0, 0.5 / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(peak))
    else:
        f = float(factor)
        if not f > 0 or f == float("inf"):
            raise ValueError(f"factor must be a positive finite number, got {factor}")
        scale = torch.full((), f, dtype=delta.dtype, device=delta.device)
    return (0.5 + delta * scale).clamp(0.0, 1.0)
