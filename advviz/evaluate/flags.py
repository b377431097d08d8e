"""Sanity flags: signs that an evaluation is broken rather than a model robust.

Carlini et al. ("On Evaluating Adversarial Robustness", 2019, Sec. 5) and Croce & Hein (2020,
Sec. 5) list the symptoms of gradient masking and of a weak evaluation. Each check here returns
``None`` (nothing seen) or one line ``"<code>: <what was seen, what it means>; <what to do>"``.
A healthy model evaluated properly gets none. The thresholds are choices, recorded here:

* ``gradient-masking``: the input gradient of the logit margin ``max_{j!=y} z_j - z_y`` is zero
  or non-finite for more than :data:`GRAD_SHARE` (10%) of the correctly classified points
  (shattered gradients, e.g. a model that rounds its input). The margin rather than the
  cross-entropy: a very confident healthy model can underflow the cross-entropy's gradient to
  exactly zero, its margin gradient does not vanish.
* ``probability-outputs``: every output row is non-negative and sums to 1 (within 1e-4): the
  model ends in a softmax, attack losses saturate; attack the logits.
* ``large-eps``: an L-infinity PGD at ``eps = 0.5`` (20 steps of 0.05, random start) on up to
  :data:`LARGE_EPS_POINTS` points leaves more than 10% of them correctly classified; at that
  budget any image can be turned into a grey one, so accuracy should be ~0.
* ``non-monotonic``: robust accuracy of one attack rises with a larger budget by more than one
  sample: the attack is not converging. (:func:`monotonic_flag` takes any grid where accuracy
  must not rise, e.g. ``{attack: {steps: accuracy}}`` with ``what="steps"``.)
  :func:`advviz.evaluate.robust_accuracy` also runs every iterative attack (one with a
  ``steps``/``n_iter`` parameter) with ``k`` and ``2k`` steps, same seeds, on the first
  :data:`STEPS_POINTS` correctly classified points of the selection at every budget, and raises
  this flag when ``2k`` steps leave more than one of those points more robust than ``k`` steps
  (the same random start then only differs by the extra steps, so this is no sampling noise).
* ``black-box-beats-white-box``: Square (gradient-free) breaks more than 10% (and at least 2)
  of the points the gradient attacks left robust: their gradients are not informative.
* ``budget``: an attack returned points outside its budget (those points are not counted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from advviz import metrics
from advviz._modules import model_logits
from advviz.attacks import pgd
from advviz.attacks._core import input_grad, logit_margin, model_guard

__all__ = [
    "GRAD_SHARE",
    "LARGE_EPS",
    "LARGE_EPS_POINTS",
    "STEPS_POINTS",
    "blackbox_flag",
    "budget_flag",
    "collect",
    "gradient_flag",
    "gradient_ok",
    "large_eps_flag",
    "large_eps_robust",
    "monotonic_flag",
    "probability_flag",
    "probability_rows",
    "randomized",
    "transfer_flag",
]

GRAD_SHARE = 0.10
LARGE_EPS = 0.5
LARGE_EPS_POINTS = 16
STEPS_POINTS = 16
LARGE_EPS_SHARE = 0.10
BLACKBOX_SHARE = 0.10
PROB_ATOL = 1e-4


def randomized(model: nn.Module, x: torch.Tensor, *, draws: int = 2, atol: float = 0.0) -> bool:
    """The determinism probe: ``True`` when ``draws`` forward passes of the same batch differ.

    A model (or a defense) that draws random numbers in its forward pass (random resizing, noise,
    dropout left on, a stochastic purifier) gives another output each time; attacks on it and
    accuracies measured once are then samples, not values (Athalye, Carlini & Wagner 2018, EOT).
    The passes run in eval mode (:func:`advviz.metrics.logits`), so dropout and batch statistics do
    not count; the global random state is forked, so probing draws nothing the caller would see.

    Args:
        model: the classifier (or defended classifier) as evaluated.
        x: ``(B, C, H, W)`` images in ``[0, 1]``, a few are enough.
        draws: forward passes to compare (at least 2).
        atol: largest absolute difference of the logits still taken as equal.

    Returns:
        Whether any two passes differ by more than ``atol``.
    """
    if draws < 2:
        raise ValueError(f"draws must be at least 2, got {draws}")
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        first = metrics.logits(model, x)
        return any(not torch.allclose(metrics.logits(model, x), first, rtol=0.0, atol=atol) for _ in range(draws - 1))


def gradient_ok(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per point ``(B,)`` bool: the margin's input gradient is finite and not all zero.

    The model is called under the model-call contract (:func:`~advviz._modules.model_logits`):
    ``x`` of another dtype (float64) is cast to the model's, the gradient flows back to ``x``."""
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=x.device)
    with model_guard(model):
        try:
            g, _ = input_grad(lambda t: model_logits(model, t), x, lambda z: logit_margin(z, y))
        except RuntimeError as exc:  # no graph at all: the output does not depend on x differentiably
            if "does not require grad" not in str(exc) and "not have been used in the graph" not in str(exc):
                raise
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    flat = g.flatten(1)
    return torch.isfinite(flat).all(1) & (flat != 0).any(1)


def gradient_flag(n_bad: int, n: int) -> str | None:
    """Flag when more than :data:`GRAD_SHARE` of ``n`` points have zero/NaN gradients."""
    if n == 0 or n_bad / n <= GRAD_SHARE:
        return None
    return (f"gradient-masking: the input gradient is zero or NaN on {n_bad} of {n} points ({n_bad / n:.0%}), "
            "a sign of shattered or masked gradients (e.g. input quantisation) that makes gradient attacks fail; "
            "attack through a differentiable approximation (BPDA, threat='adaptive') and trust Square's result")


def probability_rows(logits: torch.Tensor) -> torch.Tensor:
    """Per row ``(B,)`` bool: non-negative entries summing to 1 (a softmax output)."""
    return (logits >= 0).all(1) & ((logits.sum(1) - 1).abs() <= PROB_ATOL)


def probability_flag(n_prob: int, n: int) -> str | None:
    """Flag when every one of ``n`` output rows is a probability vector."""
    if n == 0 or n_prob < n:
        return None
    return ("probability-outputs: the model returns probabilities (rows >= 0 summing to 1), not logits, so "
            "cross-entropy and margin losses saturate and attacks look weaker than they are; "
            "remove the final softmax and evaluate the logits")


def large_eps_robust(attack_model: nn.Module, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     seed: int = 0) -> torch.Tensor:
    """Per point ``(B,)`` bool: still correct after PGD-20 L-inf at ``eps = 0.5`` (alpha 0.05, random start)."""
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=x.device)
    x_adv = pgd(attack_model, x, y, eps=LARGE_EPS, alpha=LARGE_EPS / 10, steps=20, random_start=True, seed=seed)
    return metrics.predictions(model, x_adv, batch_size=max(x_adv.shape[0], 1)) == y


def large_eps_flag(n_robust: int, n: int) -> str | None:
    """Flag when more than 10% of ``n`` points survive the ``eps = 0.5`` attack."""
    if n == 0 or n_robust / n <= LARGE_EPS_SHARE:
        return None
    return (f"large-eps: {n_robust} of {n} points ({n_robust / n:.0%}) stay correctly classified under PGD at "
            f"L-inf eps={LARGE_EPS}, where any image can be made grey; the attack is not reaching the model "
            "(masked gradients, a non-differentiable or randomised defense): use BPDA/EOT (threat='adaptive')")


def monotonic_flag(accuracy: Mapping[str, Mapping[float, float]], n: int, *, what: str = "eps") -> str | None:
    """Flag when an attack's accuracy rises with the budget (or steps) by more than one sample.

    Args:
        accuracy: ``{attack: {eps: accuracy}}`` (or ``{attack: {steps: accuracy}}``).
        n: number of points behind each accuracy.
        what: the grid's name for the message (``"eps"`` or ``"steps"``).
    """
    bad = []
    tol = 1.0 / max(n, 1) + 1e-9
    for attack, by_eps in accuracy.items():
        eps_sorted = sorted(by_eps)
        for lo, hi in zip(eps_sorted, eps_sorted[1:]):
            if by_eps[hi] > by_eps[lo] + tol:
                bad.append(f"{attack} {by_eps[lo]:.3f} at {what}={lo:.5g} -> {by_eps[hi]:.3f} at {what}={hi:.5g}")
    if not bad:
        return None
    if what == "steps":
        return ("non-monotonic: more steps did worse (" + "; ".join(bad) + "), so the attack's iterates do not "
                "converge (misleading gradients, or a step size too large for the last iterate to stay "
                "adversarial); use an attack that keeps its best iterate (apgd_ce) or autoattack, and look for "
                "gradient masking")
    return (f"non-monotonic: a larger {what} did worse (" + "; ".join(bad) + "), so the attack is not "
            "converging; use more steps or restarts, or a stronger attack (autoattack)")


def blackbox_flag(n_square: int, n_reached: int) -> str | None:
    """Flag when Square breaks more than 10% (and at least 2) of the ``n_reached`` points it was run on."""
    if n_reached == 0 or n_square < 2 or n_square / n_reached <= BLACKBOX_SHARE:
        return None
    return (f"black-box-beats-white-box: Square broke {n_square} of the {n_reached} points the gradient attacks "
            f"left robust ({n_square / n_reached:.0%}): the gradients are uninformative (masking); "
            "look for the cause, attack with BPDA/EOT, and do not trust the white-box numbers alone")


def budget_flag(counts: Mapping[str, int]) -> str | None:
    """Flag attacks that returned points outside their budget (``{attack: count}``)."""
    bad = {k: v for k, v in counts.items() if v}
    if not bad:
        return None
    return ("budget: " + ", ".join(f"{k} returned {v} point(s) outside the budget" for k, v in bad.items())
            + " (not counted as broken); this is an attack bug, report it")


def collect(flags: Sequence[str | None]) -> list[str]:
    """The non-empty flags, in order."""
    return [f for f in flags if f]


def transfer_flag(n_transfer_only: int, n: int, *, what: str = "adaptive") -> str | None:
    """Flag when the transfer (oblivious) attack breaks points the ``what`` (white-box / adaptive)
    attacks left robust: more than 0.2 percentage points (a share of 0.002) of the ``n`` points
    and at least 1, the reference AutoAttack's threshold for its black-box check.

    An attack made on another model (or on the bare model, ignoring the defense) has no access to
    the defended model's gradients; when it does better, the end-to-end gradients are
    uninformative (Carlini et al. 2019, Sec. 5; Tramer et al. 2020): masked (a non-differentiable
    step attacked without BPDA), saturated (a softmax whose cross-entropy gradient underflows, as
    after defensive distillation) or random (a defense evaluated once, attacked without EOT).

    Args:
        n_transfer_only: points the transfer attack broke and the ``what`` attacks did not.
        n: all the points of the evaluation.
        what: the attacks' name for the message.
    """
    if n == 0 or n_transfer_only < 1 or n_transfer_only / n <= 0.002:
        return None
    return (f"transfer-beats-{what.replace(' ', '-')}: the transfer (oblivious) attack broke {n_transfer_only} of "
            f"{n} points ({n_transfer_only / n:.1%}) the {what} attacks left robust, so the end-to-end gradients "
            "are uninformative (masked, saturated or random); attack with a loss that does not saturate (DLR, "
            "margin: apgd_dlr, apgd_t), BPDA through non-differentiable steps and EOT over random ones, and "
            "report the per-image worst case")
