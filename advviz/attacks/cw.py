"""Carlini & Wagner's L2 attack (tanh-space, Adam, binary search over the constant c)."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from advviz._registry import ParamSpec
from advviz.attacks._api import register_attack
from advviz.attacks._core import (
    attack_forward,
    check_attack_inputs,
    logit_margin,
    model_guard,
    model_logits,
    to_input_dtype,
    working_copy,
)

__all__ = ["cw_l2", "cw_margin"]

log = logging.getLogger(__name__)

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults
_C_MAX = 1e10


def cw_margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """How far the logits are past the decision boundary, ``(B,)``: untargeted
    ``max_{i != y} Z_i - Z_y``; targeted ``Z_t - max_{i != t} Z_i``. Positive means success."""
    return logit_margin(logits, y, targeted)


@register_attack(
    "cw_l2",
    params=[
        ParamSpec("c", 1.0, low=1e-3, high=1e3, log=True, help="initial trade-off constant c (binary-searched)"),
        ParamSpec("kappa", 0.0, low=0.0, high=50.0, step=0.5, help="confidence margin kappa of f (logit units)"),
        ParamSpec("steps", 100, kind="int", low=1, high=10000, step=10, help="Adam iterations per binary step"),
        ParamSpec("binary_steps", 5, kind="int", low=1, high=20, step=1, help="binary-search steps over c"),
        ParamSpec("lr", 0.01, low=1e-4, high=1.0, log=True, help="Adam learning rate (in tanh space)"),
        ParamSpec("abort_early", True, kind="bool", help="stop an image's run when its loss stops decreasing"),
        ParamSpec("targeted", False, kind="bool", help="y holds target labels"),
        ParamSpec("seed", 0, kind="int", low=0, high=2**31 - 1, step=1, help="unused (deterministic)"),
    ],
    paper="Carlini, Wagner. Towards Evaluating the Robustness of Neural Networks. IEEE S&P 2017",
    norm="l2", targeted=True, budget=None, quick={"steps": 10, "binary_steps": 2},
    description="C&W L2: minimise ||delta||² + c·f(x+delta) in tanh space with Adam, binary search on c")
def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, c: float = 1.0, kappa: float = 0.0,
          steps: int = 100, binary_steps: int = 5, lr: float = 0.01, abort_early: bool = True,
          targeted: bool = False, seed: int | None = 0) -> torch.Tensor:
    """Carlini & Wagner L2 attack (IEEE S&P 2017, Sec. V-A), unbounded L2.

    Minimises ``||x' - x||_2^2 + c * f(x')`` over ``x' = (tanh(w) + 1) / 2`` (eq. 7, box
    constraint by change of variables) with Adam, where ``f(x') = max(Z_y - max_{i != y} Z_i,
    -kappa)`` (untargeted; targeted: ``max(max_{i != t} Z_i - Z_t, -kappa)``, the paper's f6).
    ``c`` is binary-searched per image over ``binary_steps`` runs (success: ``c`` halves towards
    the last failure; failure: ``c`` grows tenfold until a success bounds it), each run restarting
    from ``x`` with a fresh Adam state. With ``abort_early``, every ``steps // 10`` iterations an
    image whose loss is no longer below 0.9999 of the previous check stops its run (the paper's
    rule, per image here so that a result does not depend on the rest of the batch; stopped
    images leave the working batch, so the work shrinks).

    Result per image: the successful iterate (margin ``> kappa`` under the model) with the
    smallest L2 over all runs; **an image never fooled is returned unchanged** (``x``, as in the
    paper's reference code), so success is visible as ``x_adv != x`` and an L2 statistic over
    successes is not diluted by failed last iterates. Defaults: ``c=1, kappa=0, steps=100,
    binary_steps=5, lr=0.01`` (the paper uses 10000 steps, 9 binary steps, ``c0=1e-3``,
    ``lr=1e-2``); ``binary_steps=1`` gives torchattacks' CW (no search) with the same mathematics.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in ``[0, 1]`` (not modified).
        y: labels ``(B,)``; target labels when ``targeted=True``.
        c: initial constant ``c`` (> 0).
        kappa: confidence ``kappa >= 0``.
        steps: Adam iterations per binary step.
        binary_steps: binary-search steps over ``c``.
        lr: Adam learning rate on ``w``.
        abort_early: per-image early stop when the loss stops decreasing.
        targeted: make the model predict ``y``.
        seed: unused (the attack is deterministic); accepted for a uniform interface.

    Returns:
        ``x_adv`` ``(B, C, H, W)`` in ``[0, 1]``, detached, same dtype/device as ``x``.
    """
    y = check_attack_inputs(model, x, y)
    c = float(c)
    if not c > 0 or math.isinf(c):
        raise ValueError(f"c must be a positive finite number, got {c}")
    if not kappa >= 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    steps, binary_steps = int(steps), int(binary_steps)
    if steps < 1 or binary_steps < 1:
        raise ValueError(f"steps and binary_steps must be >= 1, got {steps}, {binary_steps}")
    lr = float(lr)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    kappa = float(kappa)

    xc = working_copy(x)
    b = xc.shape[0]
    dims = tuple(range(1, xc.ndim))
    w0 = torch.atanh((2 * xc - 1) * (1 - 1e-6))  # the paper's 0.999999 keeps atanh finite at 0 and 1
    best = xc.clone()
    best_l2 = torch.full((b,), float("inf"), device=xc.device, dtype=xc.dtype)
    consts = torch.full((b,), c, device=xc.device, dtype=xc.dtype)
    lower = torch.zeros(b, device=xc.device, dtype=xc.dtype)
    upper = torch.full((b,), _C_MAX, device=xc.device, dtype=xc.dtype)
    check_every = max(steps // 10, 1)

    with attack_forward(model, xc) as net:
        fast = net.fast
        for _ in range(binary_steps):
            succeeded = torch.zeros(b, dtype=torch.bool, device=xc.device)
            idx = torch.arange(b, device=xc.device)
            w = w0.clone()
            m = torch.zeros_like(w)
            v = torch.zeros_like(w)
            prev = torch.full((b,), float("inf"), device=xc.device, dtype=xc.dtype)
            for t in range(1, steps + 1):
                xs, ys, cs = xc[idx], y[idx], consts[idx]
                with torch.enable_grad():
                    wi = w.detach().requires_grad_(True)
                    adv = (torch.tanh(wi) + 1) / 2
                    l2 = (adv - xs).pow(2).sum(dim=dims)
                    logits = net(adv)
                    margin = cw_margin(logits, ys, targeted)
                    f = torch.clamp(-margin, min=-kappa)
                    loss = l2 + cs * f
                    (g,) = torch.autograd.grad(loss.sum(), wi)
                with torch.no_grad():
                    margin = margin.detach()
                    # a fast copy agrees with the model to ~1e-5 in the logits: keep a safety margin
                    tol = 1e-4 * (1.0 + float(logits.abs().max())) if fast else 0.0
                    ok = margin > kappa + tol
                    better = ok & (l2 < best_l2[idx])
                    if better.any():
                        sel = idx[better]
                        best_l2[sel] = l2[better].detach()
                        best[sel] = adv[better].detach()
                    succeeded[idx[ok]] = True
                    # Adam (torch.optim.Adam's update, elementwise, so per-image independent)
                    m.mul_(_BETA1).add_(g, alpha=1 - _BETA1)
                    v.mul_(_BETA2).addcmul_(g, g, value=1 - _BETA2)
                    bc1, bc2 = 1 - _BETA1 ** t, 1 - _BETA2 ** t
                    w = w - (lr / bc1) * m / (v.sqrt() / math.sqrt(bc2) + _ADAM_EPS)
                    if abort_early and t % check_every == 0 and t < steps:
                        cur = loss.detach()
                        keep = cur <= prev[idx] * 0.9999
                        prev[idx] = cur
                        if not keep.all():
                            if not keep.any():
                                break
                            idx, w, m, v = idx[keep], w[keep], m[keep], v[keep]
            # binary search on c, per image (Carlini & Wagner's reference code)
            with torch.no_grad():
                upper = torch.where(succeeded, torch.minimum(upper, consts), upper)
                lower = torch.where(succeeded, lower, torch.maximum(lower, consts))
                bounded = upper < _C_MAX * 0.1
                consts = torch.where(bounded, (lower + upper) / 2, (consts * 10).clamp(max=_C_MAX))

    found = torch.isfinite(best_l2)
    if fast and found.any():
        # confirm on the user's model itself; an image it does not see fooled is returned unchanged
        with model_guard(model), torch.no_grad():
            margin = cw_margin(model_logits(model, best[found]), y[found], targeted)
        bad = found.nonzero().squeeze(1)[~(margin > kappa)]
        if bad.numel():
            log.debug("cw_l2: %d results not confirmed by the model; returned unchanged", bad.numel())
            best[bad] = xc[bad]
    return to_input_dtype(best, x)
