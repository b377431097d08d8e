"""Threat models for evaluating a defense, and the adaptive attack suite (Athalye et al. 2018;
Tramer et al. 2020; Croce & Hein 2020).

A defense is evaluated as the classifier ``defended(model, purifier)``
(:func:`advviz.defenses.defended`); what differs is the model the attacker differentiates:

* ``"oblivious"``: the attacker does not know the purifier: attacks follow the bare model's
  gradients; success is judged on the defended model. A lower bound on what the defense faces.
* ``"adaptive"``: the attacker attacks the whole composition end to end. For a purifier that
  gradients cannot pass (JPEG: rounding, an external codec) the backward pass uses BPDA's
  identity (straight-through); for a random defense the attacked model averages the logits over
  :data:`EOT_DRAWS` draws (EOT). Randomness is *detected* by
  :func:`advviz.evaluate.flags.randomized` (two forward passes of a probe batch), not assumed.
  This is the evaluation to report (Tramer et al. 2020, "On Adaptive Attacks to Adversarial
  Example Defenses").
* ``"none"`` (no purifier): the bare model, white-box (with EOT too when the model itself is random).

:func:`threat_models` returns ``(attack_model, eval_model, config)`` for
:func:`advviz.evaluate.autoattack` / :func:`advviz.evaluate.robust_accuracy`'s ``attack_model=``
and ``model``.

:func:`adaptive_attack` is the adaptive evaluation of one defense on a batch, the one every
"adaptive" number of advviz comes from (``reproduce purifier``, ``reproduce uddn``, the
distillation rows): the suite :data:`ADAPTIVE_ATTACKS` (APGD-CE then APGD-T, the gradient attacks of
the reference AutoAttack's standard version with its parameters: 100 iterations, one restart, 9
target classes for APGD-T), end to end through the defense, BPDA/EOT as above, each attack
on the points the previous ones left robust: :func:`advviz.evaluate.autoattack`), then the
*transfer* (oblivious) attack's images, if given, on the points still robust. A point's result is
the per-image worst case over the clean image, the adaptive attacks and the transfer attack, and
:attr:`AdaptiveResult.per_sample` names what broke it. APGD-T's targeted DLR loss is a ratio of
logit differences, invariant to the scale of the logits, so a defense whose softmax saturates
(defensive distillation: the cross-entropy's gradient underflows to zero) is attacked through its
logits all the same (Carlini & Wagner 2016; Croce & Hein 2020, Sec. 3.3). APGD-T rather than the
untargeted APGD-DLR: on a defensively distilled LeNet-5 (digits, eps 0.1, 64 images) APGD-DLR left
.250 where the transfer attack left .234, APGD-T .203 (measured; ``tests/test_threat.py``). When the transfer attack still breaks points the adaptive suite left
robust, the end-to-end gradients are uninformative: :func:`advviz.evaluate.flags.transfer_flag`
says so in the result's flags.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advviz import metrics
from advviz._modules import module_device
from advviz.attacks._core import project
from advviz.defenses import Defended, defended
from advviz.evaluate import flags as F
from advviz.evaluate.autoattack import autoattack

__all__ = ["ADAPTIVE_ATTACKS", "AdaptiveResult", "EOT_DRAWS", "THREATS", "adaptive_attack", "eot_draws",
           "format_breakers", "threat_models"]

THREATS = ("oblivious", "adaptive")

#: The adaptive suite, in order (AutoAttack's canonical parameter names): APGD on the cross-entropy,
#: then APGD-T on the targeted DLR loss (scale-invariant: it does not saturate) over the 9 most
#: likely other classes, 100 iterations and one restart each: the reference AutoAttack's standard
#: version without FAB-T and Square (Croce & Hein 2020). Quick configurations use fewer images,
#: never fewer iterations.
ADAPTIVE_ATTACKS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("apgd_ce", {"steps": 100, "restarts": 1}),
    ("apgd_t", {"steps": 100, "restarts": 1, "n_target_classes": 9}),
)

#: Draws the attacked model averages over when the defense is random (EOT). Athalye et al. 2018
#: average 10 to 30 transformations per gradient; 20 halves the variance of 10 at twice the cost.
EOT_DRAWS = 20

#: Images of the probe batch when the caller gives none (seeded uniform noise of the model's input size).
PROBE_IMAGES = 4

#: What a result's breaker is called when the transfer attack broke the point.
TRANSFER = "transfer"


def _probe_batch(model: nn.Module, probe: torch.Tensor | None) -> torch.Tensor:
    if probe is not None:
        return probe
    size = getattr(model, "input_size", None)
    if size is None:
        raise ValueError("cannot tell whether the defense is random: the model has no input_size; pass probe= "
                         "(a few (B, C, H, W) images in [0, 1]) or eot_samples= (1: no EOT)")
    gen = torch.Generator().manual_seed(0)
    return torch.rand((PROBE_IMAGES, *size), generator=gen).to(module_device(model))


def eot_draws(model: nn.Module, probe: torch.Tensor | None = None) -> int:
    """:data:`EOT_DRAWS` when ``model`` is random (:func:`advviz.evaluate.flags.randomized` on ``probe``), else 1.

    Args:
        model: the classifier as evaluated (a :class:`~advviz.defenses.Defended` for a defense).
        probe: ``(B, C, H, W)`` images in ``[0, 1]`` (default: :data:`PROBE_IMAGES` seeded uniform
            noise images of ``model.input_size``). The probe forks the random state: it draws
            nothing the caller would see.
    """
    return EOT_DRAWS if F.randomized(model, _probe_batch(model, probe)) else 1


def _identity(x: torch.Tensor) -> torch.Tensor:
    """The purifier of a defense that is its classifier alone (EOT over a random classifier)."""
    return x


def threat_models(model: nn.Module, purifier: str | Callable[..., torch.Tensor] | None = None, *,
                  threat: str = "adaptive", params: Mapping[str, Any] | None = None, bpda: bool | None = None,
                  eot_samples: int | None = None, probe: torch.Tensor | None = None
                  ) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """The attacked and the evaluated model of a threat model.

    Args:
        model: the classifier.
        purifier: a registered purifier name, spec or callable; ``None``: no purifier (the model
            alone, white-box).
        threat: ``"oblivious"`` or ``"adaptive"`` (ignored without a purifier).
        params: the purifier's parameters.
        bpda: adaptive only: identity backward pass through the purifier (``None``: when the
            purifier is non-differentiable).
        eot_samples: adaptive (and white-box) only: logits averaged over this many draws (EOT).
            ``None`` (default): :func:`eot_draws`, i.e. :data:`EOT_DRAWS` when the evaluated model
            is random on ``probe`` (:func:`advviz.evaluate.flags.randomized`), else 1.
        probe: ``(B, C, H, W)`` images in ``[0, 1]`` for the randomness probe (default: seeded
            noise of ``model.input_size``).

    Returns:
        ``(attack_model, eval_model, config)``; ``config["randomized"]`` says what the probe found
        and ``config["eot_samples"]`` the draws the attacked model averages.
    """
    if threat not in THREATS:
        raise ValueError(f"threat must be one of {THREATS}, got {threat!r}")
    if eot_samples is not None and (isinstance(eot_samples, bool) or int(eot_samples) != eot_samples
                                    or eot_samples < 1):
        raise ValueError(f"eot_samples must be a positive integer or None (detect), got {eot_samples!r}")
    evaluated: nn.Module = model if purifier is None else defended(model, purifier, params=params, bpda=False)
    random = F.randomized(evaluated, _probe_batch(evaluated, probe))
    draws = (EOT_DRAWS if random else 1) if eot_samples is None else int(eot_samples)
    found = {"randomized": random, "eot_samples": draws if threat == "adaptive" or purifier is None else 1,
             "eot_rule": "given" if eot_samples is not None else
             f"{EOT_DRAWS} when advviz.evaluate.flags.randomized finds the evaluated model random, else 1"}
    if purifier is None:
        attacked = model if draws == 1 else defended(model, _identity, eot_samples=draws)
        return attacked, model, {"threat": "white-box", "defense": None, **found}
    assert isinstance(evaluated, Defended)
    if threat == "oblivious":
        return model, evaluated, {"threat": "oblivious", "defense": evaluated.config(),
                                  "attacked": "the bare model", **found}
    attacked = defended(model, purifier, params=params, bpda=bpda, eot_samples=draws)
    return attacked, evaluated, {"threat": "adaptive", "defense": evaluated.config(),
                                 "attacked": attacked.config(), **found}


@dataclass
class AdaptiveResult:
    """The adaptive evaluation of one defense on a batch (:func:`adaptive_attack`).

    Attributes:
        per_sample: per image, what broke it: ``"clean"`` (misclassified to begin with), an
            attack of the suite (``"apgd_ce"``, ``"apgd_t"``...), ``"transfer"`` (the transfer
            attack, tried last), or ``None`` (robust to all).
        x_adv: ``(B, C, H, W)`` in ``[0, 1]``: per image, the input that broke it (the clean
            image where nothing did, or where it was misclassified to begin with).
        end_to_end: ``(B,)`` bool: robust to the adaptive suite alone (no transfer attack).
        transfer: ``(B,)`` bool, or ``None`` without a transfer attack: the transfer attack's
            image classified correctly by the defense (whatever the adaptive suite did).
        flags: sanity flags (:mod:`advviz.evaluate.flags`): the transfer flag, the attacks' budget
            flag and, with ``checks=True``, the gradient, probability and large-eps checks.
        config: eps, norm, seed, the attacks with the parameters each received (steps, restarts),
            BPDA and the EOT draws, whether the defense was found random, the transfer attack.
        seconds: wall time per stage (each attack, ``"transfer"``).
    """

    per_sample: list[str | None]
    x_adv: torch.Tensor
    end_to_end: torch.Tensor
    transfer: torch.Tensor | None
    flags: list[str]
    config: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.per_sample)

    @property
    def robust(self) -> torch.Tensor:
        """``(B,)`` bool: robust to everything (the per-image worst case)."""
        return torch.tensor([s is None for s in self.per_sample], dtype=torch.bool)

    @property
    def accuracy(self) -> float:
        """The per-image worst case over the clean image, the adaptive suite and the transfer attack."""
        return sum(s is None for s in self.per_sample) / self.n if self.n else float("nan")

    @property
    def end_to_end_accuracy(self) -> float:
        """The adaptive suite alone (and the clean image)."""
        return float(self.end_to_end.float().mean()) if self.n else float("nan")

    @property
    def transfer_accuracy(self) -> float | None:
        """The transfer attack alone (and the clean image), ``None`` without one."""
        return None if self.transfer is None else float(self.transfer.float().mean()) if self.n else float("nan")

    @property
    def breakers(self) -> dict[str, int]:
        """How many images each stage broke, in order, and ``"robust"``: the images none broke."""
        names = ["clean", *(a["attack"] for a in self.config["attacks"]),
                 *([TRANSFER] if self.transfer is not None else []), "robust"]
        return {k: sum(1 for s in self.per_sample if (s or "robust") == k) for k in names}

    def row(self) -> dict[str, Any]:
        """The keys every adaptive row of a result carries (accuracy, breakers, per-sample breakers, flags)."""
        return {"accuracy": self.accuracy, "end_to_end_accuracy": self.end_to_end_accuracy,
                "breakers": self.breakers, "per_sample": list(self.per_sample), "flags": list(self.flags)}


def adaptive_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                    purifier: str | Callable[..., torch.Tensor] | None = None, params: Mapping[str, Any] | None = None,
                    transfer: torch.Tensor | None = None, transfer_name: str = "the transfer attack",
                    attacks: Sequence[tuple[str, Mapping[str, Any]]] = ADAPTIVE_ATTACKS, norm: str = "Linf",
                    bpda: bool | None = None, eot_samples: int | None = None, seed: int = 0,
                    batch_size: int = 256, checks: bool = False) -> AdaptiveResult:
    """The adaptive evaluation of the defense ``model`` (behind ``purifier``) on ``(x, y)``.

    The defense is ``defended(model, purifier)``, or ``model`` alone for a defense that is its
    classifier (adversarial training, distillation). :func:`threat_models` gives the attacked
    model (end to end; BPDA where the purifier is not differentiable; EOT when the defense is
    found random on ``x``); every attack of ``attacks`` runs on it, each on the points still
    robust (:func:`advviz.evaluate.autoattack` with ``attacks=``, judged on the defense as
    deployed), then ``transfer``'s images are judged on the points still robust.

    Args:
        model: the classifier ``(B, C, H, W)`` in ``[0, 1]`` -> logits ``(B, K)``.
        x: clean images ``(B, C, H, W)`` in ``[0, 1]``; y: labels ``(B,)``.
        eps: the budget on the ``[0, 1]`` scale (``8/255``).
        purifier: a registered purifier name, spec or callable (``None``: no purifier).
        params: the purifier's parameters.
        transfer: ``(B, C, H, W)``: the transfer (oblivious) attack's images of ``x`` (made on
            another model, e.g. the undefended one) within the budget, or ``None``.
        transfer_name: what the transfer attack is, for the config.
        attacks: the suite (default :data:`ADAPTIVE_ATTACKS`); ``(name, params)`` pairs with
            AutoAttack's canonical parameter names (``steps``, ``restarts``...).
        norm: ``"Linf"`` or ``"L2"``.
        bpda, eot_samples: as :func:`threat_models` (``None``: BPDA when the purifier is not
            differentiable; EOT when the defense is found random).
        seed: seeds every attack (:func:`advviz.evaluate.batch_seed`).
        batch_size: images per attack call.
        checks: also run :func:`advviz.evaluate.autoattack`'s gradient, probability and large-eps checks.

    Returns:
        An :class:`AdaptiveResult`.

    Raises:
        ValueError: ``transfer`` is not one image per image of ``x``, or lies outside the budget.
    """
    attacked, evaluated, threat = threat_models(model, purifier, threat="adaptive", params=params, bpda=bpda,
                                                eot_samples=eot_samples, probe=x[:PROBE_IMAGES])
    nrm = str(norm).lower()
    if transfer is not None:
        if transfer.shape != x.shape:
            raise ValueError(f"transfer must hold one attacked image per image of x, shape {tuple(x.shape)}; "
                             f"got {tuple(transfer.shape)}")
        outside = ~torch.isclose(project(transfer, x, float(eps) * (1 + 1e-5) + 1e-6, nrm), transfer, rtol=0.0,
                                 atol=1e-6).flatten(1).all(1)
        if outside.any():
            raise ValueError(f"{int(outside.sum())} of the transfer attack's images lie outside the {norm} ball of "
                             f"radius eps={float(eps):.5g} around x (or outside [0, 1]): make them with the same "
                             "budget")
    plan = [(name, dict(p)) for name, p in attacks]
    rep = autoattack(evaluated, x, y, eps=eps, norm=norm, seed=seed, attacks=plan, batch_size=batch_size,
                     attack_model=attacked, checks=checks)
    per_sample = list(rep.per_sample)
    end_to_end = rep.robust.to(x.device)
    x_adv = rep.x_adv.clone()
    seconds = dict(rep.seconds)
    flags = list(rep.flags)
    transfer_ok = None
    if transfer is not None:
        t1 = time.perf_counter()
        correct_clean = torch.tensor([s != "clean" for s in per_sample], dtype=torch.bool, device=x.device)
        pred = metrics.predictions(evaluated, transfer.to(x.dtype), batch_size=batch_size)
        transfer_ok = correct_clean & (pred == y)
        only = 0
        for i in (~transfer_ok).nonzero().flatten().tolist():
            if per_sample[i] is None:
                per_sample[i] = TRANSFER
                x_adv[i] = transfer[i]
                only += 1
        seconds[TRANSFER] = time.perf_counter() - t1
        flags = F.collect([*flags, F.transfer_flag(only, len(per_sample))])
    config = {"threat": threat, "eps": rep.config["eps"], "norm": rep.config["norm"], "seed": int(seed),
              "attacks": rep.config["attacks"], "bpda": attacked.bpda if isinstance(attacked, Defended) else False,
              "eot_samples": threat["eot_samples"], "randomized": threat["randomized"],
              "order": "each attack on the points the previous ones left robust; the transfer attack last",
              "accuracy": "per image, the worst case over the clean image, the attacks and the transfer attack",
              "transfer": transfer_name if transfer is not None else None, "batch_size": int(batch_size)}
    return AdaptiveResult(per_sample=per_sample, x_adv=x_adv, end_to_end=end_to_end, transfer=transfer_ok,
                          flags=flags, config=config, seconds=seconds)


def format_breakers(rows: Sequence[Mapping[str, Any]], *, label: Callable[[Mapping[str, Any]], str]) -> str:
    """Text lines (each starting with a newline) for the rows that carry ``breakers``
    (:meth:`AdaptiveResult.row`): per row, how many images each stage broke, and its flags.

    Args:
        rows: a result's rows; those without ``breakers`` are skipped.
        label: the row's name in the lines, e.g. ``lambda r: r["defense"]``.
    """
    lines = []
    for r in rows:
        if r.get("breakers"):
            counts = ", ".join(f"{k} {v}" for k, v in r["breakers"].items())
            lines.append(f"  {label(r)}: {counts}")
            lines += [f"    flag {f}" for f in r.get("flags") or []]
    if not lines:
        return ""
    return "\nadaptive rows, images broken by each stage (clean: misclassified to begin with):\n" + "\n".join(lines)
