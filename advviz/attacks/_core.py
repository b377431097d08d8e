"""Shared machinery of every attack: validation, the model guard, input gradients, projections.

* :func:`check_images`, :func:`check_budget`, :func:`check_labels`: one clear error per bad input
  (an ``eps`` of 8 instead of 8/255, a grayscale batch for an RGB model, labels out of range).
* :func:`model_guard` (from :mod:`advviz._modules`, the one guard of advviz): runs the model in
  eval mode with parameters frozen, and restores ``training`` and every ``requires_grad``
  afterwards; parameter ``.grad`` is never touched because gradients are taken with
  :func:`torch.autograd.grad` w.r.t. the input only.
* :func:`input_grad`: gradient of a loss w.r.t. the input (and the logits), nothing else.
* :func:`generator`: a seeded ``torch.Generator`` on the input's device.
* :func:`project_linf`, :func:`project_l2`: projections onto the budget ball and ``[0, 1]``.
* :func:`as_logits`, :func:`warn_if_probabilities`, :func:`model_dtype`, :func:`model_logits` (from
  :mod:`advviz._modules`, the model-call contract shared with :func:`advviz.metrics.logits`): what
  every attack checks about the model's output and input dtype (used by ``gradient.attack_forward``).
* :func:`working_copy`, :func:`to_input_dtype`: half-precision inputs are attacked in float32 and
  the result is rounded back to the input's dtype without leaving the budget.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advviz._checks import check_images
from advviz._modules import as_logits, model_dtype, model_guard, model_logits, warn_if_probabilities

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
    "as_logits",
    "warn_if_probabilities",
    "model_dtype",
    "working_copy",
    "to_input_dtype",
    "model_logits",
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
        logits = as_logits(model(xi))
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


_LOW = (torch.float16, torch.bfloat16)


def working_copy(x: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``x`` to run an attack on: half precision is upcast to float32 (the
    steps, projections and losses need more than 11 bits), other dtypes are kept."""
    return x.detach().to(torch.float32 if x.dtype in _LOW else x.dtype, copy=True)


def to_input_dtype(x_adv: torch.Tensor, x: torch.Tensor, *, eps: float | None = None,
                   norm: str = "linf") -> torch.Tensor:
    """``x_adv`` (computed on :func:`working_copy`) as ``x``'s dtype, detached, still in budget.

    Rounding to float16/bfloat16 can push a coordinate past ``eps``; such coordinates (L-inf)
    are moved one representable value towards ``x``, and such images (L2) have their change
    shrunk until the rounded image is inside the ball. Values stay in ``[0, 1]``.
    """
    x_adv = x_adv.detach()
    if x_adv.dtype == x.dtype:
        return x_adv
    out = x_adv.to(x.dtype).clamp_(0.0, 1.0)
    if eps is None:
        return out
    xd = x.double()
    if norm == "linf":
        for _ in range(4):
            over = (out.double() - xd).abs() > eps
            if not bool(over.any()):
                return out
            out = torch.where(over, torch.nextafter(out, x), out)
        return torch.where((out.double() - xd).abs() > eps, x, out)
    delta = x_adv.double() - xd
    for _ in range(8):
        l2 = (out.double() - xd).flatten(1).norm(dim=1)
        over = l2 > eps
        if not bool(over.any()):
            return out
        delta = delta * torch.where(over, 1 - 2.0 ** -8, 1.0).view(-1, *([1] * (x.ndim - 1)))
        out = (xd + delta).clamp(0.0, 1.0).to(x.dtype)
    l2 = (out.double() - xd).flatten(1).norm(dim=1)
    return torch.where((l2 > eps).view(-1, *([1] * (x.ndim - 1))), x, out)
