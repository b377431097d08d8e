"""Shared machinery of every attack: validation, the model guard, input gradients, projections.

* :func:`check_images`, :func:`check_budget`, :func:`check_labels`: one clear error per bad input
  (an ``eps`` of 8 instead of 8/255, a grayscale batch for an RGB model, labels out of range).
* :func:`model_guard` (from :mod:`advviz._modules`, the one guard of advviz): runs the model in
  eval mode with parameters frozen, and restores ``training`` and every ``requires_grad``
  afterwards; parameter ``.grad`` is never touched because gradients are taken with
  :func:`torch.autograd.grad` w.r.t. the input only.
* :func:`input_grad`: gradient of a loss w.r.t. the input (and the logits), nothing else.
* :func:`generator`: a seeded ``torch.Generator`` on the input's device.
* :func:`project_linf`, :func:`project_l2`: projections onto the budget ball and ``[0, 1]``.
* :func:`as_logits`, :func:`warn_if_probabilities`, :func:`model_dtype`, :func:`model_logits` (from
  :mod:`advviz._modules`, the model-call contract shared with :func:`advviz.metrics.logits`): what
  every attack checks about the model's output and input dtype (used by :func:`attack_forward`).
* :func:`working_copy`, :func:`to_input_dtype`: half-precision inputs are attacked in float32 and
  the result is rounded back to the input's dtype without leaving the budget.
* The attack contract every attack file shares: :func:`attack_forward` (the one place where
  attacks call the model: guard, fast copy, dtype cast, output checks; it yields a
  :class:`Forward`), :func:`check_attack_inputs` (model, images, labels), :func:`check_norm_budget`
  and :func:`check_mask`; for the attacks that take ``norm="linf"|"l2"``: :func:`norm_name`,
  :func:`norm_eps` (the norm's default budget, checked), :func:`project` and :func:`per_image`;
  :func:`refuse_targeted` for the untargeted-only attacks; and the parameter specs shared by
  several registrations (:data:`SEED_PARAM`, :data:`PRECISION_PARAM`, :data:`TARGETED_PARAM`,
  :data:`NORM_EPS_PARAM`, :data:`N_ITER_PARAM`, :data:`RESTARTS_PARAM`, :data:`TARGET_CLASSES_PARAM`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from math import sqrt

import torch
import torch.nn.functional as F
from torch import nn

from advviz._checks import check_images
from advviz._modules import as_logits, forward_error, model_dtype, model_guard, model_logits, warn_if_probabilities
from advviz._registry import ParamSpec
from advviz.attacks._fast import fast_model

__all__ = [
    "check_images",
    "check_budget",
    "check_labels",
    "model_guard",
    "input_grad",
    "generator",
    "project_linf",
    "project_l2",
    "l2_normalize",
    "batch_norm",
    "loss_ce",
    "logit_margin",
    "as_logits",
    "warn_if_probabilities",
    "model_dtype",
    "working_copy",
    "to_input_dtype",
    "model_logits",
    "SEED_PARAM",
    "PRECISION_PARAM",
    "TARGETED_PARAM",
    "NORM_EPS_PARAM",
    "N_ITER_PARAM",
    "RESTARTS_PARAM",
    "TARGET_CLASSES_PARAM",
    "DEFAULT_EPS",
    "check_attack_inputs",
    "check_norm_budget",
    "check_mask",
    "Forward",
    "attack_forward",
    "norm_name",
    "norm_eps",
    "project",
    "per_image",
    "refuse_targeted",
]


def check_budget(name: str, value: float, *, allow_zero: bool = True, scale_255: bool = True) -> float:
    """Validate a perturbation budget on the ``[0, 1]`` scale and return it as a float.

    Args:
        name: parameter name for the message (``"eps"``, ``"alpha"``).
        value: the budget.
        allow_zero: whether 0 is allowed.
        scale_255: whether values above 1 are refused with the "divide by 255" hint (for
            L-infinity intensities; an L2 radius may legitimately exceed 1).
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    if scale_255 and v > 1:
        raise ValueError(f"{name}={value} is above 1: budgets are on the [0, 1] pixel scale; "
                         f"did you mean {name}={value:g}/255 = {v / 255:.5f}?")
    return v


def check_labels(y: torch.Tensor, x: torch.Tensor, num_classes: int | None = None, *, name: str = "y") -> torch.Tensor:
    """Validate integer labels ``(B,)`` matching ``x`` and return them as int64 on ``x``'s device."""
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.ndim == 0:
        y = y.unsqueeze(0)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{name} must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if (y < 0).any() or (num_classes is not None and (y >= num_classes).any()):
        raise ValueError(f"{name} holds a label outside [0, {num_classes})")
    return y.to(device=x.device, dtype=torch.long)


def input_grad(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of ``loss_fn(model(x)).sum()`` w.r.t. ``x`` only.

    Args:
        model: callable mapping ``(B, C, H, W)`` to logits ``(B, K)``.
        x: input batch (not modified).
        loss_fn: maps logits to a per-sample loss ``(B,)`` (or a scalar).

    Returns:
        ``(grad (B, C, H, W), logits (B, K) detached)``.
    """
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        logits = as_logits(model(xi))
        loss = loss_fn(logits).sum()
        (g,) = torch.autograd.grad(loss, xi)
    return g, logits.detach()


def generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (a random seed when ``None``)."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto the L-infinity ball of radius ``eps`` around ``x``, then ``[0, 1]``."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def batch_norm(v: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Per-sample norm of ``v`` ``(B, ...)`` -> ``(B, 1, 1, 1)`` (broadcastable)."""
    return v.flatten(1).norm(p=p, dim=1).view(-1, *([1] * (v.ndim - 1)))


def l2_normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``v / ||v||_2`` per sample (zero vectors stay zero)."""
    return v / batch_norm(v).clamp_min(eps)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto the L2 ball of radius ``eps`` around ``x``, then ``[0, 1]``."""
    delta = x_adv - x
    factor = (eps / batch_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta * factor).clamp_(0.0, 1.0)


def loss_ce(y: torch.Tensor, targeted: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-sample loss to *ascend*: cross-entropy to ``y`` (untargeted) or its negative (targeted)."""
    sign = -1.0 if targeted else 1.0
    return lambda logits: sign * F.cross_entropy(logits, y, reduction="none")


def logit_margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """How far ``logits`` ``(B, K)`` are past the decision boundary, ``(B,)``: untargeted
    ``max_{i != y} Z_i - Z_y``; targeted ``Z_y - max_{i != y} Z_i``. Positive means success."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return z_y - other if targeted else other - z_y


_LOW = (torch.float16, torch.bfloat16)


def working_copy(x: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``x`` to run an attack on: half precision is upcast to float32 (the
    steps, projections and losses need more than 11 bits), other dtypes are kept."""
    return x.detach().to(torch.float32 if x.dtype in _LOW else x.dtype, copy=True)


def to_input_dtype(x_adv: torch.Tensor, x: torch.Tensor, *, eps: float | None = None,
                   norm: str = "linf") -> torch.Tensor:
    """``x_adv`` (computed on :func:`working_copy`) as ``x``'s dtype, detached, still in budget.

    Rounding to float16/bfloat16 can push a coordinate past ``eps``; such coordinates (L-inf)
    are moved one representable value towards ``x``, and such images (L2) have their change
    shrunk until the rounded image is inside the ball. Values stay in ``[0, 1]``.
    """
    x_adv = x_adv.detach()
    if x_adv.dtype == x.dtype:
        return x_adv
    out = x_adv.to(x.dtype).clamp_(0.0, 1.0)
    if eps is None:
        return out
    xd = x.double()
    if norm == "linf":
        for _ in range(4):
            over = (out.double() - xd).abs() > eps
            if not bool(over.any()):
                return out
            out = torch.where(over, torch.nextafter(out, x), out)
        return torch.where((out.double() - xd).abs() > eps, x, out)
    delta = x_adv.double() - xd
    for _ in range(8):
        l2 = (out.double() - xd).flatten(1).norm(dim=1)
        over = l2 > eps
        if not bool(over.any()):
            return out
        delta = delta * torch.where(over, 1 - 2.0 ** -8, 1.0).view(-1, *([1] * (x.ndim - 1)))
        out = (xd + delta).clamp(0.0, 1.0).to(x.dtype)
    l2 = (out.double() - xd).flatten(1).norm(dim=1)
    return torch.where((l2 > eps).view(-1, *([1] * (x.ndim - 1))), x, out)


# ---------------------------------------------------------------------------------------------
# the attack contract: parameter specs, input checks and the one path to the model
# ---------------------------------------------------------------------------------------------

#: ``seed``: seeds every random draw of an attack (on the input's device).
SEED_PARAM = ParamSpec("seed", 0, kind="int", low=0, high=2**31 - 1, step=1, help="seed of the random draws")
#: ``precision``: ``"fp32"`` (exact) or ``"bf16"`` autocast of the model's forward (see :func:`attack_forward`).
PRECISION_PARAM = ParamSpec("precision", "fp32", kind="choice", choices=("fp32", "bf16"),
                            help="fp32 (exact) or bf16 autocast of the model (faster, different rounding)")
#: ``targeted``: ``y`` holds target labels.
TARGETED_PARAM = ParamSpec("targeted", False, kind="bool", help="y holds target labels; descend their cross-entropy")
#: ``eps`` of the attacks that take ``norm="linf"|"l2"`` (registered as L-infinity, in 1/255 steps).
NORM_EPS_PARAM = ParamSpec("eps", 8 / 255, low=0.0, high=32 / 255, step=1 / 255, per255=True,
                           help="L-infinity budget on the [0, 1] scale (norm='l2': the L2 radius)")
#: ``n_iter``: iterations per run (APGD, FAB).
N_ITER_PARAM = ParamSpec("n_iter", 100, kind="int", low=1, high=1000, step=1, help="iterations per run")
#: ``n_restarts``: runs from new random starts on the images not fooled yet (APGD, FAB).
RESTARTS_PARAM = ParamSpec("n_restarts", 1, kind="int", low=1, high=10, step=1,
                           help="runs from new random starts for the images not fooled yet")
#: ``n_target_classes``: target classes tried, the most likely first (APGD-T, FAB-T).
TARGET_CLASSES_PARAM = ParamSpec("n_target_classes", 9, kind="int", low=1, high=99, step=1,
                                 help="target classes tried, the most likely first (at most K - 1)")

#: The default budget of each norm for the attacks taking ``norm=``: AutoAttack's CIFAR-10 budgets.
DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}


def check_attack_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Check an attack's ``model`` (callable), images ``x`` (:func:`check_images`) and labels ``y``
    (:func:`check_labels`, against ``model.num_classes`` when it has one); return ``y`` as int64
    ``(B,)`` on ``x``'s device. Every attack calls it first."""
    if not callable(model):
        raise TypeError(f"model must be a callable nn.Module, got {type(model).__name__}")
    check_images(x)
    return check_labels(y, x, getattr(model, "num_classes", None))


def check_norm_budget(name: str, value: float, norm: str, x: torch.Tensor, *, allow_zero: bool = True) -> float:
    """Validate a budget for ``norm``: L-inf values above 1 raise (divide by 255); L2 values may exceed
    1 (an L2 radius of 3 is common on ImageNet) but not ``sqrt(C*H*W)``, the largest distance in the cube."""
    if norm == "linf":
        return check_budget(name, value, allow_zero=allow_zero)
    if norm != "l2":
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    v = check_budget(name, value, allow_zero=allow_zero, scale_255=False)
    diameter = sqrt(x[0].numel())
    if v > diameter:
        raise ValueError(f"{name}={value} exceeds {diameter:.4g}, the largest L2 distance between two images "
                         f"in [0, 1] of shape {tuple(x.shape[1:])}: budgets are on the [0, 1] pixel scale; "
                         f"did you mean {name}={v / 255:.5f} (divided by 255)?")
    return v


def check_mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """Validate a perturbation mask ``(B|1, 1|C, H, W)`` in ``[0, 1]``; returned on ``x``'s device/dtype."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.ndim == 3:
        mask = mask.unsqueeze(1) if mask.shape[0] == x.shape[0] and x.shape[0] != 1 else mask.unsqueeze(0)
    b, c, h, w = x.shape
    if (mask.ndim != 4 or mask.shape[0] not in (1, b) or mask.shape[1] not in (1, c)
            or tuple(mask.shape[2:]) != (h, w)):
        raise ValueError(f"mask must have shape (B, 1, H, W) or (B, C, H, W) matching x {tuple(x.shape)}, "
                         f"got {tuple(mask.shape)}")
    if not torch.isfinite(mask).all() or float(mask.min()) < 0.0 or float(mask.max()) > 1.0:
        raise ValueError("mask values must lie in [0, 1]")
    return mask.detach().to(device=x.device, dtype=x.dtype)


class Forward:
    """The callable :func:`attack_forward` yields: casts the input to the model's dtype, runs the
    (fast copy of the) model, refuses non-tensor outputs (:func:`as_logits`), warns once if the
    outputs look like probabilities, and returns float32 logits for half models.
    ``fast`` says whether it runs the fast copy (``False``: the model itself)."""

    def __init__(self, net: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype | None,
                 precision: str, fast: bool) -> None:
        self.net, self.dtype, self.precision, self.checked, self.fast = net, dtype, precision, False, fast

    def __call__(self, inp: torch.Tensor) -> torch.Tensor:
        if self.dtype is not None and inp.dtype != self.dtype:
            inp = inp.to(self.dtype)
        if self.precision == "bf16":
            with torch.autocast(device_type=inp.device.type, dtype=torch.bfloat16):
                out = as_logits(self.net(inp))
            out = out.float()
        else:
            out = as_logits(self.net(inp))
        if not self.checked:
            self.checked = True
            warn_if_probabilities(out)
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


@contextmanager
def attack_forward(model: nn.Module, x: torch.Tensor, precision: str = "fp32") -> Iterator[Forward]:
    """Guard ``model`` (eval, frozen, restored afterwards) and yield the callable to differentiate:
    the cached fast copy (:func:`~advviz.attacks._fast.fast_model`), with bf16 autocast if asked.

    The one place where attacks call the model, so the input contract is enforced here for all:
    inputs of another dtype than the model's (float64, float16) are cast to it (gradients flow
    back in the input's dtype); a tuple/dict output raises a ``TypeError`` saying to wrap the
    model; outputs that look like probabilities warn once per attack call; an input of a size the
    model cannot take, or a label outside its classes, gives one ``ValueError`` saying so
    (:func:`advviz._modules.forward_error`)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    with model_guard(model):
        dtype = model_dtype(model)
        probe = x if dtype is None or x.dtype == dtype else x.detach().to(dtype)
        net = fast_model(model, probe)
        try:
            yield Forward(net, dtype, precision, fast=net is not model)
        except (RuntimeError, IndexError) as exc:  # a wrong input size or label: say which (forward_error)
            err = forward_error(exc, model, x)
            if err is None:
                raise
            raise err from exc


# ---------------------------------------------------------------------------------------------
# attacks taking norm="linf"|"l2"
# ---------------------------------------------------------------------------------------------


def norm_name(norm: str) -> str:
    """``"linf"`` or ``"l2"`` from any capitalisation (``"Linf"``, ``"L2"``); anything else raises."""
    n = str(norm).lower()
    if n not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return n


def norm_eps(eps: float | None, norm: str, x: torch.Tensor) -> float:
    """The budget ``eps`` checked for ``norm`` (:func:`check_norm_budget`); ``None`` gives the
    norm's default (:data:`DEFAULT_EPS`)."""
    return check_norm_budget("eps", DEFAULT_EPS[norm] if eps is None else eps, norm, x)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """:func:`project_linf` or :func:`project_l2` by ``norm``."""
    return project_linf(x_adv, x, eps) if norm == "linf" else project_l2(x_adv, x, eps)


def per_image(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-image value ``v`` ``(B,)`` viewed as ``(B, 1, 1, 1)`` to broadcast against ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def refuse_targeted(name: str, targeted: bool) -> None:
    """One ``ValueError`` for ``targeted=True`` on an attack that picks its targets itself."""
    if targeted:
        raise ValueError(f"{name} is untargeted (it picks its target classes itself); for a given target "
                         "class use apgd_ce(..., targeted=True) or square(..., targeted=True)")
