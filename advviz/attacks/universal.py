"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi, Frossard 2017).

Moosavi-Dezfooli et al., "Universal adversarial perturbations", CVPR 2017, Algorithm 1: one
image-agnostic perturbation ``v`` with ``||v||_p <= xi`` that fools most images of a set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advviz._registry import ParamSpec, check_params
from advviz.attacks._api import register_attack
from advviz.attacks._core import (
    attack_forward,
    check_budget,
    check_images,
    check_labels,
    generator,
    to_input_dtype,
    working_copy,
)

__all__ = ["universal", "universal_perturbation"]

_PARAMS = (
    ParamSpec("eps", 10 / 255, kind="float", low=0.0, high=1.0, step=1 / 255, per255=True,
              help="radius xi of the perturbation ball (L-infinity on the [0, 1] scale; with norm='l2' "
                   "the L2 radius, which may exceed 1)"),
    ParamSpec("norm", "linf", kind="choice", choices=("linf", "l2"), help="norm of the ball v is projected on"),
    ParamSpec("delta", 0.2, kind="float", low=0.0, high=1.0, step=0.05,
              help="stop once the fooling rate reaches 1 - delta"),
    ParamSpec("max_passes", 5, kind="int", low=1, high=100, step=1, help="maximum passes over the images"),
    ParamSpec("overshoot", 0.02, kind="float", low=0.0, high=1.0, step=0.01,
              help="DeepFool overshoot of each minimal step"),
    ParamSpec("df_steps", 10, kind="int", low=1, high=200, step=1, help="DeepFool iterations per image"),
    ParamSpec("candidates", 10, kind="int", low=2, high=1000, step=1,
              help="classes DeepFool considers (the most likely ones on the clean image)"),
    ParamSpec("seed", None, kind="int", low=0, help="seed of the image order (None: random)"),
)


def _class_grads(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """At one image ``(1, C, H, W)``: all logits ``(K,)``, and the logits ``(m,)`` and input
    gradients ``(m, C, H, W)`` of ``classes`` ``(m,)`` (one batched forward/backward)."""
    m = classes.numel()
    with torch.enable_grad():
        xi = x.detach().expand(m, *x.shape[1:]).clone().requires_grad_(True)
        logits = model(xi)
        sel = logits.gather(1, classes.view(-1, 1)).squeeze(1)
        (g,) = torch.autograd.grad(sel.sum(), xi)
    return logits[0].detach(), sel.detach(), g


def _deepfool_step(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, label: int, classes: torch.Tensor,
                   steps: int, overshoot: float) -> torch.Tensor:
    """Minimal L2 perturbation ``r`` (DeepFool, Moosavi-Dezfooli et al. 2016) moving ``x`` off ``label``.

    ``classes`` holds ``label`` first, then the other candidate classes. Returns
    ``(1 + overshoot) * r_total`` (zero when ``x`` is already off ``label``).
    """
    r_tot = torch.zeros_like(x)
    for _ in range(steps):
        xa = (x + (1 + overshoot) * r_tot).clamp(0.0, 1.0)
        logits, z, g = _class_grads(model, xa, classes)
        if int(logits.argmax()) != label:
            break
        w = (g[1:] - g[:1]).flatten(1)  # (m-1, N)
        fk = (z[1:] - z[0]).abs()
        wn = w.norm(dim=1).clamp_min(1e-12)
        j = int((fk / wn).argmin())
        r = (fk[j] + 1e-4) / wn[j] ** 2 * w[j]
        r_tot = r_tot + r.view_as(x)
    return (1 + overshoot) * r_tot


def _project(v: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return v.clamp(-eps, eps)
    n = v.norm()
    return v * min(1.0, eps / max(float(n), 1e-12))


def universal_perturbation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 10 / 255,
                           norm: str = "linf", delta: float = 0.2, max_passes: int = 5,
                           overshoot: float = 0.02, df_steps: int = 10, candidates: int = 10,
                           seed: int | None = None) -> torch.Tensor:
    """Universal adversarial perturbation ``v`` of a set of images (Moosavi-Dezfooli et al. 2017, Alg. 1).

    ``v = 0``; each pass visits the images in a seeded random order, and for each image that
    ``x_i + v`` does not fool yet, computes the minimal L2 perturbation ``dv`` sending
    ``clip(x_i + v)`` across the nearest decision boundary (DeepFool, as in the paper, with
    ``overshoot``) and sets ``v = P(v + dv)``, the projection onto the ``eps`` ball (L-infinity,
    the paper's ``p = inf``, or L2). Passes stop once the fooling rate on ``x`` reaches
    ``1 - delta`` (the paper's ``delta = 0.2``, i.e. 80%) or after ``max_passes``.

    "Fooled" means predicted ``!= y``; with ``y`` the model's clean predictions this is the
    paper's definition ``k(x + v) != k(x)``; with true labels it is misclassification (both
    coincide on correctly classified images).

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in [0, 1] (not modified).
        y: ``(B,)`` labels.
        eps: the ball's radius ``xi`` (default 10/255 in L-infinity, the paper's ``xi = 10`` on
            [0, 255]; for ``norm="l2"`` an L2 radius on the [0, 1] scale).
        norm: ``"linf"`` or ``"l2"``.
        delta: target fooling rate ``1 - delta``.
        max_passes: passes over the images.
        overshoot: DeepFool overshoot (0.02).
        df_steps: DeepFool iterations per visit.
        candidates: classes DeepFool considers, the most likely on the clean image.
        seed: seed of the image order.

    Returns:
        ``v`` of shape ``(1, C, H, W)`` (broadcasts over the batch), detached, within the ball;
        apply as ``(x + v).clamp(0, 1)``. Its dtype is ``x``'s, except for float16/bfloat16
        ``x``, which are attacked in float32 (``v`` is then float32).
    """
    check_params(_PARAMS, {"norm": norm, "delta": delta, "max_passes": max_passes,
                           "overshoot": overshoot, "df_steps": df_steps, "candidates": candidates,
                           "seed": seed}, "universal_perturbation")
    check_images(x)
    eps = check_budget("eps", eps, scale_255=(norm == "linf"))  # an L2 radius may exceed 1
    gen = generator(seed, "cpu")
    xc = working_copy(x)
    v = torch.zeros(1, *x.shape[1:], dtype=xc.dtype, device=x.device)
    with attack_forward(model, xc) as net:
        with torch.no_grad():
            logits0 = net(xc)
        y = check_labels(y, x, logits0.shape[1])
        k = min(candidates, logits0.shape[1])
        order_cls = logits0.argsort(1, descending=True)
        if eps == 0:
            return v

        def fooling() -> torch.Tensor:
            with torch.no_grad():
                return net((xc + v).clamp(0.0, 1.0)).argmax(1) != y

        for _ in range(max_passes):
            if float(fooling().float().mean()) >= 1 - delta:
                break
            for i in torch.randperm(x.shape[0], generator=gen).tolist():
                xi = (xc[i:i + 1] + v).clamp(0.0, 1.0)
                with torch.no_grad():
                    if int(net(xi).argmax(1)) != int(y[i]):
                        continue
                others = order_cls[i][order_cls[i] != y[i]][:k - 1]
                classes = torch.cat([y[i:i + 1], others])
                dv = _deepfool_step(net, xi, int(y[i]), classes, df_steps, overshoot)
                v = _project(v + dv, eps, norm)
    return v.detach()


@register_attack("universal", params=_PARAMS, paper="Moosavi-Dezfooli et al. 2017 (CVPR), Algorithm 1",
                 norm="linf", targeted=False, budget="eps",
                 description="Universal perturbation: one image-agnostic perturbation for the whole batch",
                 quick={"max_passes": 1, "df_steps": 3, "seed": 0})
def universal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 10 / 255, norm: str = "linf",
              delta: float = 0.2, max_passes: int = 5, overshoot: float = 0.02, df_steps: int = 10,
              candidates: int = 10, seed: int | None = None) -> torch.Tensor:
    """Universal adversarial perturbation (Moosavi-Dezfooli et al. 2017) fitted on, and added to, ``x``.

    Computes ``v = universal_perturbation(model, x, y, ...)`` on the batch itself and returns
    ``clip(x + v, 0, 1)``; every image gets the same ``v``. Default norm L-infinity with
    ``eps = 10/255``; see :func:`universal_perturbation` for the algorithm and arguments.

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in [0, 1] (not modified).
        y: ``(B,)`` true labels (untargeted only).
        eps: radius of the ball (L-infinity by default).
        norm: ``"linf"`` or ``"l2"``.
        delta: stop at a fooling rate of ``1 - delta``.
        max_passes: passes over the images.
        overshoot: DeepFool overshoot.
        df_steps: DeepFool iterations per visit.
        candidates: classes DeepFool considers.
        seed: seed of the image order.

    Returns:
        ``(B, C, H, W)`` in [0, 1], detached; ``x_adv - x`` is ``v`` up to clipping.
    """
    v = universal_perturbation(model, x, y, eps=eps, norm=norm, delta=delta, max_passes=max_passes,
                               overshoot=overshoot, df_steps=df_steps, candidates=candidates, seed=seed)
    # half-precision inputs: v is float32; rounding x + v back to x's dtype stays inside the ball
    return to_input_dtype((working_copy(x) + v).clamp(0.0, 1.0), x, eps=float(eps), norm=norm)
