"""One-pixel attack (Su, Vargas, Sakurai 2019): differential evolution over k pixels, batched.

Su, Vargas, Sakurai, "One Pixel Attack for Fooling Deep Neural Networks", IEEE Transactions on
Evolutionary Computation 23(5), 2019, Section III (DE/rand/1, F = 0.5, no crossover, parent vs
child selection).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advviz._registry import ParamSpec, check_params
from advviz.attacks._api import register_attack
from advviz.attacks._core import attack_forward, check_images, check_labels, generator, to_input_dtype, working_copy

__all__ = ["one_pixel"]

_PARAMS = (
    ParamSpec("pixels", 1, kind="int", low=1, high=64, step=1,
              help="number of pixel locations changed (the papers use 1, 3 and 5)"),
    ParamSpec("population", 400, kind="int", low=4, high=2000, step=10,
              help="candidate solutions per image (400 in the paper)"),
    ParamSpec("max_iter", 100, kind="int", low=0, high=1000, step=10,
              help="differential-evolution generations (100 in the paper)"),
    ParamSpec("f", 0.5, kind="float", low=0.0, high=2.0, step=0.05, help="DE scale factor F (0.5)"),
    ParamSpec("targeted", False, kind="bool", help="y holds target labels"),
    ParamSpec("batch_size", 2048, kind="int", low=1, high=1 << 16,
              help="candidate images per forward pass"),
    ParamSpec("seed", None, kind="int", low=0, help="random seed (None: random)"),
)


def _apply(x: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Images ``x`` ``(M, C, H, W)`` with candidate pixels ``cand`` ``(M, k, 2 + C)`` written in."""
    m, c, h, w = x.shape
    k = cand.shape[1]
    rows = cand[..., 0].round().long().clamp(0, h - 1)
    cols = cand[..., 1].round().long().clamp(0, w - 1)
    flat = x.reshape(m, c, h * w).clone()
    pos = (rows * w + cols).unsqueeze(1).expand(m, c, k)  # (M, C, k)
    vals = cand[..., 2:].clamp(0.0, 1.0).transpose(1, 2).to(x.dtype)  # (M, C, k)
    flat.scatter_(2, pos, vals)
    return flat.view(m, c, h, w)


def _fitness(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, cand: torch.Tensor, cls: torch.Tensor,
             targeted: bool, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fitness to *minimise* (true-class probability, or minus the target's) and predictions.

    Args:
        x: ``(B, C, H, W)`` clean images.
        cand: ``(B, P, k, 2 + C)`` candidates.
        cls: ``(B,)`` true or target classes.
    """
    b, p = cand.shape[:2]
    flat = cand.reshape(b * p, *cand.shape[2:])
    img_idx = torch.arange(b, device=x.device).repeat_interleave(p)
    cls_rep = cls.repeat_interleave(p)
    fit = torch.empty(b * p, device=x.device)
    pred = torch.empty(b * p, dtype=torch.long, device=x.device)
    with torch.no_grad():
        for s in range(0, b * p, batch_size):
            sl = slice(s, s + batch_size)
            logits = model(_apply(x[img_idx[sl]], flat[sl]))
            prob = F.softmax(logits.float(), dim=1).gather(1, cls_rep[sl].view(-1, 1)).squeeze(1)
            fit[sl] = -prob if targeted else prob
            pred[sl] = logits.argmax(1)
    return fit.view(b, p), pred.view(b, p)


def _distinct_others(b: int, p: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``(B, P, 3)`` indices ``r1, r2, r3``: distinct, and each different from its own row ``i``."""
    g_dev = gen.device
    o1 = torch.randint(1, p, (b, p), generator=gen, device=g_dev)
    o2 = torch.randint(1, p - 1, (b, p), generator=gen, device=g_dev)
    o3 = torch.randint(1, p - 2, (b, p), generator=gen, device=g_dev)
    o2 = o2 + (o2 >= o1).long()  # distinct offsets in [1, p-1], inserted in increasing order
    lo, hi = torch.minimum(o1, o2), torch.maximum(o1, o2)
    o3 = o3 + (o3 >= lo).long()
    o3 = o3 + (o3 >= hi).long()
    i = torch.arange(p, device=g_dev).view(1, p)
    return ((i.unsqueeze(2) + torch.stack([o1, o2, o3], dim=2)) % p).to(device)


@register_attack("one_pixel", params=_PARAMS, paper="Su, Vargas, Sakurai 2019 (IEEE TEVC), Section III",
                 norm="l0", targeted=True, budget="pixels",
                 description="One-pixel attack: differential evolution over k pixels (position and colour)",
                 quick={"population": 20, "max_iter": 3, "seed": 0})
def one_pixel(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, pixels: int = 1, population: int = 400,
              max_iter: int = 100, f: float = 0.5, targeted: bool = False, batch_size: int = 2048,
              seed: int | None = None) -> torch.Tensor:
    """One-pixel attack (Su et al. 2019), L0 threat model on pixel locations.

    Black-box differential evolution: a candidate is ``pixels`` tuples ``(row, col, c_1..c_C)``
    (``(x, y, r, g, b)`` in the paper). The initial population draws positions uniformly and
    colours from ``N(0.5, 0.5)`` (the paper's ``N(128, 127)`` on [0, 255]), clipped to [0, 1].
    Each generation builds one child per member by DE/rand/1 (``x_r1 + F (x_r2 - x_r3)`` with
    three distinct others, no crossover), clips positions to the image and colours to [0, 1],
    and the child replaces its parent when its fitness is no worse. Fitness: the softmax
    probability of the true class (minimised), or of the target class (maximised). An image
    stops as soon as some candidate fools the model (prediction ``!= y``, or ``== y`` when
    targeted); otherwise after ``max_iter`` generations its best candidate is returned. The
    whole population of every image still running is evaluated in large forward passes of
    ``batch_size`` images. Positions are rounded to the nearest pixel when applied.

    Defaults are the paper's (population 400, 100 generations, F = 0.5); this costs up to
    ``population * (max_iter + 1)`` forward passes per image that resists, so the registry's
    ``quick`` preset uses a small population for previews.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in [0, 1] (not modified).
        y: ``(B,)`` true labels, or target labels with ``targeted=True``.
        pixels: number of pixel locations to change (1, 3 or 5 in the papers).
        population: candidates per image (at least 4).
        max_iter: generations.
        f: DE scale factor.
        targeted: ``y`` holds target labels.
        batch_size: candidate images per forward pass.
        seed: random seed.

    Returns:
        Adversarial images ``(B, C, H, W)`` in [0, 1], detached; at most ``pixels`` pixel
        locations (all channels of a pixel) differ from ``x``.
    """
    check_params(_PARAMS, {"pixels": pixels, "population": population, "max_iter": max_iter, "f": f,
                           "targeted": targeted, "batch_size": batch_size, "seed": seed}, "one_pixel")
    check_images(x)
    b, c, h, w = x.shape
    dev = x.device
    gen = generator(seed, dev)
    xc = working_copy(x)
    with attack_forward(model, xc) as net:
        with torch.no_grad():
            logits0 = net(xc)
        y = check_labels(y, x, logits0.shape[1])
        pred0 = logits0.argmax(1)
        fooled0 = (pred0 == y) if targeted else (pred0 != y)

        k = int(pixels)
        pos = torch.rand(b, population, k, 2, generator=gen, device=dev) * torch.tensor(
            [h, w], dtype=torch.float32, device=dev) - 0.5
        col = torch.randn(b, population, k, c, generator=gen, device=dev) * 0.5 + 0.5
        pop = torch.cat([pos, col], dim=3)
        lo = torch.tensor([0.0, 0.0] + [0.0] * c, device=dev)
        hi = torch.tensor([h - 1.0, w - 1.0] + [1.0] * c, device=dev)
        pop = torch.max(torch.min(pop, hi), lo)

        best = torch.zeros(b, k, 2 + c, device=dev)
        active = (~fooled0).nonzero().flatten()  # already fooled: returned unchanged

        def record(cand: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
            """Store the first fooling candidate of each active image; return the still-running mask."""
            fool = (pred == y[active].view(-1, 1)) if targeted else (pred != y[active].view(-1, 1))
            done = fool.any(1)
            if done.any():
                idx = done.nonzero().flatten()
                best[active[idx]] = cand[idx, fool[idx].float().argmax(1)]
            return ~done

        fit = torch.empty(0, device=dev)
        if active.numel():
            fit, pred = _fitness(net, xc[active], pop[active], y[active], targeted, batch_size)
            keep = record(pop[active], pred)
            active, fit = active[keep], fit[keep]
        for _ in range(max_iter):
            if active.numel() == 0:
                break
            r = _distinct_others(active.numel(), population, gen, dev)
            cur = pop[active]
            bi = torch.arange(active.numel(), device=dev).view(-1, 1)
            child = cur[bi, r[..., 0]] + f * (cur[bi, r[..., 1]] - cur[bi, r[..., 2]])
            child = torch.max(torch.min(child, hi), lo)
            c_fit, c_pred = _fitness(net, xc[active], child, y[active], targeted, batch_size)
            keep = record(child, c_pred)
            better = c_fit <= fit
            pop[active] = torch.where(better.view(*better.shape, 1, 1), child, cur)
            fit = torch.where(better, c_fit, fit)
            active, fit = active[keep], fit[keep]
        if active.numel():  # not fooled: the fittest candidate
            best[active] = pop[active, fit.argmin(1)]
        out = xc.clone()
        todo = (~fooled0).nonzero().flatten()
        if todo.numel():
            out[todo] = _apply(xc[todo], best[todo])
    return to_input_dtype(out, x)
