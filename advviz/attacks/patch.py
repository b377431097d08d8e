"""Patch attacks: Adversarial Patch (Brown et al. 2017) and LaVAN (Karmon et al. 2018).

Both change only a small region of each image, with unconstrained content. Budget: ``area``, the
fraction of pixel locations that may change (all channels of a pixel count as one location).

* :func:`adversarial_patch`: one patch for the whole batch, a *disc* (as in Brown et al.'s
  figures) optimised over random locations and rotations (expectation over transformation),
  then pasted at a seeded random location in each image. Rotations act on the patch *content*
  inside a fixed disc mask, so the footprint never grows with the angle, and bilinear
  resampling only changes values inside the disc.
* :func:`lavan`: localized and visible adversarial noise, a square of about 2% of the pixels at
  a fixed location (a corner by default), optimised per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advviz._registry import ParamSpec, check_params
from advviz.attacks._api import register_attack
from advviz.attacks._core import attack_forward, check_images, check_labels, generator, to_input_dtype, working_copy

__all__ = ["adversarial_patch", "disc_mask", "lavan"]

LOCATIONS = ("top_left", "top_right", "bottom_left", "bottom_right", "random")


def disc_mask(max_pixels: float, *, max_side: int | None = None) -> torch.Tensor:
    """The largest digital disc with at most ``max_pixels`` pixels: a ``(d, d)`` bool mask.

    The disc holds the pixels of a ``d x d`` square whose centres lie within ``d / 2`` of the
    square's centre; ``d`` is the largest side (at most ``max_side``) whose disc fits the
    count. ``(0, 0)`` when not even one pixel fits.
    """
    d = math.isqrt(int(max(max_pixels, 0) * 4 / math.pi) + 1) + 2
    if max_side is not None:
        d = min(d, max_side)
    while d > 0:
        r = torch.arange(d, dtype=torch.float64) - (d - 1) / 2
        m = (r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) <= (d / 2) ** 2
        if int(m.sum()) <= max_pixels:
            return m
        d -= 1
    return torch.zeros(0, 0, dtype=torch.bool)


def _rotate(content: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate ``content`` ``(B, C, d, d)`` by ``angles`` ``(B,)`` radians about its centre (bilinear)."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(content.dtype), list(content.shape), align_corners=False)
    return F.grid_sample(content, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _paste(x: torch.Tensor, content: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor,
           cols: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` with ``content`` ``(B, C, h, w)`` written where ``mask`` ``(h, w)`` is
    True, top-left corners at ``(rows, cols)`` ``(B,)``. Differentiable in ``content``."""
    b = x.shape[0]
    ph, pw = mask.shape
    bi = torch.arange(b, device=x.device).view(b, 1, 1)
    ri = (rows.view(b, 1) + torch.arange(ph, device=x.device).view(1, ph)).view(b, ph, 1)
    ci = (cols.view(b, 1) + torch.arange(pw, device=x.device).view(1, pw)).view(b, 1, pw)
    xl = x.permute(0, 2, 3, 1)  # (B, H, W, C)
    region = xl[bi, ri, ci]  # (B, ph, pw, C)
    m = mask.to(device=x.device, dtype=x.dtype).view(1, ph, pw, 1)
    new = region * (1 - m) + content.permute(0, 2, 3, 1) * m
    return xl.index_put((bi.expand(b, ph, pw), ri.expand(b, ph, pw), ci.expand(b, ph, pw)), new).permute(0, 3, 1, 2)


def _random_corners(b: int, h: int, w: int, ph: int, pw: int, gen: torch.Generator,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randint(0, h - ph + 1, (b,), generator=gen, device=gen.device).to(device)
    cols = torch.randint(0, w - pw + 1, (b,), generator=gen, device=gen.device).to(device)
    return rows, cols


def _ce_objective(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-sample loss to *minimise*: ``log p_y`` (untargeted) or ``-log p_target`` (targeted)."""
    ce = F.cross_entropy(logits, y, reduction="none")
    return ce if targeted else -ce


_PATCH_PARAMS = (
    ParamSpec("area", 0.15, kind="float", low=0.0, high=1.0, step=0.01,
              help="fraction of pixel locations the (disc) patch covers (the CFR paper uses 15%)"),
    ParamSpec("steps", 300, kind="int", low=0, high=10000, step=10, help="optimisation steps"),
    ParamSpec("lr", 0.05, kind="float", low=1e-4, high=1.0, step=0.01, log=True, help="Adam learning rate"),
    ParamSpec("max_rotation", 22.5, kind="float", low=0.0, high=180.0, step=2.5,
              help="random rotations in [-max_rotation, max_rotation] degrees during training"),
    ParamSpec("batch_size", 64, kind="int", low=1, high=4096, help="images per optimisation step"),
    ParamSpec("targeted", False, kind="bool", help="y holds target labels"),
    ParamSpec("seed", None, kind="int", low=0, help="random seed (None: random)"),
)


@register_attack("adversarial_patch", params=_PATCH_PARAMS, paper="Brown et al. 2017 (arXiv:1712.09665)",
                 norm="patch", targeted=True, budget="area",
                 description="Adversarial Patch: one disc-shaped patch trained over random locations and rotations",
                 quick={"steps": 5, "seed": 0})
def adversarial_patch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, area: float = 0.15, steps: int = 300,
                      lr: float = 0.05, max_rotation: float = 22.5, batch_size: int = 64, targeted: bool = False,
                      seed: int | None = None) -> torch.Tensor:
    """Adversarial Patch (Brown, Mane, Roy, Abadi, Gilmer 2017), patch threat model.

    One patch, shared by the batch, is trained by expectation over transformation: each step
    takes a random mini-batch of ``x``, pastes the patch at a uniformly random location with a
    random rotation in ``[-max_rotation, max_rotation]`` per image, and takes an Adam step
    (``lr``) on the patch content, which stays in [0, 1] but is otherwise unconstrained. The
    objective is ``log p_y`` to minimise (untargeted, as the CFR paper's Table I uses it) or
    ``-log p_target`` (targeted, the paper's setting). Finally the patch is pasted, unrotated,
    at a seeded uniformly random location in each image. Brown et al. also vary the scale;
    here the size is fixed by ``area``.

    The patch is the largest digital disc of at most ``area * H * W`` pixels (see
    :func:`disc_mask`); rotations turn its content inside that disc, so the changed locations
    never exceed the budget.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in [0, 1] (not modified).
        y: ``(B,)`` true labels, or target labels with ``targeted=True``.
        area: fraction of pixel locations covered (default 0.15, as in the CFR paper).
        steps: optimisation steps (0: the random initial patch).
        lr: Adam learning rate.
        max_rotation: rotation range in degrees during training.
        batch_size: images per step.
        targeted: ``y`` holds target labels.
        seed: random seed (initial patch, transformations, final locations).

    Returns:
        ``(B, C, H, W)`` in [0, 1], detached; at most ``area * H * W`` pixel locations differ.
    """
    check_params(_PATCH_PARAMS, {"area": area, "steps": steps, "lr": lr, "max_rotation": max_rotation,
                                 "batch_size": batch_size, "targeted": targeted, "seed": seed},
                 "adversarial_patch")
    check_images(x)
    b, c, h, w = x.shape
    dev = x.device
    gen = generator(seed, dev)
    mask = disc_mask(area * h * w, max_side=min(h, w)).to(dev)
    xc = working_copy(x)
    with attack_forward(model, xc) as net:
        with torch.no_grad():
            num_classes = net(xc[:1]).shape[1]
        y = check_labels(y, x, num_classes)
        if mask.numel() == 0:
            return to_input_dtype(xc, x)
        d = mask.shape[0]
        patch = torch.rand(1, c, d, d, generator=gen, device=dev, dtype=xc.dtype).requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=lr)
        max_rad = math.radians(max_rotation)
        mb = min(batch_size, b)
        for _ in range(steps):
            idx = torch.randperm(b, generator=gen, device=gen.device)[:mb].to(dev)
            rows, cols = _random_corners(mb, h, w, d, d, gen, dev)
            angles = (torch.rand(mb, generator=gen, device=gen.device).to(dev) * 2 - 1) * max_rad
            with torch.enable_grad():
                content = _rotate(patch.expand(mb, c, d, d), angles)
                logits = net(_paste(xc[idx], content, mask, rows, cols))
                loss = _ce_objective(logits, y[idx], targeted).mean()
                (g,) = torch.autograd.grad(loss, patch)
            patch.grad = g
            opt.step()
            with torch.no_grad():
                patch.clamp_(0.0, 1.0)
        rows, cols = _random_corners(b, h, w, d, d, gen, dev)
        with torch.no_grad():
            out = _paste(xc, patch.detach().expand(b, c, d, d), mask, rows, cols)
    return to_input_dtype(out.clamp(0.0, 1.0), x)


_LAVAN_PARAMS = (
    ParamSpec("area", 0.02, kind="float", low=0.0, high=1.0, step=0.005,
              help="fraction of pixel locations covered by the square noise (about 2% in the paper)"),
    ParamSpec("steps", 1000, kind="int", low=0, high=20000, step=50,
              help="maximum gradient steps (per image, stopping when fooled)"),
    ParamSpec("alpha", 0.05, kind="float", low=0.0, high=1.0, step=0.01, help="signed-gradient step size"),
    ParamSpec("location", "bottom_right", kind="choice", choices=LOCATIONS,
              help="where the noise goes: a corner, or a seeded random position per image"),
    ParamSpec("targeted", False, kind="bool", help="y holds target labels"),
    ParamSpec("seed", None, kind="int", low=0, help="random seed (None: random)"),
)


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per sample."""
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, y.view(-1, 1), float("-inf")).amax(1)
    return z_y - other


@register_attack("lavan", params=_LAVAN_PARAMS, paper="Karmon, Zoran, Goldberg 2018 (ICML), LaVAN",
                 norm="patch", targeted=True, budget="area",
                 description="LaVAN: localized visible noise on ~2% of the pixels at a fixed location",
                 quick={"steps": 5, "seed": 0})
def lavan(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, area: float = 0.02, steps: int = 1000,
          alpha: float = 0.05, location: str = "bottom_right", targeted: bool = False,
          seed: int | None = None) -> torch.Tensor:
    """LaVAN, localized and visible adversarial noise (Karmon et al. 2018), patch threat model.

    A square of side ``floor(sqrt(area * H * W))`` at a fixed location (a corner by default,
    like the CFR paper's "around the corners") is replaced by noise optimised per image with
    signed-gradient steps of size ``alpha`` (values kept in [0, 1], otherwise unconstrained).
    The objective follows LaVAN's "raise the target logit, lower the source logit" as a logit
    margin: untargeted, minimise ``z_y - max_{j != y} z_j``; targeted, maximise
    ``z_t - max_{j != t} z_j``. Each image stops as soon as it is fooled (prediction ``!= y``,
    or ``== y`` when targeted); the noise is initialised uniformly at random (seeded).

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in [0, 1] (not modified).
        y: ``(B,)`` true labels, or target labels with ``targeted=True``.
        area: fraction of pixel locations covered (default 0.02, as in the paper).
        steps: maximum steps (the CFR paper trains up to 10,000).
        alpha: step size.
        location: ``"top_left"``, ``"top_right"``, ``"bottom_left"``, ``"bottom_right"`` or
            ``"random"`` (seeded, per image).
        targeted: ``y`` holds target labels.
        seed: random seed.

    Returns:
        ``(B, C, H, W)`` in [0, 1], detached; at most ``area * H * W`` pixel locations differ.
    """
    check_params(_LAVAN_PARAMS, {"area": area, "steps": steps, "alpha": alpha, "location": location,
                                 "targeted": targeted, "seed": seed}, "lavan")
    check_images(x)
    b, c, h, w = x.shape
    dev = x.device
    gen = generator(seed, dev)
    s = min(math.isqrt(int(area * h * w)), h, w)
    while s * s > area * h * w:  # guards float rounding of area * H * W
        s -= 1
    xc = working_copy(x)
    with attack_forward(model, xc) as net:
        with torch.no_grad():
            num_classes = net(xc[:1]).shape[1]
        y = check_labels(y, x, num_classes)
        if s <= 0:
            return to_input_dtype(xc, x)
        mask = torch.ones(s, s, dtype=torch.bool, device=dev)
        if location == "random":
            rows, cols = _random_corners(b, h, w, s, s, gen, dev)
        else:
            r0 = 0 if location.startswith("top") else h - s
            c0 = 0 if location.endswith("left") else w - s
            rows = torch.full((b,), r0, dtype=torch.long, device=dev)
            cols = torch.full((b,), c0, dtype=torch.long, device=dev)
        noise = torch.rand(b, c, s, s, generator=gen, device=dev, dtype=xc.dtype)
        sign = -1.0 if targeted else 1.0  # descend sign * margin
        active = torch.arange(b, device=dev)
        for it in range(steps + 1):
            with torch.enable_grad():
                nz = noise[active].requires_grad_(True)
                logits = net(_paste(xc[active], nz, mask, rows[active], cols[active]))
                (g,) = torch.autograd.grad((sign * _margin(logits, y[active])).sum(), nz)
            pred = logits.detach().argmax(1)
            fooled = (pred == y[active]) if targeted else (pred != y[active])
            keep = ~fooled
            if not keep.any():
                break
            active, g = active[keep], g[keep]
            if it == steps:
                break
            noise[active] = (noise[active] - alpha * g.sign()).clamp(0.0, 1.0)
        with torch.no_grad():
            out = _paste(xc, noise, mask, rows, cols)
    return to_input_dtype(out.clamp(0.0, 1.0), x)
