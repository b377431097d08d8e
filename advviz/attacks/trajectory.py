"""Recording the iterations of the gradient attacks: :func:`record` -> :class:`Trajectory`.

The iterative attacks (FGSM/BIM/MI-FGSM/DI²-FGSM/PGD through ``gradient._iterate``, CFR, and APGD)
call :func:`current_recorder` once before their loop and, only when it returned a callable,
hand it each iterate ``x_adv`` after each step. Outside :func:`record` the recorder is ``None``:
an attack pays one context-variable lookup per call and one ``is not None`` test per step, and
its result is bit-identical (tested). A new iterative attack opts in with the same two lines.

:func:`record` runs a registered attack with a recorder installed, then evaluates every
iterate once, in one batched forward pass: the loss (the attack's cross-entropy to ``y``), the
margin (the logit of ``y`` minus the largest other logit: it crosses 0 where the prediction
flips), the prediction, and the ℓ∞ and ℓ2 distances to ``x``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advviz import metrics
from advviz.attacks._api import get, list_attacks

__all__ = ["Frame", "Trajectory", "record", "current_recorder", "recordable"]

Recorder = Callable[[torch.Tensor], None]
_RECORDER: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("advviz_attack_recorder", default=None)

#: Registered attacks whose loops report their iterates (APGD: every iterate of its run, from the
#: random start, stopping where the image is fooled).


def current_recorder() -> Recorder | None:
    """The recorder installed by :func:`record` (``None`` otherwise): call once, before an attack's loop."""
    return _RECORDER.get()


@dataclass(frozen=True)
class Frame:
    """One iteration of an attack on one image.

    Attributes:
        step: 1-based iteration number.
        x_adv: the iterate ``(C, H, W)`` in [0, 1] (CPU).
        loss: cross-entropy of the model's logits to ``y`` (the attack ascends it; a targeted
            attack descends the cross-entropy to its target).
        margin: logit of ``y`` minus the largest other logit (negative: ``y`` is no longer the prediction).
        prediction: the model's class for ``x_adv``.
        linf: ``max |x_adv - x|``. l2: ``||x_adv - x||_2``.
    """

    step: int
    x_adv: torch.Tensor
    loss: float
    margin: float
    prediction: int
    linf: float
    l2: float


@dataclass
class Trajectory:
    """An attack's iterates on one image, with the clean image and what each step did.

    Attributes:
        attack: registered attack name. params: the keyword arguments it got.
        x: the clean image ``(C, H, W)``. y: the label attacked (the target when ``targeted``).
        targeted: whether the attack moved towards ``y``.
        clean_prediction, clean_margin: the model on ``x``.
        frames: one :class:`Frame` per iteration, in order.
        x_adv: the attack's result ``(C, H, W)``.
    """

    attack: str
    params: dict[str, Any]
    x: torch.Tensor
    y: int
    targeted: bool
    clean_prediction: int
    clean_margin: float
    frames: list[Frame] = field(default_factory=list)
    x_adv: torch.Tensor | None = None

    @property
    def flip_step(self) -> int | None:
        """The first step whose prediction differs from ``y`` (reaches ``y`` when targeted); ``None`` if none."""
        for f in self.frames:
            if (f.prediction == self.y) if self.targeted else (f.prediction != self.y):
                return f.step
        return None


def recordable() -> list[str]:
    """The registered attacks whose iterates :func:`record` can follow (``AttackSpec.recordable``)."""
    return [n for n in list_attacks() if get(n).recordable]


def record(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor | int, **params: Any) -> Trajectory:
    """Run attack ``name`` on one image and keep every iteration.

    Args:
        name: a registered iterative attack (:func:`recordable`: its spec has ``recordable=True``).
        model: the classifier (``(B, C, H, W)`` in [0, 1] -> logits).
        x: one image, ``(C, H, W)`` or ``(1, C, H, W)``, in [0, 1].
        y: its label (the target when ``targeted=True``), an int or a ``(1,)`` tensor.
        **params: the attack's keyword arguments.

    Returns:
        The :class:`Trajectory` (frames on the CPU).

    Raises:
        ValueError: an attack without iterations to record, or more than one image.
    """
    spec = get(name)
    if not spec.recordable:
        raise ValueError(f"{name!r} has no iterations to record; record() takes {', '.join(recordable())}")
    xb = x.unsqueeze(0) if x.ndim == 3 else x
    if xb.ndim != 4 or xb.shape[0] != 1:
        raise ValueError(f"record() follows one image: give x as (C, H, W) or (1, C, H, W), got {tuple(x.shape)}")
    label = int(y.flatten()[0]) if isinstance(y, torch.Tensor) else int(y)
    yb = torch.tensor([label], device=xb.device)
    iterates: list[torch.Tensor] = []
    token = _RECORDER.set(lambda it: iterates.append(it.detach()[:1].to("cpu", copy=True)))
    try:
        x_adv = spec(model, xb, yb, **params)
    finally:
        _RECORDER.reset(token)
    xs = torch.cat([xb.detach().cpu()] + iterates).to(xb.device)
    logits = metrics.logits(model, xs)
    ys = torch.full((xs.shape[0],), label, dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits, ys, reduction="none")
    true = logits[:, label]
    other = logits.clone()
    other[:, label] = float("-inf")
    margin = true - other.max(1).values
    pred = logits.argmax(1)
    diff = (xs - xs[:1]).flatten(1)
    linf, l2 = diff.abs().max(1).values, diff.norm(dim=1)
    traj = Trajectory(attack=name, params=dict(params), x=xb[0].detach().cpu(), y=label,
                      targeted=bool(params.get("targeted", False)), clean_prediction=int(pred[0]),
                      clean_margin=float(margin[0]), x_adv=x_adv[0].detach().cpu())
    for i in range(1, xs.shape[0]):
        traj.frames.append(Frame(step=i, x_adv=iterates[i - 1][0], loss=float(loss[i]), margin=float(margin[i]),
                                 prediction=int(pred[i]), linf=float(linf[i]), l2=float(l2[i])))
    return traj
