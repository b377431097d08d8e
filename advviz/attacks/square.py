"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020), L-inf and L2, as in AutoAttack.

Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via random
search", ECCV 2020 (Algorithms 1-3): a score-based random search, the black-box member of
AutoAttack (:func:`advviz.evaluate.autoattack`). The reference AutoAttack keeps it in
``square.py``. The conventions (``norm``, ``eps=None``, images already misclassified, ``seed``,
``precision``) are those of :mod:`advviz.attacks.apgd`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advviz._registry import ParamSpec
from advviz.attacks._api import register_attack
from advviz.attacks._core import (
    NORM_EPS_PARAM,
    PRECISION_PARAM,
    SEED_PARAM,
    TARGETED_PARAM,
    attack_forward,
    batch_norm,
    check_attack_inputs,
    check_labels,
    generator,
    logit_margin,
    norm_eps,
    norm_name,
    project,
    to_input_dtype,
    working_copy,
)

__all__ = ["square", "square_p", "SQUARE_HALVINGS", "P_SCHEDULES"]


#: The iterations after which ``p`` halves (Andriushchenko et al. 2020, App.; the reference's ``p_selection``).
SQUARE_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
#: The ``p`` schedules of :func:`square_p`: the reference AutoAttack's, and the one rescaled to ``n_queries``.
P_SCHEDULES = ("reference", "rescaled")


def square_p(i: int, n_queries: int, p_init: float = 0.8, *, schedule: str = "reference") -> float:
    """Square Attack's fraction ``p`` of pixels in the square at iteration ``i`` (0-based, the
    proposal after the start).

    ``p_init`` is halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
    (:data:`SQUARE_HALVINGS`; Andriushchenko et al. 2020, the schedule for 10,000 queries), i.e.
    ``p = p_init`` for ``i <= 10``, ``p_init / 2`` for ``10 < i <= 50``, ... ``p_init / 512`` for
    ``i > 8000``.

    Args:
        i: the iteration.
        n_queries: the query budget (used by ``"rescaled"`` only).
        p_init: the initial fraction (default 0.8).
        schedule: ``"reference"`` (default): the iteration as it is, whatever ``n_queries`` is:
            the reference AutoAttack builds its Square Attack with ``resc_schedule=False``
            (fra31/auto-attack, ``autoattack.py``, ``p_selection`` in ``square.py``), so at 5,000
            queries ``p`` last halves after iteration 4000 and the last 1,000 use ``p_init / 128``.
            ``"rescaled"``: the iteration is first rescaled to ``int(i * 10000 / n_queries)`` (the
            default ``resc_schedule=True`` of the reference's ``SquareAttack`` class outside
            AutoAttack): at 5,000 queries ``p`` halves twice as early and ends at ``p_init / 512``.
    """
    if schedule not in P_SCHEDULES:
        raise ValueError(f"schedule must be one of {list(P_SCHEDULES)}, got {schedule!r}")
    it = int(i * 10000 / n_queries) if schedule == "rescaled" else int(i)
    return p_init / 2 ** sum(it > h for h in SQUARE_HALVINGS)


def _margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Square Attack's loss to minimise, ``(B,)``: ``z_y - max_{i != y} z_i`` (untargeted) or
    ``max_{i != t} z_i - z_t`` (targeted); success where it is negative (:func:`logit_margin`, negated)."""
    return -logit_margin(logits, y, targeted)


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
        return project(torch.where(win, vertex, x_best), x, eps, norm)
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
    "square", params=[NORM_EPS_PARAM, ParamSpec("n_queries", 5000, kind="int", low=1, high=20000, step=100,
                                      help="model queries per image (the budget of the random search)"),
                      ParamSpec("p_init", 0.8, low=0.01, high=1.0, step=0.01,
                                help="initial fraction of the image covered by the square"),
                      ParamSpec("p_schedule", "reference", kind="choice", choices=P_SCHEDULES,
                                help="when the square shrinks: the reference AutoAttack's iterations, "
                                     "or rescaled to n_queries"),
                      TARGETED_PARAM, SEED_PARAM, PRECISION_PARAM],
    paper="Andriushchenko, Croce, Flammarion, Hein. Square Attack: a query-efficient black-box adversarial "
          "attack via random search. ECCV 2020",
    norm="linf", targeted=True, budget="eps", quick={"n_queries": 20},
    description="Square Attack: score-based random search with square updates (no gradients)")
def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None, norm: str = "linf",
           n_queries: int = 5000, p_init: float = 0.8, p_schedule: str = "reference", targeted: bool = False,
           seed: int | None = 0, precision: str = "fp32") -> torch.Tensor:
    """Square Attack (Andriushchenko et al., ECCV 2020, Algorithm 1), L-inf or L2, score-based.

    Random search on the margin loss ``z_y - max_{i != y} z_i`` (:func:`_margin`; targeted:
    ``max_{i != t} z_i - z_t``): a proposal is kept when it lowers the loss; an image stops once
    the loss is negative. L-inf (Alg. 2): vertical-stripes start (``x +- eps`` per column and
    channel); each step sets a random ``s x s`` window to ``x +- eps`` (a random sign per channel).
    L2 (Alg. 3): a start of centred-squares patterns on an ``(H // 5)`` grid scaled to ``eps``;
    each step moves the change of two random windows into the first, adds a new centred-squares
    pattern there and rescales the image's change to ``eps``. The side ``s`` is
    ``round(sqrt(p * H * W))`` (L2: at least 3, odd) with ``p`` from :func:`square_p`
    (``p_init = 0.8`` halved after iterations 10, 50, 200, ..., 8000, not rescaled to
    ``n_queries``: the reference AutoAttack's schedule; ``p_schedule="rescaled"`` rescales it). One window per
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
        p_schedule: ``"reference"`` (default, AutoAttack's) or ``"rescaled"`` (:func:`square_p`).
        targeted: reach the class ``y``.
        seed: seeds every random draw.
        precision: ``"fp32"`` or ``"bf16"``.

    Returns:
        ``x_adv`` ``(B, C, H, W)``: the lowest-margin point found per image (adversarial where the
        margin went negative); images already misclassified are returned unchanged.
    """
    y = check_attack_inputs(model, x, y)
    norm = norm_name(norm)
    eps = norm_eps(eps, norm, x)
    n_queries = int(n_queries)
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if not 0.0 < p_init <= 1.0:
        raise ValueError(f"p_init must lie in (0, 1], got {p_init}")
    if p_schedule not in P_SCHEDULES:
        raise ValueError(f"p_schedule must be one of {list(P_SCHEDULES)}, got {p_schedule!r}")
    targeted = bool(targeted)
    xc = working_copy(x)
    gen = generator(seed, x.device)
    out = xc.clone()
    with attack_forward(model, xc, precision) as net, torch.no_grad():
        logits0 = net(xc)
        y = check_labels(y, xc, logits0.shape[1])  # a label the output has no column for: say so
        margin0 = _margin(logits0, y, targeted)
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
                cand = _square_step(xa, x_best[active], eps, norm, square_p(i, n_queries, p_init, schedule=p_schedule), gen)
                m_new = _margin(net(cand), ys[active], targeted)
                better = m_new < m_best[active]
                x_best[active[better]] = cand[better]
                m_best[active[better]] = m_new[better]
            out[idx] = x_best
    return to_input_dtype(out, x, eps=eps, norm=norm)
