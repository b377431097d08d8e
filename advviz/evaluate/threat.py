"""Threat models for evaluating a purifier defense (Athalye et al. 2018; Tramer et al. 2020).

A defense is evaluated as the classifier ``defended(model, purifier)``
(:func:`advviz.defenses.defended`); what differs is the model the attacker differentiates:

* ``"oblivious"``: the attacker does not know the purifier: attacks follow the bare model's
  gradients; success is judged on the defended model. A lower bound on what the defense faces.
* ``"adaptive"``: the attacker attacks the whole composition end to end. For a purifier that
  gradients cannot pass (JPEG: rounding, an external codec) the backward pass uses BPDA's
  identity (straight-through); for a randomised one ``eot_samples > 1`` averages the logits over
  draws (EOT). This is the evaluation to report (Tramer et al. 2020, "On Adaptive Attacks to
  Adversarial Example Defenses").
* ``"none"`` (no purifier): the bare model, white-box.

:func:`threat_models` returns ``(attack_model, eval_model, config)`` for
:func:`advviz.evaluate.autoattack` / :func:`advviz.evaluate.robust_accuracy`'s ``attack_model=``
and ``model``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from advviz.defenses import defended

__all__ = ["THREATS", "threat_models"]

THREATS = ("oblivious", "adaptive")


def threat_models(model: nn.Module, purifier: str | Callable[..., torch.Tensor] | None = None, *,
                  threat: str = "adaptive", params: Mapping[str, Any] | None = None, bpda: bool | None = None,
                  eot_samples: int = 1) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """The attacked and the evaluated model of a threat model.

    Args:
        model: the classifier.
        purifier: a registered purifier name, spec or callable; ``None``: no defense.
        threat: ``"oblivious"`` or ``"adaptive"`` (ignored without a purifier).
        params: the purifier's parameters.
        bpda: adaptive only: identity backward pass through the purifier (``None``: when the
            purifier is non-differentiable).
        eot_samples: adaptive only: logits averaged over this many purifier draws (EOT).

    Returns:
        ``(attack_model, eval_model, config)``.
    """
    if purifier is None:
        return model, model, {"threat": "white-box", "defense": None}
    if threat not in THREATS:
        raise ValueError(f"threat must be one of {THREATS}, got {threat!r}")
    evaluated = defended(model, purifier, params=params, bpda=False)
    if threat == "oblivious":
        return model, evaluated, {"threat": "oblivious", "defense": evaluated.config(),
                                  "attacked": "the bare model"}
    attacked = defended(model, purifier, params=params, bpda=bpda, eot_samples=eot_samples)
    return attacked, evaluated, {"threat": "adaptive", "defense": evaluated.config(),
                                 "attacked": attacked.config()}
