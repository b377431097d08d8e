"""Auto-PGD (Croce & Hein, ICML 2020): APGD-CE, APGD-DLR, APGD-T and the DLR losses.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (APGD, Algorithm 1; the DLR losses, eqs. 6 and 7). The
reference AutoAttack keeps them in ``autopgd_base.py``; FAB-T is in :mod:`advviz.attacks.fab`,
Square in :mod:`advviz.attacks.square`, and the chain in :func:`advviz.evaluate.autoattack`.

Common to the attacks here (and to FAB and Square):

* ``x``: images ``(B, C, H, W)`` float in ``[0, 1]`` (float16/bfloat16 are attacked in float32
  and rounded back inside the budget); ``y``: true labels ``(B,)``.
* ``norm``: ``"linf"`` (default) or ``"l2"`` (``"Linf"``/``"L2"`` accepted). Each attack is
  registered once, as L-infinity (``spec.norm == "linf"``, ``eps`` in 1/255 steps for the
  widgets); ``norm="l2"`` is a keyword of the same function, as for :func:`~advviz.attacks.pgd`,
  and the invariant tests check the L2 budget when ``norm="l2"`` is passed. ``eps=None`` takes
  the norm's default (8/255 for L-inf, 0.5 for L2, AutoAttack's CIFAR-10 budgets).
* The result lies in the ``eps`` ball of ``norm`` and in ``[0, 1]``; images the attack did not
  fool are returned as the best point found (APGD: the highest loss; Square: the lowest margin)
  or unchanged (FAB-T, which only counts points within ``eps``, see :func:`~advviz.attacks.fab`).
* Images already misclassified (targeted: already classified as the target) are returned
  unchanged: there is nothing to attack, as in the reference implementation.
* ``seed`` seeds every random draw on ``x``'s device; ``precision`` as in
  :mod:`advviz.attacks.gradient`; the model runs through :func:`~advviz.attacks._core.attack_forward`
  (eval mode, restored afterwards, the input contract checks).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advviz.attacks._api import register_attack
from advviz.attacks._core import (
    N_ITER_PARAM,
    NORM_EPS_PARAM,
    PRECISION_PARAM,
    RESTARTS_PARAM,
    SEED_PARAM,
    TARGET_CLASSES_PARAM,
    TARGETED_PARAM,
    attack_forward,
    batch_norm,
    check_attack_inputs,
    check_labels,
    generator,
    input_grad,
    logit_margin,
    norm_eps,
    norm_name,
    per_image,
    project,
    refuse_targeted,
    to_input_dtype,
    working_copy,
)
from advviz.attacks.trajectory import current_recorder

__all__ = ["apgd_ce", "apgd_dlr", "apgd_t", "apgd_checkpoints", "dlr_loss", "dlr_loss_targeted"]

Net = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------


def _sorted_logit(zs: torch.Tensor, i: int) -> torch.Tensor:
    """The ``i``-th largest logit (1-based) of descending-sorted ``zs`` ``(B, K)``; the smallest
    one when ``K < i`` (the DLR denominators need 3 or 4 classes; see :func:`dlr_loss`)."""
    return zs[:, min(i, zs.shape[1]) - 1]


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, eq. 6), per sample ``(B,)``, to maximise:

    ``DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with ``z_pi1 >= z_pi2 >= ...``
    the sorted logits. Invariant to shifting and scaling the logits. With fewer than 3 classes
    ``z_pi3`` is the smallest logit (a choice; the paper assumes K >= 3).

    Args:
        logits: ``(B, K)``; y: true labels ``(B,)``.
    """
    zs = logits.sort(dim=1, descending=True).values
    return logit_margin(logits, y) / (zs[:, 0] - _sorted_logit(zs, 3) + 1e-12)


def dlr_loss_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 7), per sample ``(B,)``, to maximise:

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``. With fewer than 4 classes the missing
    ``z_pi4`` (and ``z_pi3``) is the smallest logit (a choice; the paper assumes K >= 4).

    Args:
        logits: ``(B, K)``; y: true labels ``(B,)``; target: target labels ``(B,)``.
    """
    zs = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (zs[:, 0] - 0.5 * (_sorted_logit(zs, 3) + _sorted_logit(zs, 4)) + 1e-12)


# ---------------------------------------------------------------------------------------------
# APGD
# ---------------------------------------------------------------------------------------------


def apgd_checkpoints(n_iter: int) -> list[int]:
    """APGD's checkpoints ``w_j = ceil(p_j * n_iter)`` (Croce & Hein 2020, Sec. 3.2):
    ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, while ``p_j <= 1``.
    For ``n_iter = 100``: ``[0, 22, 41, 57, 70, 80, 87, 93, 99]``. Computed in hundredths so that
    float rounding does not move a ceiling."""
    p = [0, 22]  # in hundredths
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 3, 6)
        if nxt > 100:
            break
        p.append(nxt)
    w: list[int] = []
    for q in p:
        v = -(-q * int(n_iter) // 100)
        if not w or v > w[-1]:
            w.append(v)
    return w


def _sphere_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """AutoAttack's start: a random point on the sphere of radius ``eps`` of ``norm`` (L-inf: a
    uniform draw rescaled so that its largest coordinate is ``eps``; L2: a normalised Gaussian)."""
    if norm == "linf":
        t = torch.empty_like(x).uniform_(-1.0, 1.0, generator=gen)
        t = t / per_image(t.flatten(1).abs().amax(dim=1), t).clamp_min(1e-12)
    else:
        t = torch.empty_like(x).normal_(generator=gen)
        t = t / batch_norm(t).clamp_min(1e-12)
    return (x + eps * t).clamp(0.0, 1.0)


def _step_direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    return g.sign() if norm == "linf" else g / batch_norm(g).clamp_min(1e-12)


def _apgd_run(net: Net, x: torch.Tensor, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              success_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, eps: float, norm: str,
              n_iter: int, rho: float, momentum: float, gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run (Croce & Hein 2020, Algorithm 1) on the batch ``x``.

    ``loss_fn(logits, rows)`` and ``success_fn(logits, rows)`` take the logits of the rows
    ``rows`` (indices into ``x``) and return per-row values. A point leaves the batch at its
    first success: every quantity of the algorithm is per point, so the points still running
    follow the same iterates as in the whole batch (up to the float rounding of another batch
    size), and the work left is proportional to the points not fooled yet.

    Returns ``(x_out, fooled (B,) bool, loss (B,))``: ``x_out`` is, per sample, the first
    iterate where ``success_fn`` held (if any), else the highest-loss iterate ``x_max``; ``loss``
    is the highest loss reached (up to the success, for the fooled points).
    """
    b = x.shape[0]
    checkpoints = set(apgd_checkpoints(n_iter)[1:])
    rows = torch.arange(b, device=x.device)
    x_k = _sphere_start(x, eps, norm, gen)
    g, logits = input_grad(net, x_k, lambda z: loss_fn(z, rows))
    loss_k = loss_fn(logits, rows)
    fooled = success_fn(logits, rows)
    x_out, f_out = x_k.clone(), loss_k.clone()
    xs = x
    x_max, g_max, f_max = x_k.clone(), g.clone(), loss_k.clone()
    eta = torch.full((b,), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_prev = x_k
    # checkpoint bookkeeping: successful steps since the last checkpoint, eta and f_max there
    n_up = torch.zeros(b, device=x.device)
    last_w, f_max_last = 0, f_max.clone()
    reduced_last = torch.zeros(b, dtype=torch.bool, device=x.device)
    recorder = current_recorder()  # None unless advviz.attacks.record() is following this attack
    shown = x_k.clone() if recorder is not None else None
    done = fooled.clone()  # the rows (of the running batch) to drop: fooled
    for k in range(n_iter + 1):
        if bool(done.any()):
            keep = ~done
            rows, xs, x_k, x_prev, g, loss_k = rows[keep], xs[keep], x_k[keep], x_prev[keep], g[keep], loss_k[keep]
            x_max, g_max, f_max, eta, n_up = x_max[keep], g_max[keep], f_max[keep], eta[keep], n_up[keep]
            f_max_last, reduced_last = f_max_last[keep], reduced_last[keep]
        if rows.numel() == 0 or k == n_iter:
            break
        e = per_image(eta, xs)
        z = project(x_k + e * _step_direction(g, norm), xs, eps, norm)
        if k == 0:
            x_new = z  # x^(1) = P(x^(0) + eta * d(grad)): no momentum on the first step
        else:
            x_new = project(x_k + momentum * (z - x_k) + (1 - momentum) * (x_k - x_prev), xs, eps, norm)
        x_prev, x_k = x_k, x_new
        if shown is not None:
            shown[rows] = x_k
            recorder(shown)
        g, logits = input_grad(net, x_k, lambda z, r=rows: loss_fn(z, r))
        loss_new = loss_fn(logits, rows)
        done = success_fn(logits, rows)
        n_up += (loss_new > loss_k).float()
        loss_k = loss_new
        better = loss_new > f_max
        x_max = torch.where(per_image(better, xs), x_k, x_max)
        g_max = torch.where(per_image(better, xs), g, g_max)
        f_max = torch.where(better, loss_new, f_max)
        if bool(done.any()):
            x_out[rows[done]] = x_k[done]
            f_out[rows[done]] = f_max[done]
            fooled[rows[done]] = True
        if k + 1 in checkpoints:
            w = k + 1
            cond1 = n_up < rho * (w - last_w)
            cond2 = ~reduced_last & (f_max <= f_max_last)
            halve = cond1 | cond2
            eta = torch.where(halve, eta / 2, eta)
            # restart from x_max (with its gradient and no momentum) where the step was halved
            x_k = torch.where(per_image(halve, xs), x_max, x_k)
            x_prev = torch.where(per_image(halve, xs), x_max, x_prev)
            g = torch.where(per_image(halve, xs), g_max, g)
            loss_k = torch.where(halve, f_max, loss_k)
            reduced_last, f_max_last, last_w = halve, f_max.clone(), w
            n_up.zero_()
    x_out[rows] = x_max
    f_out[rows] = f_max
    return x_out, fooled, f_out


def _apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str, eps: float | None, norm: str,
          n_iter: int, n_restarts: int, rho: float, momentum: float, n_target_classes: int,
          targeted: bool, seed: int | None, precision: str) -> torch.Tensor:
    """APGD with ``loss`` in ``ce``, ``dlr`` or ``dlr-t`` (targets: the most likely classes), with
    restarts for the images not fooled yet; returns the images in ``x``'s dtype."""
    y = check_attack_inputs(model, x, y)
    norm = norm_name(norm)
    eps = norm_eps(eps, norm, x)
    n_iter, n_restarts = int(n_iter), int(n_restarts)
    if n_iter < 1 or n_restarts < 1:
        raise ValueError(f"n_iter and n_restarts must be >= 1, got {n_iter}, {n_restarts}")
    if not 0.0 < rho <= 1.0 or not 0.0 < momentum <= 1.0:
        raise ValueError(f"rho and momentum must lie in (0, 1], got {rho}, {momentum}")
    xc = working_copy(x)
    gen = generator(seed, x.device)
    out = xc.clone()
    with attack_forward(model, xc, precision) as net:
        with torch.no_grad():
            logits0 = net(xc)
        y = check_labels(y, xc, logits0.shape[1])  # a label the output has no column for: say so
        pred = logits0.argmax(dim=1)
        todo = pred != y if targeted else pred == y
        if loss == "dlr-t":
            order = logits0.argsort(dim=1, descending=True)
            n_t = min(int(n_target_classes), logits0.shape[1] - 1)
            if n_t < 1:
                raise ValueError(f"n_target_classes must be >= 1, got {n_target_classes}")
            runs = [order[:, i] for i in range(1, n_t + 1)]  # the i-th most likely class
        else:
            runs = [None]
        best_loss = torch.full((xc.shape[0],), float("-inf"), device=x.device, dtype=xc.dtype)
        for target in runs:
            for _ in range(n_restarts):
                idx = todo.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                xi, yi = xc[idx], y[idx]
                # (logits of the rows r of this batch) -> per-row loss / success
                if loss == "ce":
                    sign = -1.0 if targeted else 1.0
                    loss_fn = lambda z, r, yi=yi, s=sign: s * F.cross_entropy(z, yi[r], reduction="none")  # noqa: E731
                elif loss == "dlr":
                    loss_fn = lambda z, r, yi=yi: dlr_loss(z, yi[r])  # noqa: E731
                else:
                    ti = target[idx]
                    loss_fn = lambda z, r, yi=yi, ti=ti: dlr_loss_targeted(z, yi[r], ti[r])  # noqa: E731
                if targeted:
                    success_fn = lambda z, r, yi=yi: z.argmax(dim=1) == yi[r]  # noqa: E731
                else:
                    success_fn = lambda z, r, yi=yi: z.argmax(dim=1) != yi[r]  # noqa: E731
                x_i, fooled, f_i = _apgd_run(net, xi, loss_fn, success_fn, eps=eps, norm=norm, n_iter=n_iter,
                                             rho=rho, momentum=momentum, gen=gen)
                # fooled images take their adversarial; the others keep their highest-loss point
                keep = fooled | (f_i > best_loss[idx])
                out[idx[keep]] = x_i[keep]
                best_loss[idx] = torch.maximum(best_loss[idx], f_i)
                todo[idx[fooled]] = False
    return to_input_dtype(out, x, eps=eps, norm=norm)


_RHO = 0.75
_ALPHA_MOMENTUM = 0.75


@register_attack(
    "apgd_ce", recordable=True, params=[NORM_EPS_PARAM, N_ITER_PARAM, RESTARTS_PARAM, TARGETED_PARAM, SEED_PARAM, PRECISION_PARAM],
    paper="Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse "
          "parameter-free attacks. ICML 2020",
    norm="linf", targeted=True, budget="eps", quick={"n_iter": 5},
    description="Auto-PGD on the cross-entropy: step size halved at checkpoints, momentum 0.75")
def apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None, norm: str = "linf",
            n_iter: int = 100, n_restarts: int = 1, rho: float = _RHO, momentum: float = _ALPHA_MOMENTUM,
            targeted: bool = False, seed: int | None = 0, precision: str = "fp32") -> torch.Tensor:
    """APGD-CE (Croce & Hein, ICML 2020, Algorithm 1) on the cross-entropy, L-inf or L2.

    From a random point on the ``eps`` sphere, ``z = P(x_k + eta * d(grad))`` and
    ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))`` (``d``: sign for L-inf,
    ``g/||g||_2`` for L2; ``P``: projection onto the ball and ``[0, 1]``; the first step has no
    momentum), ``eta = 2 eps`` initially, ``alpha = 0.75``. At each checkpoint
    ``w_j`` (:func:`apgd_checkpoints`) ``eta`` is halved and the iterate restarts from ``x_max``
    (with its gradient, and no momentum for the next step: a choice, the paper does not say)
    where condition 1 (fewer than ``rho * (w_j - w_{j-1})`` loss increases since the last
    checkpoint, ``rho = 0.75``) or condition 2 (no halving at the last checkpoint and no
    improvement of the best loss since) holds. Stops early once every image is fooled.
    Defaults: ``n_iter=100, n_restarts=1`` (AutoAttack's standard version).

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in ``[0, 1]`` (not modified).
        y: true labels ``(B,)``; target labels when ``targeted=True``.
        eps: budget (``None``: 8/255 for L-inf, 0.5 for L2).
        norm: ``"linf"`` or ``"l2"``.
        n_iter: iterations per run (default 100).
        n_restarts: runs from new random starts on the images not fooled yet (default 1).
        rho: condition 1's threshold (default 0.75).
        momentum: alpha (default 0.75).
        targeted: descend the cross-entropy to ``y`` (success: classified as ``y``).
        seed: seeds the random starts.
        precision: ``"fp32"`` or ``"bf16"``.

    Returns:
        ``x_adv`` ``(B, C, H, W)``: per image, the first misclassified iterate found, else the
        highest-loss one; images misclassified to begin with are returned unchanged.
    """
    return _apgd(model, x, y, loss="ce", eps=eps, norm=norm, n_iter=n_iter, n_restarts=n_restarts, rho=rho,
                 momentum=momentum, n_target_classes=1, targeted=bool(targeted), seed=seed, precision=precision)


@register_attack(
    "apgd_dlr", recordable=True, params=[NORM_EPS_PARAM, N_ITER_PARAM, RESTARTS_PARAM, SEED_PARAM, PRECISION_PARAM],
    paper="Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse "
          "parameter-free attacks. ICML 2020",
    norm="linf", targeted=False, budget="eps", quick={"n_iter": 5},
    description="Auto-PGD on the Difference of Logits Ratio loss (scale-invariant)")
def apgd_dlr(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None, norm: str = "linf",
             n_iter: int = 100, n_restarts: int = 1, rho: float = _RHO, momentum: float = _ALPHA_MOMENTUM,
             targeted: bool = False, seed: int | None = 0, precision: str = "fp32") -> torch.Tensor:
    """APGD-DLR (Croce & Hein, ICML 2020): :func:`apgd_ce`'s iteration on :func:`dlr_loss` (eq. 6).

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``, ``K >= 3``
            (see :func:`dlr_loss` for fewer).
        x: images ``(B, C, H, W)`` in ``[0, 1]``.
        y: true labels ``(B,)``.
        eps: budget (``None``: 8/255 for L-inf, 0.5 for L2).
        norm: ``"linf"`` or ``"l2"``.
        n_iter: iterations per run (default 100).
        n_restarts: runs for the images not fooled yet (default 1).
        rho: condition 1's threshold (0.75).
        momentum: alpha (0.75).
        targeted: must be ``False`` (accepted for a uniform interface; use
            ``apgd_ce(targeted=True)`` for a given target).
        seed: seeds the random starts.
        precision: ``"fp32"`` or ``"bf16"``.

    Returns:
        ``x_adv`` ``(B, C, H, W)`` as :func:`apgd_ce`'s.
    """
    refuse_targeted("apgd_dlr", targeted)
    return _apgd(model, x, y, loss="dlr", eps=eps, norm=norm, n_iter=n_iter, n_restarts=n_restarts, rho=rho,
                 momentum=momentum, n_target_classes=1, targeted=False, seed=seed, precision=precision)


@register_attack(
    "apgd_t", params=[NORM_EPS_PARAM, N_ITER_PARAM, TARGET_CLASSES_PARAM, RESTARTS_PARAM, SEED_PARAM,
                      PRECISION_PARAM],
    paper="Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse "
          "parameter-free attacks. ICML 2020",
    norm="linf", targeted=False, budget="eps", quick={"n_iter": 4, "n_target_classes": 2},
    description="Auto-PGD on the targeted DLR loss, over the most likely target classes in turn")
def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None, norm: str = "linf",
           n_iter: int = 100, n_target_classes: int = 9, n_restarts: int = 1, rho: float = _RHO,
           momentum: float = _ALPHA_MOMENTUM, targeted: bool = False, seed: int | None = 0,
           precision: str = "fp32") -> torch.Tensor:
    """APGD-T (Croce & Hein, ICML 2020): APGD on the targeted DLR loss (eq. 7), AutoAttack's version.

    The targets are the classes ranked 2nd, 3rd, ... by the clean logits (``n_target_classes``
    of them, at most ``K - 1``); each target gets ``n_restarts`` APGD runs of ``n_iter``
    iterations on the images not fooled yet, so an image stops at its first success (any
    misclassification counts, as in the reference). An untargeted attack: ``y`` is the true label.
    Defaults: ``n_iter=100, n_target_classes=9, n_restarts=1`` (AutoAttack's standard version).

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``, ``K >= 4``
            (see :func:`dlr_loss_targeted` for fewer).
        x: images ``(B, C, H, W)`` in ``[0, 1]``.
        y: true labels ``(B,)``.
        eps: budget (``None``: 8/255 for L-inf, 0.5 for L2).
        norm: ``"linf"`` or ``"l2"``.
        n_iter: iterations per target and run (default 100).
        n_target_classes: targets tried (default 9).
        n_restarts: runs per target (default 1).
        rho: condition 1's threshold (0.75).
        momentum: alpha (0.75).
        targeted: must be ``False`` (the targets are chosen internally; accepted for a uniform
            interface).
        seed: seeds the random starts.
        precision: ``"fp32"`` or ``"bf16"``.

    Returns:
        ``x_adv`` ``(B, C, H, W)``: the first misclassified point found, else the highest
        targeted-DLR point over all targets.
    """
    refuse_targeted("apgd_t", targeted)
    return _apgd(model, x, y, loss="dlr-t", eps=eps, norm=norm, n_iter=n_iter, n_restarts=n_restarts, rho=rho,
                 momentum=momentum, n_target_classes=n_target_classes, targeted=False, seed=seed,
                 precision=precision)
