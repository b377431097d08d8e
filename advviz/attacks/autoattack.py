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
    check_labels,
    generator,
    input_grad,
    project_l2,
    project_linf,
    to_input_dtype,
    working_copy,
)
from advviz.attacks.gradient import _PRECISION, _SEED, _check_common, attack_forward, check_norm_budget

__all__ = [
    "apgd_ce",
    "apgd_dlr",
    "apgd_t",
    "apgd_checkpoints",
    "dlr_loss",
    "dlr_loss_targeted",
    "fab",
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


def _apgd_run(net: Net, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
              success_fn: Callable[[torch.Tensor], torch.Tensor], *, eps: float, norm: str, n_iter: int,
              rho: float, momentum: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run (Croce & Hein 2020, Algorithm 1) on the batch ``x``.

    Returns ``(x_out, fooled (B,) bool, best loss (B,))``: ``x_out`` is, per sample, the first
    iterate where ``success_fn`` held (if any), else the highest-loss iterate ``x_max``.
    """
    b = x.shape[0]
    checkpoints = set(apgd_checkpoints(n_iter)[1:])
    x_k = _random_start(x, eps, norm, gen)
    g, logits = input_grad(net, x_k, loss_fn)
    loss_k = loss_fn(logits)
    fooled = success_fn(logits)
    x_adv = torch.where(_bview(fooled, x), x_k, x)
    x_max, g_max, f_max = x_k.clone(), g.clone(), loss_k.clone()
    eta = torch.full((b,), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_prev = x_k
    # checkpoint bookkeeping: successful steps since the last checkpoint, eta and f_max there
    n_up = torch.zeros(b, device=x.device)
    last_w, f_max_last = 0, f_max.clone()
    reduced_last = torch.zeros(b, dtype=torch.bool, device=x.device)
    for k in range(n_iter):
        e = _bview(eta, x)
        z = _project(x_k + e * _step_direction(g, norm), x, eps, norm)
        if k == 0:
            x_new = z  # x^(1) = P(x^(0) + eta * d(grad)): no momentum on the first step
        else:
            x_new = _project(x_k + momentum * (z - x_k) + (1 - momentum) * (x_k - x_prev), x, eps, norm)
        x_prev, x_k = x_k, x_new
        g, logits = input_grad(net, x_k, loss_fn)
        loss_new = loss_fn(logits)
        succ = success_fn(logits) & ~fooled
        x_adv = torch.where(_bview(succ, x), x_k, x_adv)
        fooled |= succ
        n_up += (loss_new > loss_k).float()
        loss_k = loss_new
        better = loss_new > f_max
        x_max = torch.where(_bview(better, x), x_k, x_max)
        g_max = torch.where(_bview(better, x), g, g_max)
        f_max = torch.where(better, loss_new, f_max)
        if k + 1 in checkpoints:
            w = k + 1
            cond1 = n_up < rho * (w - last_w)
            cond2 = ~reduced_last & (f_max <= f_max_last)
            halve = cond1 | cond2
            eta = torch.where(halve, eta / 2, eta)
            # restart from x_max (with its gradient and no momentum) where the step was halved
            x_k = torch.where(_bview(halve, x), x_max, x_k)
            x_prev = torch.where(_bview(halve, x), x_max, x_prev)
            g = torch.where(_bview(halve, x), g_max, g)
            loss_k = torch.where(halve, f_max, loss_k)
            reduced_last, f_max_last, last_w = halve, f_max.clone(), w
            n_up.zero_()
        if bool(fooled.all()):
            break
    return torch.where(_bview(fooled, x), x_adv, x_max), fooled, f_max


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
                if loss == "ce":
                    sign = -1.0 if targeted else 1.0
                    loss_fn = lambda z, yi=yi, s=sign: s * F.cross_entropy(z, yi, reduction="none")  # noqa: E731
                elif loss == "dlr":
                    loss_fn = lambda z, yi=yi: dlr_loss(z, yi)  # noqa: E731
                else:
                    ti = target[idx]
                    loss_fn = lambda z, yi=yi, ti=ti: dlr_loss_targeted(z, yi, ti)  # noqa: E731
                if targeted:
                    success_fn = lambda z, yi=yi: z.argmax(dim=1) == yi  # noqa: E731
                else:
                    success_fn = lambda z, yi=yi: z.argmax(dim=1) != yi  # noqa: E731
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
             seed: int | None = 0, precision: str = "fp32") -> torch.Tensor:
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
        seed: seeds the random starts.
        precision: ``"fp32"`` or ``"bf16"``.

    Returns:
        ``x_adv`` ``(B, C, H, W)`` as :func:`apgd_ce`'s.
    """
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
           momentum: float = _ALPHA_MOMENTUM, seed: int | None = 0, precision: str = "fp32") -> torch.Tensor:
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
        seed: seeds the random starts.
        precision: ``"fp32"`` or ``"bf16"``.

    Returns:
        ``x_adv`` ``(B, C, H, W)``: the first misclassified point found, else the highest
        targeted-DLR point over all targets.
    """
    return _apgd(model, x, y, loss="dlr-t", eps=eps, norm=norm, n_iter=n_iter, n_restarts=n_restarts, rho=rho,
                 momentum=momentum, n_target_classes=n_target_classes, targeted=False, seed=seed,
                 precision=precision)
