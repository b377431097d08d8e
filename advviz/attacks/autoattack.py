"""The attacks of AutoAttack (Croce & Hein, ICML 2020): APGD-CE, APGD-DLR, APGD-T, FAB-T, Square.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (APGD, Algorithm 1; the DLR losses, eqs. 6 and 7); Croce &
Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack", ICML 2020
(FAB, Algorithm 1); Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020 (Algorithms 1-3).

Common to every attack here:

* ``x``: images ``(B, C, H, W)`` float in ``[0, 1]`` (float16/bfloat16 are attacked in float32
  and rounded back inside the budget); ``y``: true labels ``(B,)``.
* ``norm``: ``"linf"`` (default) or ``"l2"`` (``"Linf"``/``"L2"`` accepted). Each attack is
  registered once, as L-infinity (``spec.norm == "linf"``, ``eps`` in 1/255 steps for the
  widgets); ``norm="l2"`` is a keyword of the same function, as for :func:`~advviz.attacks.pgd`,
  and the invariant tests check the L2 budget when ``norm="l2"`` is passed. ``eps=None`` takes
  the norm's default (8/255 for L-inf, 0.5 for L2, AutoAttack's CIFAR-10 budgets).
* The result lies in the ``eps`` ball of ``norm`` and in ``[0, 1]``; images the attack did not
  fool are returned as the best point found (APGD: the highest loss; Square: the lowest margin)
  or unchanged (FAB-T, which only counts points within ``eps``, see :func:`fab`).
* Images already misclassified (targeted: already classified as the target) are returned
  unchanged: there is nothing to attack, as in the reference implementation.
* ``seed`` seeds every random draw on ``x``'s device; ``precision`` as in
  :mod:`advviz.attacks.gradient`; the model runs through :func:`~advviz.attacks.gradient.attack_forward`
  (eval mode, restored afterwards, the input contract checks).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advviz._registry import ParamSpec
from advviz.attacks._api import register_attack
from advviz.attacks._core import (
    batch_norm,
    generator,
    input_grad,
    project_l2,
    project_linf,
    to_input_dtype,
    working_copy,
)
from advviz.attacks.gradient import _PRECISION, _SEED, _check_common, attack_forward, check_norm_budget
from advviz.attacks.trajectory import current_recorder

__all__ = [
    "apgd_ce",
    "apgd_dlr",
    "apgd_t",
    "apgd_checkpoints",
    "dlr_loss",
    "dlr_loss_targeted",
    "fab",
    "project_hyperplane_box",
    "square",
    "square_p",
]

Net = Callable[[torch.Tensor], torch.Tensor]
_DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}

_EPS = ParamSpec("eps", 8 / 255, low=0.0, high=32 / 255, step=1 / 255, per255=True,
                 help="L-infinity budget on the [0, 1] scale (norm='l2': the L2 radius)")
_N_ITER = ParamSpec("n_iter", 100, kind="int", low=1, high=1000, step=1, help="iterations per run")
_RESTARTS = ParamSpec("n_restarts", 1, kind="int", low=1, high=10, step=1,
                      help="runs from new random starts for the images not fooled yet")
_TARGETS = ParamSpec("n_target_classes", 9, kind="int", low=1, high=99, step=1,
                     help="target classes tried, the most likely first (at most K - 1)")
_TARGETED = ParamSpec("targeted", False, kind="bool", help="y holds target labels; descend their cross-entropy")


def _norm_name(norm: str) -> str:
    n = str(norm).lower()
    if n not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return n


def _untargeted_only(name: str, targeted: bool) -> None:
    if targeted:
        raise ValueError(f"{name} is untargeted (it picks its target classes itself); for a given target "
                         "class use apgd_ce(..., targeted=True) or square(..., targeted=True)")


def _eps(eps: float | None, norm: str, x: torch.Tensor) -> float:
    return check_norm_budget("eps", _DEFAULT_EPS[norm] if eps is None else eps, norm, x)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    return project_linf(x_adv, x, eps) if norm == "linf" else project_l2(x_adv, x, eps)


def _dist(d: torch.Tensor, norm: str) -> torch.Tensor:
    d = d.flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def _bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


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
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return -(z_y - other) / (zs[:, 0] - _sorted_logit(zs, 3) + 1e-12)


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


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """AutoAttack's start: a random point on the sphere of radius ``eps`` of ``norm`` (L-inf: a
    uniform draw rescaled so that its largest coordinate is ``eps``; L2: a normalised Gaussian)."""
    if norm == "linf":
        t = torch.empty_like(x).uniform_(-1.0, 1.0, generator=gen)
        t = t / _bview(t.flatten(1).abs().amax(dim=1), t).clamp_min(1e-12)
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
    x_k = _random_start(x, eps, norm, gen)
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
        e = _bview(eta, xs)
        z = _project(x_k + e * _step_direction(g, norm), xs, eps, norm)
        if k == 0:
            x_new = z  # x^(1) = P(x^(0) + eta * d(grad)): no momentum on the first step
        else:
            x_new = _project(x_k + momentum * (z - x_k) + (1 - momentum) * (x_k - x_prev), xs, eps, norm)
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
        x_max = torch.where(_bview(better, xs), x_k, x_max)
        g_max = torch.where(_bview(better, xs), g, g_max)
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
            x_k = torch.where(_bview(halve, xs), x_max, x_k)
            x_prev = torch.where(_bview(halve, xs), x_max, x_prev)
            g = torch.where(_bview(halve, xs), g_max, g)
            loss_k = torch.where(halve, f_max, loss_k)
            reduced_last, f_max_last, last_w = halve, f_max.clone(), w
            n_up.zero_()
    x_out[rows] = x_max
    f_out[rows] = f_max
    return x_out, fooled, f_out


def _clean_logits(net: Net, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x)


def _apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str, eps: float | None, norm: str,
          n_iter: int, n_restarts: int, rho: float, momentum: float, n_target_classes: int,
          targeted: bool, seed: int | None, precision: str) -> torch.Tensor:
    """APGD with ``loss`` in ``ce``, ``dlr`` or ``dlr-t`` (targets: the most likely classes), with
    restarts for the images not fooled yet; returns the images in ``x``'s dtype."""
    y = _check_common(model, x, y)
    norm = _norm_name(norm)
    eps = _eps(eps, norm, x)
    n_iter, n_restarts = int(n_iter), int(n_restarts)
    if n_iter < 1 or n_restarts < 1:
        raise ValueError(f"n_iter and n_restarts must be >= 1, got {n_iter}, {n_restarts}")
    if not 0.0 < rho <= 1.0 or not 0.0 < momentum <= 1.0:
        raise ValueError(f"rho and momentum must lie in (0, 1], got {rho}, {momentum}")
    xc = working_copy(x)
    gen = generator(seed, x.device)
    out = xc.clone()
    with attack_forward(model, xc, precision) as net:
        logits0 = _clean_logits(net, xc)
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
    "apgd_ce", params=[_EPS, _N_ITER, _RESTARTS, _TARGETED, _SEED, _PRECISION],
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
    "apgd_dlr", params=[_EPS, _N_ITER, _RESTARTS, _SEED, _PRECISION],
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
    _untargeted_only("apgd_dlr", targeted)
    return _apgd(model, x, y, loss="dlr", eps=eps, norm=norm, n_iter=n_iter, n_restarts=n_restarts, rho=rho,
                 momentum=momentum, n_target_classes=1, targeted=False, seed=seed, precision=precision)


@register_attack(
    "apgd_t", params=[_EPS, _N_ITER, _TARGETS, _RESTARTS, _SEED, _PRECISION],
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
    _untargeted_only("apgd_t", targeted)
    return _apgd(model, x, y, loss="dlr-t", eps=eps, norm=norm, n_iter=n_iter, n_restarts=n_restarts, rho=rho,
                 momentum=momentum, n_target_classes=n_target_classes, targeted=False, seed=seed,
                 precision=precision)


# ---------------------------------------------------------------------------------------------
# Square Attack
# ---------------------------------------------------------------------------------------------

_SQUARE_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_p(i: int, n_queries: int, p_init: float = 0.8) -> float:
    """Square Attack's fraction ``p`` of pixels in the square at iteration ``i`` (Andriushchenko et
    al. 2020, Sec. 4 / App. D): ``p_init`` halved after iterations 10, 50, 200, 500, 1000, 2000,
    4000, 6000, 8000 of a 10,000-query budget; for another ``n_queries`` the iteration is rescaled
    to ``int(i * 10000 / n_queries)`` first (as in the authors' AutoAttack code)."""
    it = int(i * 10000 / n_queries)
    return p_init / 2 ** sum(it > h for h in _SQUARE_HALVINGS)


def _margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Square Attack's loss to minimise, ``(B,)``: ``z_y - max_{i != y} z_i`` (untargeted) or
    ``max_{i != t} z_i - z_t`` (targeted); success where it is negative."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return z_y - other if not targeted else other - z_y


def _rand_sign(shape: tuple[int, ...], gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=like.device).to(like.dtype) * 2 - 1


def _windows(b: int, h: int, w: int, s: int, gen: torch.Generator,
             like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``s x s`` window per image: a boolean mask ``(b, 1, h, w)`` and the corners ``(b, 2)``."""
    r = torch.randint(0, h - s + 1, (b,), generator=gen, device=like.device)
    c = torch.randint(0, w - s + 1, (b,), generator=gen, device=like.device)
    rows = torch.arange(h, device=like.device)[None, :]
    cols = torch.arange(w, device=like.device)[None, :]
    in_r = (rows >= r[:, None]) & (rows < r[:, None] + s)
    in_c = (cols >= c[:, None]) & (cols < c[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None], torch.stack([r, c], dim=1)


def _centred_squares(s: int, like: torch.Tensor) -> torch.Tensor:
    """The L2 Square Attack's ``s x s`` pattern ``eta`` (Andriushchenko et al. 2020, Alg. 3): on each
    half of the square, nested rectangles around its centre with weights ``1/(r+1)^2`` (ring ``r``),
    the two halves of opposite signs, normalised to unit L2 norm."""
    def half(n: int, m: int) -> torch.Tensor:
        d = torch.zeros(n, m, dtype=like.dtype, device=like.device)
        cr, cc = n // 2, m // 2
        for r in range(max(n, m)):
            d[max(cr - r, 0):min(cr + r + 1, n), max(cc - r, 0):min(cc + r + 1, m)] += 1.0 / (r + 1) ** 2
        return d

    eta = torch.cat([half(s // 2, s), -half(s - s // 2, s)], dim=0)
    return eta / eta.norm()


def _square_eta(b: int, c: int, s: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``(b, c, s, s)``: the centred-squares pattern, transposed for a random half of the images,
    times a random sign per image and channel."""
    eta = _centred_squares(s, like)
    flip = torch.rand(b, generator=gen, device=like.device) < 0.5
    pat = torch.where(flip[:, None, None], eta.t()[None], eta[None])[:, None]
    return pat * _rand_sign((b, c, 1, 1), gen, like)


def _square_init(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    b, c, h, w = x.shape
    if norm == "linf":  # vertical stripes of width 1: +-eps per column and channel
        return (x + eps * _rand_sign((b, c, 1, w), gen, x)).clamp(0.0, 1.0)
    # L2: a grid of (h // 5)-squares, each a centred-squares pattern of random sign, scaled to eps
    s = max(h // 5, 1)
    delta = torch.zeros_like(x)
    start = (h - s * 5) // 2 if h >= 5 else 0
    for i in range(h // s):
        for j in range(w // s):
            r, q = start + i * s, start + j * s
            if r + s > h or q + s > w:
                continue
            delta[:, :, r:r + s, q:q + s] += _square_eta(b, c, s, gen, x)
    return (x + eps * delta / batch_norm(delta).clamp_min(1e-12)).clamp(0.0, 1.0)


def _square_step(x: torch.Tensor, x_best: torch.Tensor, eps: float, norm: str, p: float,
                 gen: torch.Generator) -> torch.Tensor:
    """One random-search proposal per image (Andriushchenko et al. 2020, Alg. 2 for L-inf, Alg. 3 for L2)."""
    b, c, h, w = x.shape
    if norm == "linf":
        s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
        win, _ = _windows(b, h, w, s, gen, x)
        # the window gets x +- eps per channel (a vertex of the ball), the rest stays
        vertex = (x + eps * _rand_sign((b, c, 1, 1), gen, x)).clamp(0.0, 1.0)
        return _project(torch.where(win, vertex, x_best), x, eps, norm)
    s = min(max(int(round(math.sqrt(p * h * w))), 3), h, w)
    if s % 2 == 0 and s < min(h, w):
        s += 1
    delta = x_best - x
    win1, rc1 = _windows(b, h, w, s, gen, x)
    win2, _ = _windows(b, h, w, s, gen, x)
    both = win1 | win2
    # per channel: the mass of the change in W1 u W2 plus the budget left, put into W1 as
    # (old W1 content, normalised) + (new centred-squares pattern), W2 emptied
    left = (eps ** 2 - batch_norm(delta).pow(2)).clamp_min(0.0)  # (b, 1, 1, 1)
    mass = (delta * both).pow(2).sum(dim=(2, 3), keepdim=True)  # (b, c, 1, 1)
    target = (left / c + mass).sqrt()
    idx_r = rc1[:, 0, None] + torch.arange(s, device=x.device)[None]  # (b, s)
    idx_c = rc1[:, 1, None] + torch.arange(s, device=x.device)[None]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    old = delta[bi, ci, idx_r[:, None, :, None], idx_c[:, None, None, :]]  # (b, c, s, s)
    old = old / old.flatten(2).norm(dim=2)[:, :, None, None].clamp_min(1e-12)
    new = old + _square_eta(b, c, s, gen, x)
    new = new / new.flatten(2).norm(dim=2)[:, :, None, None].clamp_min(1e-12) * target
    delta = torch.where(both, torch.zeros_like(delta), delta)
    delta[bi, ci, idx_r[:, None, :, None], idx_c[:, None, None, :]] = new
    return (x + eps * delta / batch_norm(delta).clamp_min(1e-12)).clamp(0.0, 1.0)


@register_attack(
    "square", params=[_EPS, ParamSpec("n_queries", 5000, kind="int", low=1, high=20000, step=100,
                                      help="model queries per image (the budget of the random search)"),
                      ParamSpec("p_init", 0.8, low=0.01, high=1.0, step=0.01,
                                help="initial fraction of the image covered by the square"),
                      _TARGETED, _SEED, _PRECISION],
    paper="Andriushchenko, Croce, Flammarion, Hein. Square Attack: a query-efficient black-box adversarial "
          "attack via random search. ECCV 2020",
    norm="linf", targeted=True, budget="eps", quick={"n_queries": 20},
    description="Square Attack: score-based random search with square updates (no gradients)")
def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None, norm: str = "linf",
           n_queries: int = 5000, p_init: float = 0.8, targeted: bool = False, seed: int | None = 0,
           precision: str = "fp32") -> torch.Tensor:
    """Square Attack (Andriushchenko et al., ECCV 2020, Algorithm 1), L-inf or L2, score-based.

    Random search on the margin loss ``z_y - max_{i != y} z_i`` (:func:`_margin`; targeted:
    ``max_{i != t} z_i - z_t``): a proposal is kept when it lowers the loss; an image stops once
    the loss is negative. L-inf (Alg. 2): vertical-stripes start (``x +- eps`` per column and
    channel); each step sets a random ``s x s`` window to ``x +- eps`` (a random sign per channel).
    L2 (Alg. 3): a start of centred-squares patterns on an ``(H // 5)`` grid scaled to ``eps``;
    each step moves the change of two random windows into the first, adds a new centred-squares
    pattern there and rescales the image's change to ``eps``. The side ``s`` is
    ``round(sqrt(p * H * W))`` (L2: at least 3, odd) with ``p`` from :func:`square_p`
    (``p_init = 0.8``, halved on the paper's schedule rescaled to ``n_queries``). One window per
    image per step (the reference code draws one for the whole batch). Only model outputs are
    used: no gradients. ``n_queries`` counts the start (query 1) and ``n_queries - 1`` proposals.
    Defaults: ``n_queries=5000, p_init=0.8`` (AutoAttack's standard version).

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to scores ``(B, K)``.
        x: images ``(B, C, H, W)`` in ``[0, 1]``.
        y: true labels ``(B,)``; target labels when ``targeted=True``.
        eps: budget (``None``: 8/255 for L-inf, 0.5 for L2).
        norm: ``"linf"`` or ``"l2"``.
        n_queries: queries per image (default 5000).
        p_init: initial square fraction (default 0.8).
        targeted: reach the class ``y``.
        seed: seeds every random draw.
        precision: ``"fp32"`` or ``"bf16"``.

    Returns:
        ``x_adv`` ``(B, C, H, W)``: the lowest-margin point found per image (adversarial where the
        margin went negative); images already misclassified are returned unchanged.
    """
    y = _check_common(model, x, y)
    norm = _norm_name(norm)
    eps = _eps(eps, norm, x)
    n_queries = int(n_queries)
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if not 0.0 < p_init <= 1.0:
        raise ValueError(f"p_init must lie in (0, 1], got {p_init}")
    targeted = bool(targeted)
    xc = working_copy(x)
    gen = generator(seed, x.device)
    out = xc.clone()
    with attack_forward(model, xc, precision) as net, torch.no_grad():
        margin0 = _margin(net(xc), y, targeted)
        idx = (margin0 > 0).nonzero().squeeze(1)
        if idx.numel():
            xs, ys = xc[idx], y[idx]
            x_best = _square_init(xs, eps, norm, gen)
            m_best = _margin(net(x_best), ys, targeted)
            for i in range(n_queries - 1):
                active = (m_best > 0).nonzero().squeeze(1)
                if active.numel() == 0:
                    break
                xa = xs[active]
                cand = _square_step(xa, x_best[active], eps, norm, square_p(i, n_queries, p_init), gen)
                m_new = _margin(net(cand), ys[active], targeted)
                better = m_new < m_best[active]
                x_best[active[better]] = cand[better]
                m_best[active[better]] = m_new[better]
            out[idx] = x_best
    return to_input_dtype(out, x, eps=eps, norm=norm)


# ---------------------------------------------------------------------------------------------
# FAB
# ---------------------------------------------------------------------------------------------


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
        adv = torch.where(_bview(closer, x0), x1, adv)
        best = torch.where(closer, dist, best)
        # backward step towards x0 after a success (the paper's beta)
        x1 = torch.where(_bview(is_adv, x0), x0 + beta * (x1 - x0), x1)
    return adv, best


@register_attack(
    "fab", params=[_EPS, _N_ITER, _TARGETS, _RESTARTS, _SEED, _PRECISION],
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
    _untargeted_only("fab", targeted)
    y = _check_common(model, x, y)
    norm = _norm_name(norm)
    eps = _eps(eps, norm, x)
    n_iter, n_restarts, n_t = int(n_iter), int(n_restarts), int(n_target_classes)
    if n_iter < 1 or n_restarts < 1 or n_t < 1:
        raise ValueError(f"n_iter, n_restarts and n_target_classes must be >= 1, got {n_iter}, {n_restarts}, {n_t}")
    if not 0.0 <= alpha_max <= 1.0 or eta < 1.0 or not 0.0 < beta <= 1.0:
        raise ValueError(f"need alpha_max in [0, 1], eta >= 1, beta in (0, 1]; got {alpha_max}, {eta}, {beta}")
    xc = working_copy(x)
    gen = generator(seed, x.device)
    out = xc.clone()
    with attack_forward(model, xc, precision) as net:
        logits0 = _clean_logits(net, xc)
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
                    radius = _bview(torch.minimum(best[idx], torch.full_like(best[idx], eps)), x0)
                    u = (torch.empty_like(x0).uniform_(-1, 1, generator=gen) if norm == "linf"
                         else torch.empty_like(x0).normal_(generator=gen))
                    start = (x0 + 0.5 * radius * u / _bview(_dist(u, norm), x0).clamp_min(1e-12)).clamp(0.0, 1.0)
                adv, dist = _fab_run(net, x0, y[idx], order[idx, k], norm=norm, eps=eps, n_iter=n_iter,
                                     alpha_max=alpha_max, eta=eta, beta=beta, start=start)
                closer = dist < best[idx]
                best[idx[closer]] = dist[closer]
                inside = closer & (dist <= eps)
                out[idx[inside]] = adv[inside]
                todo[idx[inside]] = False
    return to_input_dtype(out, x, eps=eps, norm=norm)
