"""FAB-T (Croce & Hein, ICML 2020): minimally distorted adversarial examples by projections on
the linearised decision boundary, the targeted version AutoAttack runs.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020 (FAB, Algorithm 1; the projection, eq. 5 and Sec. 3.1). The reference AutoAttack keeps
it in ``fab_base.py``/``fab_pt.py`` and the projections in ``fab_projections.py``. The
conventions (``norm``, ``eps=None``, images already misclassified, ``seed``, ``precision``) are
those of :mod:`advviz.attacks.apgd`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advviz.attacks._api import register_attack
from advviz.attacks._core import (
    N_ITER_PARAM,
    NORM_EPS_PARAM,
    PRECISION_PARAM,
    RESTARTS_PARAM,
    SEED_PARAM,
    TARGET_CLASSES_PARAM,
    attack_forward,
    check_attack_inputs,
    check_labels,
    generator,
    input_grad,
    norm_eps,
    norm_name,
    per_image,
    refuse_targeted,
    to_input_dtype,
    working_copy,
)

__all__ = ["fab", "project_hyperplane_box"]

Net = Callable[[torch.Tensor], torch.Tensor]


def _dist(d: torch.Tensor, norm: str) -> torch.Tensor:
    d = d.flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def project_hyperplane_box(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str, *,
                           iters: int = 50) -> torch.Tensor:
    """FAB's projection (Croce & Hein 2020, FAB, eq. 5 and Sec. 3.1): per row, the smallest change
    ``d`` (in ``norm``) with ``<w, d> = c`` and ``0 <= p + d <= 1``.

    The solution moves every coordinate towards the hyperplane (sign of ``c * w_i``) up to the
    box: L-inf ``d_i = min(t, room_i)``, L2 ``d_i = min(lam |w_i|, room_i)`` (KKT), with the scalar
    ``t``/``lam`` found by bisection on the monotone ``sum |w_i| d_i = |c|``. Where the
    hyperplane does not meet the box, the box corner furthest along ``w`` is returned (the point
    of the box closest to the hyperplane's side), as in the paper.

    Args:
        p: points ``(N, D)`` in ``[0, 1]``; w: normals ``(N, D)``; c: offsets ``(N,)``.
        norm: ``"linf"`` or ``"l2"``; iters: bisection steps.

    Returns:
        ``d`` ``(N, D)``.
    """
    sgn = torch.sign(c)[:, None] * torch.sign(w)
    room = torch.where(sgn > 0, 1.0 - p, p).clamp_min(0.0) * (sgn != 0)
    aw = w.abs()
    need = c.abs()
    if norm == "linf":
        def reach(t: torch.Tensor) -> torch.Tensor:
            return (aw * torch.minimum(t[:, None], room)).sum(dim=1)
        hi = room.amax(dim=1)
    else:
        def reach(t: torch.Tensor) -> torch.Tensor:
            return (aw * torch.minimum(t[:, None] * aw, room)).sum(dim=1)
        hi = torch.where(aw > 0, room / aw.clamp_min(1e-30), torch.zeros_like(room)).amax(dim=1)
    lo = torch.zeros_like(hi)
    for _ in range(iters):
        mid = (lo + hi) / 2
        ok = reach(mid) >= need
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    t = hi[:, None]
    mag = torch.minimum(t, room) if norm == "linf" else torch.minimum(t * aw, room)
    return sgn * mag


def _fab_run(net: Net, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, norm: str, eps: float,
             n_iter: int, alpha_max: float, eta: float, beta: float, start: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB-T run towards targets ``t``: returns ``(closest adversarial found, its distance)``
    (``inf`` where none was found)."""
    b = x0.shape[0]
    flat0 = x0.flatten(1)
    x1 = x0.clone() if start is None else start
    best = torch.full((b,), float("inf"), device=x0.device, dtype=x0.dtype)
    adv = x0.clone()
    loss = lambda z: z.gather(1, t[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)  # noqa: E731
    for _ in range(n_iter):
        g, logits = input_grad(net, x1, loss)
        f = loss(logits)
        w = g.flatten(1)
        flat1 = x1.flatten(1)
        # the linearised boundary {z : f + <w, z - x1> = 0}, projected on from x1 and from x0
        d1 = project_hyperplane_box(flat1, w, -f, norm)
        d2 = project_hyperplane_box(flat0, w, -f + (w * (flat1 - flat0)).sum(dim=1), norm)
        a1 = _dist(d1, norm).clamp_min(1e-8)
        a2 = _dist(d2, norm).clamp_min(1e-8)
        alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)[:, None]
        x1 = ((flat1 + eta * d1) * (1 - alpha) + (flat0 + eta * d2) * alpha).clamp(0.0, 1.0).view_as(x0)
        with torch.no_grad():
            is_adv = net(x1).argmax(dim=1) != y
        dist = _dist(x1 - x0, norm)
        closer = is_adv & (dist < best)
        adv = torch.where(per_image(closer, x0), x1, adv)
        best = torch.where(closer, dist, best)
        # backward step towards x0 after a success (the paper's beta)
        x1 = torch.where(per_image(is_adv, x0), x0 + beta * (x1 - x0), x1)
    return adv, best


@register_attack(
    "fab", params=[NORM_EPS_PARAM, N_ITER_PARAM, TARGET_CLASSES_PARAM, RESTARTS_PARAM, SEED_PARAM,
                   PRECISION_PARAM],
    paper="Croce, Hein. Minimally distorted adversarial examples with a fast adaptive boundary attack. ICML 2020",
    norm="linf", targeted=False, budget="eps", quick={"n_iter": 3, "n_target_classes": 2},
    description="FAB-T: minimal-norm adversarials by projections on the linearised boundary to each target")
def fab(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None, norm: str = "linf",
        n_iter: int = 100, n_target_classes: int = 9, n_restarts: int = 1, alpha_max: float = 0.1,
        eta: float = 1.05, beta: float = 0.9, targeted: bool = False, seed: int | None = 0,
        precision: str = "fp32") -> torch.Tensor:
    """FAB-T (Croce & Hein, ICML 2020, FAB Algorithm 1, targeted version as in AutoAttack), L-inf or L2.

    For each target ``t`` (the classes ranked 2nd, 3rd, ... by the clean logits), linearise
    ``f = z_t - z_y`` at the iterate ``x1``; project ``x1`` and the original ``x0`` onto the
    hyperplane ``f + <grad f, z - x1> = 0`` intersected with ``[0, 1]`` (:func:`project_hyperplane_box`,
    giving ``d1``, ``d2``); step ``x1 <- clip((1 - a)(x1 + eta d1) + a (x0 + eta d2))`` with
    ``a = min(|d1| / (|d1| + |d2|), alpha_max)``; after a success keep the point if it is the
    closest so far and move back ``x1 <- x0 + beta (x1 - x0)``. The first run starts at ``x0``;
    restarts start at a random point at half the best distance found (or ``eps``), as in the
    reference. Defaults: ``n_iter=100, n_target_classes=9, n_restarts=1, alpha_max=0.1,
    eta=1.05, beta=0.9`` (AutoAttack's standard FAB-T).

    FAB minimises the perturbation and is not bounded by ``eps`` while it runs. **An image whose
    closest adversarial found is further than ``eps`` is returned unchanged** (AutoAttack only
    counts points within ``eps``; projecting them into the ball would rarely keep them
    adversarial); targets are tried in turn only on the images not yet fooled within ``eps``.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in ``[0, 1]``.
        y: true labels ``(B,)`` (an untargeted attack; the targets are chosen internally).
        eps: the budget of the result (``None``: 8/255 for L-inf, 0.5 for L2).
        norm: ``"linf"`` or ``"l2"``.
        n_iter: iterations per target and run (default 100).
        n_target_classes: targets tried (default 9, at most ``K - 1``).
        n_restarts: runs per target (default 1).
        alpha_max: the largest weight of the step from ``x0`` (default 0.1).
        eta: overshoot of the projections (default 1.05).
        beta: backward step after a success (default 0.9).
        targeted: must be ``False`` (the targets are chosen internally; accepted for a uniform
            interface).
        seed: seeds the restarts' random starts.
        precision: ``"fp32"`` or ``"bf16"``.

    Returns:
        ``x_adv`` ``(B, C, H, W)``: the closest adversarial found where it lies within ``eps``,
        else ``x``.
    """
    refuse_targeted("fab", targeted)
    y = check_attack_inputs(model, x, y)
    norm = norm_name(norm)
    eps = norm_eps(eps, norm, x)
    n_iter, n_restarts, n_t = int(n_iter), int(n_restarts), int(n_target_classes)
    if n_iter < 1 or n_restarts < 1 or n_t < 1:
        raise ValueError(f"n_iter, n_restarts and n_target_classes must be >= 1, got {n_iter}, {n_restarts}, {n_t}")
    if not 0.0 <= alpha_max <= 1.0 or eta < 1.0 or not 0.0 < beta <= 1.0:
        raise ValueError(f"need alpha_max in [0, 1], eta >= 1, beta in (0, 1]; got {alpha_max}, {eta}, {beta}")
    xc = working_copy(x)
    gen = generator(seed, x.device)
    out = xc.clone()
    with attack_forward(model, xc, precision) as net:
        with torch.no_grad():
            logits0 = net(xc)
        y = check_labels(y, xc, logits0.shape[1])  # a label the output has no column for: say so
        todo = logits0.argmax(dim=1) == y
        order = logits0.argsort(dim=1, descending=True)
        best = torch.full((xc.shape[0],), float("inf"), device=x.device, dtype=xc.dtype)
        for k in range(1, min(n_t, logits0.shape[1] - 1) + 1):
            for r in range(n_restarts):
                idx = todo.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                x0 = xc[idx]
                start = None
                if r > 0:
                    radius = per_image(torch.minimum(best[idx], torch.full_like(best[idx], eps)), x0)
                    u = (torch.empty_like(x0).uniform_(-1, 1, generator=gen) if norm == "linf"
                         else torch.empty_like(x0).normal_(generator=gen))
                    start = (x0 + 0.5 * radius * u / per_image(_dist(u, norm), x0).clamp_min(1e-12)).clamp(0.0, 1.0)
                adv, dist = _fab_run(net, x0, y[idx], order[idx, k], norm=norm, eps=eps, n_iter=n_iter,
                                     alpha_max=alpha_max, eta=eta, beta=beta, start=start)
                closer = dist < best[idx]
                best[idx[closer]] = dist[closer]
                inside = closer & (dist <= eps)
                out[idx[inside]] = adv[inside]
                todo[idx[inside]] = False
    return to_input_dtype(out, x, eps=eps, norm=norm)
