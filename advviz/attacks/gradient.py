"""Gradient-sign and projected-gradient attacks: FGSM, BIM, MI-FGSM, DI²-FGSM, PGD (L-inf and L2).

All of them are built from one step (:func:`gradient_step`): take the input gradient of the
cross-entropy, turn it into a direction (its sign for L-infinity, its L2-normalised value for
L2), optionally through momentum (MI-FGSM) and a random input transform (DI²-FGSM), move by
``alpha``, project back onto the budget ball around ``x`` and onto ``[0, 1]``. The attacks only
differ in their defaults: FGSM is one step of size ``eps`` from ``x``; BIM iterates small steps;
PGD starts at a random point of the ball; MI-FGSM accumulates an L1-normalised gradient.

Common to every attack here:

* ``x``: images ``(B, C, H, W)`` float in ``[0, 1]``; ``y``: labels ``(B,)`` (true labels, or
  target labels when ``targeted=True``, in which case the cross-entropy to ``y`` is descended).
* budgets ``eps``/``alpha`` are on the ``[0, 1]`` scale (L-infinity values above 1 raise and say
  to divide by 255; an L2 radius above ``sqrt(C*H*W)``, the diameter of the image cube, raises
  likewise).
* ``mask``: optional ``(B, 1, H, W)`` or ``(B, C, H, W)`` in ``[0, 1]`` that multiplies the
  perturbation: the attack optimises ``delta`` inside the budget ball and the image is
  ``clip(x + mask * delta, 0, 1)`` (gradients w.r.t. ``delta`` are ``mask * grad``). A binary
  mask confines the change to a region; a soft mask also scales it down (``|x_adv - x| <= mask *
  eps`` in L-infinity).
* ``seed``: seeds every random draw (random start, input diversity) on ``x``'s device.
* ``precision``: ``"fp32"`` (default, exact) or ``"bf16"`` (bfloat16 autocast of the model's
  forward: about 2x faster on recent CPUs, different rounding; an opt-in).
* The model runs in eval mode on a cached BatchNorm-folded copy (:mod:`advviz.attacks._fast`);
  ``model.training``, ``requires_grad`` and ``.grad`` of its parameters are left as they were.
* ``best`` (every attack here but FGSM, whose one step leaves nothing to choose from): which
  iterate to return. ``False`` (the default) returns the last one, the method as its paper
  defines it. ``True`` returns, per image, the first iterate the model misclassifies (targeted:
  classifies as ``y``), else the one with the highest loss, among the random start (PGD) and
  the iterates after each step; the iterates themselves are the same. ``True`` never fools fewer
  points of the attacked model (up to the float rounding of its fast copy) and costs one forward
  pass more (one per step with input diversity). The default stays ``False`` because the last
  iterate is what these are defined with by their papers and by what is built on them here:
  the papers' seeded tables; the training pairs that recipes build with PGD/BIM (pix2pix, UDDN,
  adversarial training, whose inner maximisation wants the high-loss end point, not the first
  point past the boundary); the transfer attacks (MI-/DI²-FGSM, whose papers measure the
  transfer of the last iterate); and :func:`advviz.attacks.record`, whose result is its last
  frame. Robustness evaluation (:mod:`advviz.evaluate`, where a point counts as broken if any
  iterate broke it) passes ``best=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from advviz._registry import ParamSpec
from advviz.attacks._api import register_attack
from advviz.attacks._core import (
    PRECISION_PARAM,
    SEED_PARAM,
    TARGETED_PARAM,
    attack_forward,
    batch_norm,
    check_attack_inputs,
    check_mask,
    check_norm_budget,
    generator,
    input_grad,
    loss_ce,
    per_image,
    to_input_dtype,
    working_copy,
)
from advviz.attacks.trajectory import current_recorder

__all__ = [
    "attack_forward",
    "bim",
    "check_mask",
    "check_norm_budget",
    "difgsm",
    "fgsm",
    "gradient_step",
    "input_diversity",
    "mdi2fgsm",
    "mifgsm",
    "pgd",
    "pgd_l2",
]

log = logging.getLogger(__name__)

Norm = Literal["linf", "l2"]

_EPS = ParamSpec("eps", 8 / 255, low=0.0, high=32 / 255, step=1 / 255, per255=True,
                 help="L-infinity budget: max change per pixel value, on the [0, 1] scale")
_ALPHA = ParamSpec("alpha", 2 / 255, low=0.0, high=16 / 255, step=0.5 / 255, per255=True,
                   help="step size per iteration, on the [0, 1] scale")
_STEPS = ParamSpec("steps", 10, kind="int", low=1, high=200, step=1, help="number of iterations")
_L2_EPS = ParamSpec("eps", 0.5, low=0.0, high=5.0, step=0.05,
                    help="L2 budget: max per-image L2 norm of the change, on the [0, 1] scale")
_L2_ALPHA = ParamSpec("alpha", 0.1, low=0.0, high=2.0, step=0.01, help="L2 step size per iteration")
_BEST = ParamSpec("best", False, kind="bool",
                  help="return per image the first iterate that fools the model (else the highest-loss one), "
                       "not the last")


# ---------------------------------------------------------------------------------------------
# the one-step core
# ---------------------------------------------------------------------------------------------


def input_diversity(x: torch.Tensor, *, prob: float, resize_rate: float, gen: torch.Generator) -> torch.Tensor:
    """DI²-FGSM's random transform (Xie et al. 2019, Sec. 3.1): with probability ``prob``, resize the
    batch to a random size ``r`` in ``[floor(H * resize_rate), H)`` (bilinear) and zero-pad it back
    to ``H x W`` at a random offset; otherwise return ``x``. One draw per call (per iteration), as
    in the paper. The output keeps ``x``'s size, so fixed-size models (LeNet) accept it. Differentiable."""
    h, w = x.shape[-2:]
    lo_h, lo_w = max(1, int(h * resize_rate)), max(1, int(w * resize_rate))
    # every draw is made unconditionally so that the random stream does not depend on the branch
    apply = bool(torch.rand((), generator=gen, device=gen.device) < prob)
    u = torch.rand(3, generator=gen, device=gen.device).tolist()
    if not apply or lo_h >= h or lo_w >= w:
        return x
    rh = lo_h + min(int(u[0] * (h - lo_h)), h - lo_h - 1)
    rw = max(1, min(w - 1, round(rh * w / h)))
    out = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
    top = min(int(u[1] * (h - rh + 1)), h - rh)
    left = min(int(u[2] * (w - rw + 1)), w - rw)
    return F.pad(out, (left, w - rw - left, top, h - rh - top), value=0.0)


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / (batch_norm(g) + 1e-10)


def _project_delta(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return torch.clamp(delta, min=-eps, max=eps)
    factor = torch.clamp(eps / batch_norm(delta), max=1.0)  # a zero delta gives inf -> 1
    return delta * factor


def gradient_step(x: torch.Tensor, x_adv: torch.Tensor, grad: torch.Tensor, *, alpha: float, eps: float,
                  norm: str = "linf", mask: torch.Tensor | None = None,
                  delta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One projected step (FGSM's update, the core of every iterative attack here).

    Without a mask: ``x_adv <- clip(x + P(x_adv + alpha * d(grad) - x), 0, 1)`` with ``d`` the sign
    (L-inf) or L2 normalisation and ``P`` the projection onto the ``eps`` ball (Madry et al. 2018,
    eq. 2; the same order of operations as torchattacks, so results match it to the last bit).
    With a mask ``M``: the variable is ``delta`` (``x_adv = clip(x + M * delta, 0, 1)``):
    ``delta <- P(delta + alpha * d(M * grad))``; where clipping to [0, 1] bit, ``delta`` is set to
    the change actually made, divided by ``M`` (as the unmasked update does implicitly).

    Args:
        x: clean images ``(B, C, H, W)``.
        x_adv: current iterate.
        grad: ascent direction's raw gradient at ``x_adv`` (w.r.t. the image).
        alpha: step size; eps: budget radius; norm: ``"linf"`` or ``"l2"``.
        mask: optional perturbation mask; delta: the masked state (required with a mask).

    Returns:
        ``(x_adv, delta)`` (``delta`` is ``None`` without a mask).
    """
    if mask is None:
        x_new = x_adv + alpha * _direction(grad, norm)
        d = _project_delta(x_new - x, eps, norm)
        return torch.clamp(x + d, min=0.0, max=1.0), None
    assert delta is not None
    delta = _project_delta(delta + alpha * _direction(mask * grad, norm), eps, norm)
    return _masked_image(x, delta, mask)


def _masked_image(x: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    raw = x + mask * delta
    x_adv = torch.clamp(raw, 0.0, 1.0)
    clipped = (raw != x_adv) & (mask > 0)
    delta = torch.where(clipped, (x_adv - x) / mask.clamp_min(1e-12), delta)
    return x_adv, delta


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """A random point of the ``eps`` ball: uniform per pixel (L-inf); for L2 a Gaussian direction
    scaled to a radius ``eps * U(0, 1)`` (the draws and their order as torchattacks' PGD/PGDL2)."""
    if norm == "linf":
        return torch.empty_like(x).uniform_(-eps, eps, generator=gen)
    delta = torch.empty_like(x).normal_(generator=gen)
    n = batch_norm(delta)
    r = torch.zeros_like(n).uniform_(0, 1, generator=gen)
    return delta * (r / n * eps)


class _BestIterate:
    """``best=True``'s choice among the iterates offered in order: per image, the first one that
    succeeds (misclassified; targeted: classified as ``y``), else the one with the highest loss."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, targeted: bool,
                 loss: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.x, self.y, self.targeted, self.loss_fn = x.clone(), y, targeted, loss
        self.loss = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
        self.found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def offer(self, x_it: torch.Tensor, logits: torch.Tensor) -> None:
        """Consider the iterate ``x_it`` ``(B, C, H, W)``, whose logits are ``(B, K)``."""
        pred = logits.argmax(dim=1)
        success = pred == self.y if self.targeted else pred != self.y
        loss = self.loss_fn(logits).to(self.loss.dtype)
        take = ~self.found & (success | (loss > self.loss))
        self.x = torch.where(per_image(take, x_it), x_it, self.x)
        self.loss = torch.where(take, loss, self.loss)
        self.found |= success


def _iterate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
             norm: str, random_start: bool, decay: float, diversity_prob: float, resize_rate: float,
             mask: torch.Tensor | None, targeted: bool, seed: int | None, precision: str,
             best: bool = False) -> torch.Tensor:
    """The shared loop: optional random start, ``steps`` x (gradient [through DI], momentum, step).

    Returns the last iterate, or with ``best`` the best one (:class:`_BestIterate`) among the
    random start (if any) and the iterates after each step; the iterates are the same either way."""
    y = check_attack_inputs(model, x, y)
    eps = check_norm_budget("eps", eps, norm, x)
    alpha = check_norm_budget("alpha", alpha, norm, x)
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if decay < 0:
        raise ValueError(f"momentum decay must be >= 0, got {decay}")
    if not 0.0 <= diversity_prob <= 1.0:
        raise ValueError(f"diversity probability p must lie in [0, 1], got {diversity_prob}")
    if not 0.0 < resize_rate <= 1.0:
        raise ValueError(f"resize_rate must lie in (0, 1], got {resize_rate}")
    xc = working_copy(x)
    mask = check_mask(mask, xc)
    gen = generator(seed, x.device)
    loss = loss_ce(y, targeted)
    delta: torch.Tensor | None = None
    if random_start:
        d0 = _random_start(xc, eps, norm, gen)
        if mask is None:
            x_adv = torch.clamp(xc + d0, 0.0, 1.0)
        else:
            x_adv, delta = _masked_image(xc, d0, mask)
    else:
        x_adv = xc.clone()
        delta = None if mask is None else torch.zeros_like(xc)
    momentum = torch.zeros_like(xc) if decay > 0 else None
    chosen = _BestIterate(xc, y, targeted, loss) if best else None
    recorder = current_recorder()  # None unless advviz.attacks.record() is following this attack
    with attack_forward(model, xc, precision) as net:
        fwd: Callable[[torch.Tensor], torch.Tensor] = net
        if diversity_prob > 0:
            def fwd(inp: torch.Tensor, _net: Callable[[torch.Tensor], torch.Tensor] = net) -> torch.Tensor:
                return _net(input_diversity(inp, prob=diversity_prob, resize_rate=resize_rate, gen=gen))
        for t in range(steps):
            g, logits = input_grad(fwd, x_adv, loss)
            if chosen is not None and (t > 0 or random_start):  # x itself is no candidate
                if diversity_prob > 0:  # those logits are of the transformed input: judge x_adv itself
                    with torch.no_grad():
                        logits = net(x_adv)
                chosen.offer(x_adv, logits)
            if momentum is not None:
                gm = g if mask is None else mask * g
                # L1 normalisation (Dong et al. eq. 6) up to the constant 1/(C*H*W), which leaves the
                # sign unchanged: mean |g| as in the reference implementations
                g = gm / gm.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30) + decay * momentum
                momentum = g
            x_adv, delta = gradient_step(xc, x_adv, g, alpha=alpha, eps=eps, norm=norm, mask=mask, delta=delta)
            if recorder is not None:
                recorder(x_adv)
        if chosen is not None:
            with torch.no_grad():
                chosen.offer(x_adv, net(x_adv))
            x_adv = chosen.x
    return to_input_dtype(x_adv, x, eps=eps, norm=norm)


# ---------------------------------------------------------------------------------------------
# the attacks
# ---------------------------------------------------------------------------------------------


@register_attack(
    "fgsm", recordable=True, params=[_EPS, TARGETED_PARAM, SEED_PARAM],
    paper="Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015",
    norm="linf", targeted=True, budget="eps", quick={},
    description="Fast Gradient Sign Method: one step of size eps along the sign of the loss gradient")
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255, targeted: bool = False,
         mask: torch.Tensor | None = None, seed: int | None = 0, precision: str = "fp32") -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al., ICLR 2015, eq. 3), L-infinity.

    ``x_adv = clip(x + eps * sign(grad_x J(x, y)), 0, 1)`` (targeted: ``- eps * sign(grad J(x, t))``).

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)``, float in ``[0, 1]`` (not modified).
        y: labels ``(B,)``; target labels when ``targeted=True``.
        eps: L-infinity budget on the [0, 1] scale (default 8/255).
        targeted: move towards ``y`` instead of away from it.
        mask: optional ``(B, 1, H, W)`` / ``(B, C, H, W)`` in [0, 1] multiplying the perturbation.
        seed: unused (FGSM is deterministic); accepted for a uniform interface.
        precision: ``"fp32"`` or ``"bf16"`` (autocast opt-in).

    Returns:
        ``x_adv`` ``(B, C, H, W)`` in ``[0, 1]``, detached, ``|x_adv - x| <= eps``.
    """
    return _iterate(model, x, y, eps=eps, alpha=eps, steps=1, norm="linf", random_start=False, decay=0.0,
                    diversity_prob=0.0, resize_rate=1.0, mask=mask, targeted=targeted, seed=seed,
                    precision=precision)


@register_attack(
    "bim", recordable=True, params=[_EPS, ParamSpec("alpha", 1 / 255, low=0.0, high=16 / 255, step=0.5 / 255, per255=True,
                                   help="step size per iteration, on the [0, 1] scale"),
                   _STEPS, TARGETED_PARAM, SEED_PARAM, _BEST],
    paper="Kurakin, Goodfellow, Bengio. Adversarial Examples in the Physical World. ICLR Workshop 2017",
    norm="linf", targeted=True, budget="eps", quick={"steps": 3},
    description="Basic Iterative Method (I-FGSM): repeated small FGSM steps clipped to the eps ball")
def bim(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255, alpha: float = 1 / 255,
        steps: int = 10, targeted: bool = False, mask: torch.Tensor | None = None, seed: int | None = 0,
        precision: str = "fp32", best: bool = False) -> torch.Tensor:
    """Basic Iterative Method / I-FGSM (Kurakin et al. 2017, eq. 1), L-infinity.

    ``x_0 = x``; ``x_{n+1} = Clip_{x, eps}(x_n + alpha * sign(grad J(x_n, y)))``. The paper uses
    ``alpha = 1/255`` and ``min(eps*255 + 4, 1.25 * eps*255)`` steps; the default here is 10.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits.
        x: images ``(B, C, H, W)`` in ``[0, 1]``.
        y: labels ``(B,)`` (targets when ``targeted``).
        eps: L-infinity budget (default 8/255).
        alpha: step size (default 1/255).
        steps: iterations (default 10).
        targeted: descend the cross-entropy to ``y``.
        mask: optional perturbation mask in [0, 1].
        seed: unused (deterministic); accepted for a uniform interface.
        precision: ``"fp32"`` or ``"bf16"``.
        best: return, per image, the first iterate that succeeds, else the highest-loss one
            (default ``False``: the last iterate; the module docstring says why).

    Returns:
        ``x_adv`` ``(B, C, H, W)`` in ``[0, 1]`` with ``|x_adv - x| <= eps``.
    """
    return _iterate(model, x, y, eps=eps, alpha=alpha, steps=steps, norm="linf", random_start=False, decay=0.0,
                    diversity_prob=0.0, resize_rate=1.0, mask=mask, targeted=targeted, seed=seed,
                    precision=precision, best=best)


_DECAY = ParamSpec("decay", 1.0, low=0.0, high=2.0, step=0.05, help="momentum decay factor mu")


@register_attack(
    "mifgsm", recordable=True, params=[_EPS, _ALPHA, _STEPS, _DECAY, TARGETED_PARAM, SEED_PARAM, _BEST],
    paper="Dong et al. Boosting Adversarial Attacks with Momentum. CVPR 2018",
    norm="linf", targeted=True, budget="eps", quick={"steps": 3},
    description="Momentum Iterative FGSM: sign steps along an accumulated L1-normalised gradient")
def mifgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255, alpha: float = 2 / 255,
           steps: int = 10, decay: float = 1.0, targeted: bool = False, mask: torch.Tensor | None = None,
           seed: int | None = 0, precision: str = "fp32", best: bool = False) -> torch.Tensor:
    """Momentum Iterative FGSM (Dong et al., CVPR 2018, Algorithm 1, eqs. 6-7), L-infinity.

    ``g_{t+1} = mu * g_t + grad J(x_t) / ||grad J(x_t)||_1``;
    ``x_{t+1} = Clip_{x, eps}(x_t + alpha * sign(g_{t+1}))``. The paper uses ``alpha = eps / T``;
    the defaults here (eps 8/255, alpha 2/255, 10 steps, mu 1.0) follow torchattacks.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits.
        x: images ``(B, C, H, W)`` in ``[0, 1]``.
        y: labels ``(B,)`` (targets when ``targeted``).
        eps: L-infinity budget (default 8/255).
        alpha: step size (default 2/255).
        steps: iterations T (default 10).
        decay: momentum decay mu (default 1.0).
        targeted: descend the cross-entropy to ``y``.
        mask: optional perturbation mask in [0, 1].
        seed: unused (deterministic); accepted for a uniform interface.
        precision: ``"fp32"`` or ``"bf16"``.
        best: return, per image, the first iterate that succeeds, else the highest-loss one
            (default ``False``: the last iterate; the module docstring says why).

    Returns:
        ``x_adv`` ``(B, C, H, W)`` in ``[0, 1]`` with ``|x_adv - x| <= eps``.
    """
    return _iterate(model, x, y, eps=eps, alpha=alpha, steps=steps, norm="linf", random_start=False,
                    decay=float(decay), diversity_prob=0.0, resize_rate=1.0, mask=mask, targeted=targeted,
                    seed=seed, precision=precision, best=best)


_P = ParamSpec("p", 0.5, low=0.0, high=1.0, step=0.05, help="probability of the random resize+pad per iteration")
_RESIZE = ParamSpec("resize_rate", 0.9, low=0.5, high=1.0, step=0.01,
                    help="smallest resize, as a fraction of the image size")


@register_attack(
    "difgsm", recordable=True, params=[_EPS, _ALPHA, _STEPS, _P, _RESIZE,
                      ParamSpec("momentum", 0.0, low=0.0, high=2.0, step=0.05,
                                help="momentum decay: 0 gives DI²-FGSM, 1.0 gives M-DI²-FGSM"),
                      TARGETED_PARAM, SEED_PARAM, _BEST],
    paper="Xie et al. Improving Transferability of Adversarial Examples with Input Diversity. CVPR 2019",
    norm="linf", targeted=True, budget="eps", quick={"steps": 3},
    description="Diverse-Inputs I-FGSM: gradients through a random resize+pad, applied with probability p")
def difgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255, alpha: float = 2 / 255,
           steps: int = 10, p: float = 0.5, resize_rate: float = 0.9, momentum: float = 0.0,
           targeted: bool = False, mask: torch.Tensor | None = None, seed: int | None = 0,
           precision: str = "fp32", best: bool = False) -> torch.Tensor:
    """DI²-FGSM / M-DI²-FGSM (Xie et al., CVPR 2019, eqs. 4-6), L-infinity.

    Each iteration takes the gradient of ``J(T(x_n; p), y)`` where ``T`` resizes the image to a
    random ``r x r`` with ``r`` in ``[floor(H * resize_rate), H)`` and zero-pads it back to
    ``H x W`` at a random position, with probability ``p`` (else ``T`` is the identity; :func:`input_diversity`).
    With ``momentum > 0`` the gradient is accumulated as in MI-FGSM (M-DI²-FGSM). The paper
    resizes up and pads to a larger canvas for Inception; here the canvas keeps the input size so
    fixed-size models work.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits.
        x: images ``(B, C, H, W)`` in ``[0, 1]``.
        y: labels ``(B,)`` (targets when ``targeted``).
        eps: L-infinity budget (default 8/255).
        alpha: step size (default 2/255).
        steps: iterations (default 10).
        p: transform probability (default 0.5).
        resize_rate: smallest resize fraction (default 0.9).
        momentum: decay mu (default 0: DI²-FGSM; 1.0: M-DI²-FGSM).
        targeted: descend the cross-entropy to ``y``.
        mask: optional perturbation mask in [0, 1].
        seed: seeds the random transforms.
        precision: ``"fp32"`` or ``"bf16"``.
        best: return, per image, the first iterate that succeeds, else the highest-loss one
            (default ``False``: the last iterate; the module docstring says why).

    Returns:
        ``x_adv`` ``(B, C, H, W)`` in ``[0, 1]`` with ``|x_adv - x| <= eps``.
    """
    return _iterate(model, x, y, eps=eps, alpha=alpha, steps=steps, norm="linf", random_start=False,
                    decay=float(momentum), diversity_prob=float(p), resize_rate=float(resize_rate), mask=mask,
                    targeted=targeted, seed=seed, precision=precision, best=best)


@register_attack(
    "mdi2fgsm", recordable=True, params=[_EPS, _ALPHA, _STEPS, _P, _RESIZE,
                        ParamSpec("momentum", 1.0, low=0.0, high=2.0, step=0.05, help="momentum decay mu"),
                        TARGETED_PARAM, SEED_PARAM, _BEST],
    paper="Xie et al. Improving Transferability of Adversarial Examples with Input Diversity. CVPR 2019",
    norm="linf", targeted=True, budget="eps", quick={"steps": 3},
    description="M-DI²-FGSM: DI²-FGSM with MI-FGSM's momentum (mu = 1.0)")
def mdi2fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255, alpha: float = 2 / 255,
             steps: int = 10, p: float = 0.5, resize_rate: float = 0.9, momentum: float = 1.0,
             targeted: bool = False, mask: torch.Tensor | None = None, seed: int | None = 0,
             precision: str = "fp32", best: bool = False) -> torch.Tensor:
    """M-DI²-FGSM (Xie et al., CVPR 2019): :func:`difgsm` with ``momentum=1.0`` by default.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits.
        x: images ``(B, C, H, W)`` in ``[0, 1]``.
        y: labels ``(B,)`` (targets when ``targeted``).
        eps: L-infinity budget (default 8/255).
        alpha: step size (default 2/255).
        steps: iterations (default 10).
        p: transform probability (default 0.5).
        resize_rate: smallest resize fraction (default 0.9).
        momentum: decay mu (default 1.0).
        targeted: descend the cross-entropy to ``y``.
        mask: optional perturbation mask in [0, 1].
        seed: seeds the random transforms.
        precision: ``"fp32"`` or ``"bf16"``.
        best: return, per image, the first iterate that succeeds, else the highest-loss one
            (default ``False``: the last iterate; the module docstring says why).

    Returns:
        ``x_adv`` ``(B, C, H, W)`` in ``[0, 1]`` with ``|x_adv - x| <= eps``.
    """
    return difgsm(model, x, y, eps=eps, alpha=alpha, steps=steps, p=p, resize_rate=resize_rate,
                  momentum=momentum, targeted=targeted, mask=mask, seed=seed, precision=precision, best=best)


_DEFAULTS = {"linf": (8 / 255, 2 / 255), "l2": (0.5, 0.1)}


@register_attack(
    "pgd", recordable=True, params=[_EPS, _ALPHA, _STEPS, ParamSpec("random_start", True, kind="bool",
                                                   help="start at a uniformly random point of the eps ball"),
                   TARGETED_PARAM, SEED_PARAM, _BEST, PRECISION_PARAM],
    paper="Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018",
    norm="linf", targeted=True, budget="eps", quick={"steps": 3},
    description="Projected Gradient Descent (L-infinity) from a random start")
def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm = "linf", eps: float | None = None,
        alpha: float | None = None, steps: int = 10, random_start: bool = True, targeted: bool = False,
        mask: torch.Tensor | None = None, seed: int | None = 0, precision: str = "fp32",
        best: bool = False) -> torch.Tensor:
    """Projected Gradient Descent (Madry et al., ICLR 2018, eq. 2), L-infinity or L2.

    ``x_{t+1} = Proj_{B(x, eps) ∩ [0,1]}(x_t + alpha * d(grad J(x_t, y)))`` with ``d`` the sign
    (``norm="linf"``) or ``g / ||g||_2`` (``norm="l2"``), from a random start: uniform in the
    L-inf ball, or a Gaussian direction at radius ``eps * U(0, 1)`` in L2.

    Defaults: L-inf ``eps=8/255, alpha=2/255``; L2 ``eps=0.5, alpha=0.1``; ``steps=10``,
    ``random_start=True``.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits.
        x: images ``(B, C, H, W)`` in ``[0, 1]``.
        y: labels ``(B,)`` (targets when ``targeted``).
        norm: ``"linf"`` or ``"l2"``.
        eps: budget radius on the [0, 1] scale (``None``: the norm's default).
        alpha: step size (``None``: the norm's default).
        steps: iterations (default 10).
        random_start: start from a random point of the ball (default ``True``).
        targeted: descend the cross-entropy to ``y``.
        mask: optional perturbation mask in [0, 1].
        seed: seeds the random start.
        precision: ``"fp32"`` or ``"bf16"``.
        best: return, per image, the first iterate that succeeds, else the highest-loss one
            (default ``False``: the last iterate; the module docstring says why).

    Returns:
        ``x_adv`` ``(B, C, H, W)`` in ``[0, 1]`` within ``eps`` of ``x`` in ``norm``.
    """
    if norm not in _DEFAULTS:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    eps = _DEFAULTS[norm][0] if eps is None else eps
    alpha = _DEFAULTS[norm][1] if alpha is None else alpha
    return _iterate(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start,
                    decay=0.0, diversity_prob=0.0, resize_rate=1.0, mask=mask, targeted=targeted, seed=seed,
                    precision=precision, best=best)


@register_attack(
    "pgd_l2", recordable=True, params=[_L2_EPS, _L2_ALPHA, _STEPS, ParamSpec("random_start", True, kind="bool",
                                                          help="start at a random point of the eps ball"),
                      TARGETED_PARAM, SEED_PARAM, _BEST, PRECISION_PARAM],
    paper="Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018",
    norm="l2", targeted=True, budget="eps", quick={"steps": 3},
    description="Projected Gradient Descent (L2) from a random start")
def pgd_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.5, alpha: float = 0.1,
           steps: int = 10, random_start: bool = True, targeted: bool = False, mask: torch.Tensor | None = None,
           seed: int | None = 0, precision: str = "fp32", best: bool = False) -> torch.Tensor:
    """PGD in L2 (Madry et al., ICLR 2018): :func:`pgd` with ``norm="l2"``.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits.
        x: images ``(B, C, H, W)`` in ``[0, 1]``.
        y: labels ``(B,)`` (targets when ``targeted``).
        eps: per-image L2 budget (default 0.5).
        alpha: L2 step size (default 0.1).
        steps: iterations (default 10).
        random_start: random start in the ball (default ``True``).
        targeted: descend the cross-entropy to ``y``.
        mask: optional perturbation mask in [0, 1].
        seed: seeds the random start.
        precision: ``"fp32"`` or ``"bf16"``.
        best: return, per image, the first iterate that succeeds, else the highest-loss one
            (default ``False``: the last iterate; the module docstring says why).

    Returns:
        ``x_adv`` ``(B, C, H, W)`` in ``[0, 1]`` with per-image ``||x_adv - x||_2 <= eps``.
    """
    return pgd(model, x, y, norm="l2", eps=eps, alpha=alpha, steps=steps, random_start=random_start,
               targeted=targeted, mask=mask, seed=seed, precision=precision, best=best)
