"""DeepFool (Moosavi-Dezfooli et al. 2016), L2, batched with a shrinking working set."""

from __future__ import annotations

import logging

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

__all__ = ["deepfool"]

log = logging.getLogger(__name__)


def _class_grads(logits: torch.Tensor, xi: torch.Tensor, y: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Gradients ``w_k = grad_x (Z_k - Z_y)`` for every candidate ``k``: ``(k, b, C, H, W)``.

    One vectorised backward pass over the candidates (``is_grads_batched``); a loop of
    backward passes where vmap cannot handle an operation of the model."""
    k = cand.shape[1]
    onehot = torch.zeros(k, *logits.shape, device=logits.device, dtype=logits.dtype)
    onehot.scatter_(2, cand.t().unsqueeze(2), 1.0)
    onehot.scatter_add_(2, y.view(1, -1, 1).expand(k, -1, 1), torch.full((k, y.shape[0], 1), -1.0,
                                                                         device=logits.device, dtype=logits.dtype))
    try:
        (g,) = torch.autograd.grad(logits, xi, grad_outputs=onehot, is_grads_batched=True, retain_graph=True)
        return g
    except RuntimeError as exc:  # pragma: no cover - depends on the model's operations
        log.debug("deepfool: batched gradients unavailable (%s); looping over candidates", exc)
        return torch.stack([torch.autograd.grad(logits, xi, grad_outputs=onehot[j], retain_graph=True)[0]
                            for j in range(k)])


@register_attack(
    "deepfool",
    params=[
        ParamSpec("steps", 50, kind="int", low=1, high=200, step=1, help="maximum iterations"),
        ParamSpec("overshoot", 0.02, low=0.0, high=1.0, step=0.01, help="overshoot: x + (1 + overshoot) * r"),
        ParamSpec("nb_candidate", 10, kind="int", low=2, high=1000, step=1,
                  help="number of top classes considered (including the true one)"),
        ParamSpec("seed", 0, kind="int", low=0, high=2**31 - 1, step=1, help="unused (deterministic)"),
    ],
    paper="Moosavi-Dezfooli, Fawzi, Frossard. DeepFool: a simple and accurate method to fool deep neural "
          "networks. CVPR 2016",
    norm="l2", targeted=False, budget=None, quick={"steps": 10, "nb_candidate": 3},
    description="DeepFool: iterated linearised minimal L2 step to the nearest decision boundary")
def deepfool(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 50, overshoot: float = 0.02,
             nb_candidate: int = 10, seed: int | None = 0) -> torch.Tensor:
    """DeepFool, multi-class L2 (Moosavi-Dezfooli et al., CVPR 2016, Algorithm 2), unbounded.

    At each iteration, for the candidate classes ``k != y`` (the ``nb_candidate`` classes with the
    highest clean logits, ``y`` included), with ``f'_k = Z_k - Z_y`` and ``w'_k = grad f'_k``:
    ``l = argmin_k |f'_k| / ||w'_k||_2`` (eq. 9); ``r_i = (|f'_l| + 1e-4) / ||w'_l||^2 * w'_l``
    (eq. 10, with the reference code's 1e-4); ``r += r_i``; the iterate is
    ``clip(x + (1 + overshoot) * r, 0, 1)``. An image stops as soon as it is misclassified
    (images already misclassified are returned unchanged; with the fast BatchNorm-folded copy,
    "misclassified" asks for a logit margin of ``1e-4`` relative, so that the model itself agrees); the working batch shrinks, so each
    iteration only costs the still-correct images. After ``steps`` iterations an unfooled image
    is returned at its last iterate. Defaults: ``steps=50, overshoot=0.02, nb_candidate=10``
    (the paper's). Not targeted: the method steps to the *nearest* boundary.

    The candidate gradients come from one vectorised backward pass per iteration (instead of
    one backward per class and image as in torchattacks' per-image loop).

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in ``[0, 1]`` (not modified).
        y: true labels ``(B,)``.
        steps: maximum iterations (default 50).
        overshoot: overshoot factor (default 0.02).
        nb_candidate: classes considered, including ``y`` (default 10; capped at ``K``).
        seed: unused (the attack is deterministic); accepted for a uniform interface.

    Returns:
        ``x_adv`` ``(B, C, H, W)`` in ``[0, 1]``, detached, same dtype/device as ``x``.
    """
    y = check_attack_inputs(model, x, y)
    steps, nb_candidate = int(steps), int(nb_candidate)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if nb_candidate < 2:
        raise ValueError(f"nb_candidate must be >= 2, got {nb_candidate}")
    if not overshoot >= 0:
        raise ValueError(f"overshoot must be >= 0, got {overshoot}")
    xc = working_copy(x)
    x_adv = xc.clone()
    r_tot = torch.zeros_like(xc)
    with attack_forward(model, xc) as net:
        fast = net.fast
        with torch.no_grad():
            logits0 = net(xc)
        num_classes = logits0.shape[1]
        k = min(nb_candidate, num_classes)
        # the top-k classes other than y (y is ranked first so that it drops out)
        ranked = logits0.scatter(1, y[:, None], float("inf")).argsort(dim=1, descending=True)
        cand_all = ranked[:, 1:k]
        idx = torch.arange(xc.shape[0], device=xc.device)
        for it in range(steps + 1):
            xs = x_adv[idx]
            with torch.enable_grad():
                xi = xs.detach().requires_grad_(it < steps)
                logits = net(xi)
                # a fast copy agrees with the model to ~1e-5 in the logits: ask for a safety margin
                tol = 1e-4 * (1.0 + float(logits.detach().abs().max())) if fast else 0.0
                fooled = logit_margin(logits.detach(), y[idx]) > tol
                keep = ~fooled
                if it == steps or not keep.any():
                    break
                if not keep.all():
                    logits_k = logits[keep]
                else:
                    logits_k = logits
                idx_k = idx[keep]
                yk, cand = y[idx_k], cand_all[idx_k]
                w = _class_grads(logits_k, xi, yk, cand)  # (k-1, b_all, C, H, W)
            with torch.no_grad():
                w = w[:, keep] if not keep.all() else w
                zk = logits_k.detach()
                f = zk.gather(1, cand) - zk.gather(1, yk[:, None])  # (b, k-1)
                wn = w.flatten(2).norm(dim=2).t().clamp_min(1e-12)  # (b, k-1)
                best = (f.abs() / wn).argmin(dim=1)
                f_l = f.gather(1, best[:, None]).squeeze(1)
                wn_l = wn.gather(1, best[:, None]).squeeze(1)
                w_l = w.permute(1, 0, 2, 3, 4)[torch.arange(best.shape[0], device=xc.device), best]
                r_i = ((f_l.abs() + 1e-4) / wn_l.pow(2)).view(-1, 1, 1, 1) * w_l
                r_tot[idx_k] += r_i
                x_adv[idx_k] = torch.clamp(xc[idx_k] + (1 + overshoot) * r_tot[idx_k], 0.0, 1.0)
            idx = idx_k
    if fast:
        with model_guard(model), torch.no_grad():
            pred = model_logits(model, x_adv).argmax(dim=1)
        n_bad = int(((pred == y) & (x_adv != xc).flatten(1).any(dim=1)).sum())
        if n_bad:
            log.debug("deepfool: %d images fooled the fast copy but not the model", n_bad)
    return to_input_dtype(x_adv, x)
