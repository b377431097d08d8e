"""The two-stream paper's attacks on the detector (paper 003, Table 1 and Fig. 4) and advviz's adaptive one.

*Type I* attacks target the high-resolution network on the upsampled image
(:func:`attack_type_i`); *type II* attacks target the low-resolution network, on a
high-resolution image through the Fig. 4 pipeline (:func:`fig4_attack`: downscale, attack the
low network, upscale the difference, add it). The *type III* attack (:func:`attack_type_iii`,
advviz's adaptive attack; the paper has none) differentiates through both streams and Algorithm
1's agreement rule at once. The detector itself is :mod:`advviz.defenses.twostream`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advviz import attacks
from advviz._modules import model_guard
from advviz.attacks import universal_perturbation
from advviz.attacks._core import (
    check_budget,
    check_labels,
    generator,
    model_dtype,
    project_linf,
    to_input_dtype,
    working_copy,
)
from advviz.defenses.twostream import TwoStream, compare, resize

__all__ = ["TYPE_I", "TYPE_II", "TYPE_III", "attack_type_i", "attack_type_ii", "attack_type_iii", "fig4_attack"]


TYPE_I = ("fgsm", "bim", "mifgsm", "deepfool", "universal")
TYPE_II = ("fgsm", "bim", "one_pixel", "three_pixel", "cw_l2")
TYPE_III = ("joint_pgd",)


def _run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: Mapping[str, Any],
                seed: int, batch: int) -> torch.Tensor:
    kw = dict(cfg)
    if name == "three_pixel":
        name, kw = "one_pixel", {**kw, "pixels": 3}
    spec = attacks.get(name)
    if "seed" in inspect.signature(spec.fn).parameters:
        kw.setdefault("seed", seed)
    if name == "universal":  # one perturbation for the whole set, not per batch
        return spec.fn(model, x, y, **kw)
    return torch.cat([spec.fn(model, x[s:s + batch], y[s:s + batch], **kw) for s in range(0, x.shape[0], batch)])


def attack_type_i(ts: TwoStream, name: str, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
                  batch: int = 128, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
                  **cfg: Any) -> torch.Tensor:
    """Type I attack: attack the high stream on ``x`` upsampled to its input size.

    Args:
        ts: the detector.
        name: an attack of :data:`TYPE_I` (any registered attack works).
        x: ``(B, C, H, W)`` images in [0, 1] (e.g. 32x32 CIFAR-10; upsampled first, as the paper
            resizes CIFAR-10 to 299x299 before a type I attack).
        y: ``(B,)`` labels in the *high stream's* label space.
        seed: attack seed.
        fit: ``universal`` only: ``(x_fit, y_fit)``, other images (same layout as ``x``, ``y``)
            on which the universal perturbation is computed before it is added to ``x``, as
            Moosavi-Dezfooli et al. fit it on training images and evaluate it on unseen ones.
            ``None``: fitted on ``x`` itself (the registered attack's behaviour).
        **cfg: the attack's keyword options.

    Returns:
        the adversarial image at the high stream's resolution, ``(B, C, *ts.high_size)`` in [0, 1].

    Raises:
        ValueError: ``fit`` given for another attack than ``universal``.
    """
    if fit is not None:
        if name != "universal":
            raise ValueError(f"fit=(x_fit, y_fit) is for the universal perturbation only, not {name!r}")

        kw = dict(cfg)
        kw.setdefault("seed", seed)
        v = universal_perturbation(ts.high, ts.high_input(fit[0]), fit[1].to(x.device), **kw)
        return (ts.high_input(x) + v).clamp(0.0, 1.0).detach()
    return _run_attack(name, ts.high, ts.high_input(x), y, cfg, seed, batch)


def fig4_attack(low: nn.Module, x: torch.Tensor, y: torch.Tensor,
                attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor], *,
                low_size: int | tuple[int, int] = 32) -> torch.Tensor:
    """Fig. 4: a type II attack on a high-resolution image.

    ``x_low = resize(x, low_size)`` (area); ``x_low_adv = attack(low, x_low, y)``;
    ``d = x_low_adv - x_low``; ``x_adv = clip(x + upsample(d, x's size), 0, 1)`` (bilinear).
    When ``x`` is already at ``low_size`` this is the attack itself.

    Args:
        low: the low-resolution network.
        x: ``(B, C, H, W)`` images in [0, 1].
        y: ``(B,)`` labels of the low network.
        attack: ``(model, x, y) -> x_adv``.
        low_size: the low network's input size.

    Returns:
        ``(B, C, H, W)`` in [0, 1].
    """
    x_low = resize(x, low_size)
    d = attack(low, x_low, y) - x_low
    if tuple(d.shape[-2:]) != tuple(x.shape[-2:]):
        d = F.interpolate(d, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return (x + d).clamp(0.0, 1.0).detach()


def attack_type_ii(ts: TwoStream, name: str, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
                   batch: int = 128, **cfg: Any) -> torch.Tensor:
    """Type II attack: attack the low stream through :func:`fig4_attack` at ``x``'s resolution.

    ``name`` is one of :data:`TYPE_II` (``three_pixel`` is ``one_pixel`` with 3 pixels); ``y``
    are the low stream's labels. Returns ``(B, C, H, W)`` at ``x``'s size, in [0, 1].
    """
    return fig4_attack(ts.low, x, y, lambda m, xl, yl: _run_attack(name, m, xl, yl, cfg, seed, batch),
                       low_size=ts.low_size)


def _common_log_probs(logits: torch.Tensor, mapping: torch.Tensor, n_common: int) -> torch.Tensor:
    """``(B, n_common)``: per common label ``c``, the largest log-softmax over the stream's classes mapped
    to ``c`` (``-inf`` where none is): the entry Algorithm 1 would pair for ``c``."""
    logp = logits.float().log_softmax(1)
    out = logp.new_full((logp.shape[0], n_common), float("-inf"))
    for c in range(n_common):
        cols = (mapping == c).nonzero().flatten()
        if len(cols):
            out[:, c] = logp[:, cols].max(1).values
    return out


def attack_type_iii(ts: TwoStream, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
                    alpha: float = 1 / 255, steps: int = 10, seed: int | None = 0, random_start: bool = False,
                    batch: int = 128) -> torch.Tensor:
    """Type III (adaptive) attack: L-inf PGD through both streams and Algorithm 1's agreement rule.

    Type I attacks fool only the high stream, type II only the low one, so the streams disagree and
    Algorithm 1 rejects; an attacker who knows the detector attacks both at once and makes them
    *agree on a wrong label* (Athalye et al. 2018; Tramer et al. 2020: attack the whole defense).
    With ``log P_s(c)`` the stream's log-softmax of common label ``c`` (the largest over the
    stream's classes that map to ``c``, the entry Algorithm 1 pairs), each step

    1. picks the target ``t = argmax_{c != y} [log P_high(c) + log P_low(c)]``: the wrong label the
       two streams jointly rank highest at the current iterate (re-chosen every step);
    2. descends ``L(x') = -log P_high(t | up(x')) - log P_low(t | down(x'))``, i.e. ascends
       ``log(P_high(t) * P_low(t))``, the log of Algorithm 1's score of the pair ``(t, t)``:
       ``x' <- clip_{x, eps}(x' - alpha * sign(grad L))``. The gradient passes through the
       resizing of each stream (:meth:`TwoStream.high_input` / :meth:`~TwoStream.low_input`,
       bilinear and area interpolation are differentiable).

    Raising both probabilities of ``t`` satisfies the thresholds ``P_high >= p1``,
    ``P_low >= p2`` and, once ``t`` leads both top lists, makes ``(t, t)`` the pair of largest
    product, so Algorithm 1 answers ``t``. The rule itself (top-k, thresholds, argmax) is
    piecewise constant, so it is not differentiated: it is checked at the start and after every
    step, and each image keeps the first iterate Algorithm 1 accepts with a wrong label (the last
    iterate if none), so success is judged by the detector itself, not by the surrogate loss.

    Args:
        ts: the detector.
        x: ``(B, C, H, W)`` images in ``[0, 1]`` (not modified); the budget is on this resolution
            (as the type II attacks', :func:`fig4_attack`).
        y: ``(B,)`` true labels in the common label space.
        eps: L-inf budget on the ``[0, 1]`` scale (default 8/255, the type II budget).
        alpha: step size (default 1/255, the type II BIM's).
        steps: iterations (default 10, the type II BIM's).
        seed: seeds the random start.
        random_start: start from a uniform point of the eps ball (default ``False``, as BIM).
        batch: images per batch.

    Returns:
        ``(B, C, H, W)`` adversarial images in ``[0, 1]`` within ``eps`` of ``x``, ``x``'s dtype
        and device.
    """
    eps = check_budget("eps", eps)
    alpha = check_budget("alpha", alpha)
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    y = check_labels(y, x)
    dev = x.device
    high_map = ts.mapping.to(dev)
    low_map = (torch.arange(_n_out(ts.low, x[:1].to(model_dtype(ts.low) or torch.float32), ts.low_input), device=dev)
               if ts.low_mapping is None
               else ts.low_mapping.to(dev))
    n_common = int(max(int(high_map.max()), int(low_map.max()))) + 1
    gen = generator(seed, dev)
    # the streams' own dtype (float32 unless a stream is float64); half precision is computed in float32
    dt_high, dt_low = model_dtype(ts.high) or torch.float32, model_dtype(ts.low) or torch.float32
    work = torch.float64 if torch.float64 in (dt_high, dt_low) else torch.float32
    out = []
    with model_guard(ts.high), model_guard(ts.low):
        for s in range(0, x.shape[0], batch):
            xb, yb = working_copy(x[s:s + batch]).to(work), y[s:s + batch]
            xa = xb.clone()
            if random_start:
                xa = (xa + (torch.rand(xa.shape, generator=gen, device=dev, dtype=xa.dtype) * 2 - 1) * eps).clamp(0, 1)
            best = xa.clone()
            done = _accepted_wrong(ts, xa, yb, dt_high, dt_low)  # already accepted with a wrong label: keep it
            for _ in range(int(steps) if not bool(done.all()) else 0):
                with torch.enable_grad():
                    xi = xa.detach().requires_grad_(True)
                    lh = _common_log_probs(ts.high(ts.high_input(xi).to(dt_high)), high_map, n_common)
                    ll = _common_log_probs(ts.low(ts.low_input(xi).to(dt_low)), low_map, n_common)
                    joint = (lh + ll).detach().clone()
                    joint[torch.arange(len(yb), device=dev), yb] = float("-inf")
                    t = joint.argmax(1)
                    rows = torch.arange(len(yb), device=dev)
                    loss = -(lh[rows, t] + ll[rows, t]).sum()
                    (g,) = torch.autograd.grad(loss, xi)
                xa = project_linf(xa - alpha * g.sign(), xb, eps).clamp(0.0, 1.0).detach()
                ok = _accepted_wrong(ts, xa, yb, dt_high, dt_low)
                newly = ok & ~done
                best[newly] = xa[newly]
                done |= ok
                if bool(done.all()):
                    break
            best[~done] = xa[~done]
            out.append(best)
    return to_input_dtype(torch.cat(out) if out else working_copy(x), x, eps=eps)


def _accepted_wrong(ts: TwoStream, x: torch.Tensor, y: torch.Tensor, dt_high: torch.dtype,
                    dt_low: torch.dtype) -> torch.Tensor:
    """``(B,)`` bool: Algorithm 1 accepts ``x`` with a label other than ``y``."""
    with torch.no_grad():
        p_high = ts.high(ts.high_input(x).to(dt_high)).float().softmax(1)
        p_low = ts.low(ts.low_input(x).to(dt_low)).float().softmax(1)
    res = compare(p_high, p_low, ts.mapping.to(x.device), None if ts.low_mapping is None else ts.low_mapping.to(x.device),
                  p1=ts.p1, p2=ts.p2, k_high=ts.k_high, k_low=ts.k_low)
    return ~res.reject & (res.labels != y)


def _n_out(model: nn.Module, x1: torch.Tensor, prep: Callable[[torch.Tensor], torch.Tensor]) -> int:
    with torch.no_grad():
        with model_guard(model, freeze=False):
            return int(model(prep(x1)).shape[1])


