"""Shared machinery of every attack: validation, the model guard, input gradients, projections.

* :func:`check_images`, :func:`check_budget`, :func:`check_labels`: one clear error per bad input
  (an ``eps`` of 8 instead of 8/255, a grayscale batch for an RGB model, labels out of range).
* :func:`model_guard`: runs the model in eval mode with parameters frozen, and restores
  ``training`` and every ``requires_grad`` afterwards; parameter ``.grad`` is never touched
  because gradients are taken with :func:`torch.autograd.grad` w.r.t. the input only.
* :func:`input_grad`: gradient of a loss w.r.t. the input (and the logits), nothing else.
* :func:`generator`: a seeded ``torch.Generator`` on the input's device.
* :func:`project_linf`, :func:`project_l2`: projections onto the budget ball and ``[0, 1]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from advviz._checks import check_images

__all__ = [
    "check_images",
    "check_budget",
    "check_labels",
    "model_guard",
    "input_grad",
    "generator",
    "project_linf",
    "project_l2",
    "l2_normalize",
    "batch_norm",
    "loss_ce",
    "logit_margin",
]


def check_budget(name: str, value: float, *, allow_zero: bool = True, scale_255: bool = True) -> float:
    """Validate a perturbation budget on the ``[0, 1]`` scale and return it as a float.

    Args:
        name: parameter name for the message (``"eps"``, ``"alpha"``).
        value: the budget.
        allow_zero: whether 0 is allowed.
        scale_255: whether values above 1 are refused with the "divide by 255" hint (for
            L-infinity intensities; an L2 radius may legitimately exceed 1).
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    if scale_255 and v > 1:
        raise ValueError(f"{name}={value} is above 1: budgets are on the [0, 1] pixel scale; "
                         f"did you mean {name}={value:g}/255 = {v / 255:.5f}?")
    return v


def check_labels(y: torch.Tensor, x: torch.Tensor, num_classes: int | None = None, *, name: str = "y") -> torch.Tensor:
    """Validate integer labels ``(B,)`` matching ``x`` and return them as int64 on ``x``'s device."""
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.ndim == 0:
        y = y.unsqueeze(0)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{name} must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if (y < 0).any() or (num_classes is not None and (y >= num_classes).any()):
        raise ValueError(f"{name} holds a label outside [0, {num_classes})")
    return y.to(device=x.device, dtype=torch.long)


@contextlib.contextmanager
def model_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with frozen parameters; restore everything afterwards.

    Restores ``model.training`` (of every submodule) and each parameter's ``requires_grad``,
    also on exceptions. Parameter ``.grad`` is untouched: parameters do not require grad
    inside, so nothing accumulates into them.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def input_grad(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of ``loss_fn(model(x)).sum()`` w.r.t. ``x`` only.

    Args:
        model: callable mapping ``(B, C, H, W)`` to logits ``(B, K)``.
        x: input batch (not modified).
        loss_fn: maps logits to a per-sample loss ``(B,)`` (or a scalar).

    Returns:
        ``(grad (B, C, H, W), logits (B, K) detached)``.
    """
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        logits = model(xi)
        loss = loss_fn(logits).sum()
        (g,) = torch.autograd.grad(loss, xi)
    return g, logits.detach()


def generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (a random seed when ``None``)."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto the L-infinity ball of radius ``eps`` around ``x``, then ``[0, 1]``."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def batch_norm(v: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Per-sample norm of ``v`` ``(B, ...)`` -> ``(B, 1, 1, 1)`` (broadcastable)."""
    return v.flatten(1).norm(p=p, dim=1).view(-1, *([1] * (v.ndim - 1)))


def l2_normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``v / ||v||_2`` per sample (zero vectors stay zero)."""
    return v / batch_norm(v).clamp_min(eps)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto the L2 ball of radius ``eps`` around ``x``, then ``[0, 1]``."""
    delta = x_adv - x
    factor = (eps / batch_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta * factor).clamp_(0.0, 1.0)


def loss_ce(y: torch.Tensor, targeted: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-sample loss to *ascend*: cross-entropy to ``y`` (untargeted) or its negative (targeted)."""
    sign = -1.0 if targeted else 1.0
    return lambda logits: sign * F.cross_entropy(logits, y, reduction="none")


def logit_margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """How far ``logits`` ``(B, K)`` are past the decision boundary, ``(B,)``: untargeted
    ``max_{i != y} Z_i - Z_y``; targeted ``Z_y - max_{i != y} Z_i``. Positive means success."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return z_y - other if targeted else other - z_y
