"""Sanity flags: signs that an evaluation is broken rather than a model robust.

Carlini et al. ("On Evaluating Adversarial Robustness", 2019, Sec. 5), Athalye, Carlini & Wagner
(2018), Croce & Hein (2020, Sec. 5, and the reference AutoAttack's ``checks.py``) and Tramer et
al. (2020) list the symptoms of gradient masking and of a weak evaluation. Each check here
returns ``None`` (nothing seen) or one line ``"<code>: <what was seen, what it means>; <what to
do>"``. A healthy model evaluated properly gets none. The codes, and the thresholds (choices,
recorded here):

* ``gradient-masking``: the input gradient of the logit margin ``max_{j!=y} z_j - z_y`` is zero
  or non-finite for more than :data:`GRAD_SHARE` (10%) of the correctly classified points
  (shattered gradients, e.g. a model that rounds its input). The margin rather than the
  cross-entropy: a very confident healthy model can underflow the cross-entropy's gradient to
  exactly zero, its margin gradient does not vanish (that case is ``saturated-softmax``).
* ``saturated-softmax``: the cross-entropy's input gradient is exactly zero (its softmax is
  one-hot in float32) on more than :data:`GRAD_SHARE` of the correctly classified points while
  their margin gradient is fine: logits so large (e.g. scaled by 1e4, or a temperature-trained
  network) that cross-entropy attacks (FGSM, PGD, APGD-CE) cannot move; a margin or DLR loss
  can (APGD-DLR, APGD-T). Carlini & Wagner 2017, Croce & Hein 2020 (the reference's
  zero-gradient check).
* ``probability-outputs``: every output row is non-negative and sums to 1 (within 1e-4): the
  model ends in a softmax, attack losses saturate; attack the logits.
* ``randomized``: two forward passes of the same images differ (:func:`randomized`): accuracies
  are samples; the evaluation then judges every point by :data:`JUDGE_DRAWS` draws (a point
  counts as correct only when all of them classify it correctly) and says to attack with EOT
  (Athalye et al. 2018).
* ``large-eps``: an L-infinity PGD at ``eps = 0.5`` (20 steps of 0.05, random start) on up to
  :data:`LARGE_EPS_POINTS` points leaves more than 10% of them correctly classified; at that
  budget any image can be turned into a grey one, so accuracy should be ~0 (Carlini et al. 2019).
  When ``saturated-softmax`` explains it the message says so instead of blaming masking.
* ``non-monotonic``: robust accuracy of one attack rises with a larger budget by more than one
  sample: the attack is not converging. (:func:`monotonic_flag` takes any grid where accuracy
  must not rise, e.g. ``{attack: {steps: accuracy}}`` with ``what="steps"``.)
* the steps check: every iterative attack (one with a ``steps``/``n_iter`` parameter; for the
  AutoAttack chain its first, APGD-CE) runs again with ``k`` and ``2k`` steps, same seeds, on
  the first :data:`STEPS_POINTS` correctly classified points. An attack with a ``best`` option
  runs with ``best=False`` there: with its best iterate the ``2k`` run contains the ``k`` run's
  iterates and could never do worse, so the check compares where the iterates end, which is
  what converging means (APGD keeps its own best point, and its checkpoints move with the
  iteration count, so its two runs differ anyway). ``2k`` steps leaving more than one of those
  points more robust raises ``non-monotonic`` (more steps did worse); ``2k`` steps breaking more
  than one point more raises ``not-converged`` (Carlini et al. 2019: run attacks to
  convergence).
* ``restarts``: the same attack from :data:`RESTARTS` random starts (its own ``n_restarts``
  where it has one, else other seeds) breaks more than one point more of those points than one
  start: one run is not converged (Croce & Hein 2020; Carlini et al. 2019).
* ``black-box-beats-white-box``: Square (gradient-free) breaks more than :data:`BLACKBOX_SHARE`
  (0.2 percentage points) of the whole set after the gradient attacks, the reference
  AutoAttack's threshold (``checks.check_square_sr``): their gradients are not informative
  (Carlini et al. 2019).
* ``few-classes``: the model has too few classes for an attack of the chain: the DLR loss
  needs 3 classes, the targeted DLR 4, and APGD-T/FAB-T at most ``K - 1`` targets; the message
  says what was skipped or cut (Croce & Hein 2020; the reference's ``check_n_classes``).
* ``budget``: an attack returned points outside its budget (those points are not counted).
* ``weak-adaptive``: an adaptive evaluation of a defense (``threat="adaptive"``) ran neither the
  AutoAttack entry nor APGD-CE together with a scale-invariant loss (APGD-DLR or APGD-T), each at
  least :data:`STRONG_ITERATIONS` iterations: its accuracy is what weaker attacks leave, an
  upper bound that defenses often owe to the attack (Tramer et al. 2020; Carlini et al. 2019,
  "use the strongest attack end to end").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advviz import metrics
from advviz._modules import model_logits
from advviz.attacks import pgd
from advviz.attacks._core import input_grad, logit_margin, model_guard

__all__ = [
    "BLACKBOX_SHARE",
    "GRAD_SHARE",
    "JUDGE_DRAWS",
    "LARGE_EPS",
    "LARGE_EPS_POINTS",
    "PROBE_POINTS",
    "RESTARTS",
    "STEPS_POINTS",
    "STRONG_ITERATIONS",
    "blackbox_flag",
    "budget_flag",
    "collect",
    "convergence_flag",
    "few_classes_flag",
    "gradient_flag",
    "gradient_ok",
    "large_eps_flag",
    "large_eps_robust",
    "monotonic_flag",
    "probability_flag",
    "probability_rows",
    "randomized",
    "randomized_flag",
    "saturated_flag",
    "transfer_flag",
    "weak_adaptive_flag",
]

GRAD_SHARE = 0.10
LARGE_EPS = 0.5
LARGE_EPS_POINTS = 16
STEPS_POINTS = 16
LARGE_EPS_SHARE = 0.10
#: Square's breaks, as a share of the whole set, above which black-box beats white-box: the
#: reference AutoAttack's ``alpha=.002`` (0.2 percentage points) in ``checks.check_square_sr``
BLACKBOX_SHARE = 0.002
PROB_ATOL = 1e-4
#: points the determinism probe (:func:`randomized`) looks at
PROBE_POINTS = 8
#: draws that judge each point of a randomized model (correct only if correct in all of them)
JUDGE_DRAWS = 10
#: random starts of the restarts check (the first one is the evaluation's own run)
RESTARTS = 3
#: the iterations an APGD run needs to count as a strong attack (``weak-adaptive``; Croce & Hein 2020's 100)
STRONG_ITERATIONS = 100


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


def randomized_flag(is_random: bool | None, draws: int) -> str | None:
    """Flag a model whose forward pass is random (:func:`randomized`); ``draws``: how each point was judged."""
    if not is_random:
        return None
    return (f"randomized: two forward passes of the same images give different outputs, so one attack and one "
            f"prediction are samples, not values (a rerun gives another number); each point was therefore judged "
            f"by {draws} draws and counts as correct only if all of them classify it correctly. Attack with EOT "
            "(logits averaged over draws: threat='adaptive' with eot_samples > 1, advviz evaluate --eot) and judge "
            "by the expectation or by repeated draws, never by one forward pass")


def gradient_ok(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "margin") -> torch.Tensor:
    """Per point ``(B,)`` bool: the loss's input gradient is finite and not all zero.

    The model is called under the model-call contract (:func:`~advviz._modules.model_logits`):
    ``x`` of another dtype (float64) is cast to the model's, the gradient flows back to ``x``.

    Args:
        model: the classifier.
        x: ``(B, C, H, W)`` images in ``[0, 1]``; y: labels ``(B,)``.
        loss: ``"margin"`` (the logit margin, which no logit scale saturates) or ``"ce"`` (the
            cross-entropy the usual attacks ascend; its gradient underflows to zero when the
            softmax is one-hot in float32).
    """
    if loss not in ("margin", "ce"):
        raise ValueError(f"loss must be 'margin' or 'ce', got {loss!r}")
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=x.device)

    def fn(z: torch.Tensor) -> torch.Tensor:
        return logit_margin(z, y) if loss == "margin" else F.cross_entropy(z, y, reduction="none")

    with model_guard(model):
        try:
            g, _ = input_grad(lambda t: model_logits(model, t), x, fn)
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


def saturated_flag(n_saturated: int, n: int) -> str | None:
    """Flag when more than :data:`GRAD_SHARE` of ``n`` correctly classified points have a zero
    cross-entropy gradient but a working margin gradient (``n_saturated`` of them)."""
    if n == 0 or n_saturated / n <= GRAD_SHARE:
        return None
    return (f"saturated-softmax: on {n_saturated} of {n} correctly classified points ({n_saturated / n:.0%}) the "
            "softmax is one-hot in float32, so the cross-entropy's input gradient is exactly zero while the logit "
            "margin's is not: the logits are so large (scaled logits, a high-temperature network) that cross-entropy "
            "attacks (FGSM, PGD, APGD-CE) cannot move and the model looks robust without being so. Attack with a "
            "loss that does not saturate: APGD-DLR or APGD-T (autoattack's standard version includes APGD-T), or a "
            "margin (CW) loss, or the logits before the temperature")


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


def large_eps_flag(n_robust: int, n: int, *, saturated: bool = False) -> str | None:
    """Flag when more than 10% of ``n`` points survive the ``eps = 0.5`` attack; ``saturated``: the
    ``saturated-softmax`` flag was raised too, which explains it (the attack ascends the cross-entropy)."""
    if n == 0 or n_robust / n <= LARGE_EPS_SHARE:
        return None
    head = (f"large-eps: {n_robust} of {n} points ({n_robust / n:.0%}) stay correctly classified under PGD at "
            f"L-inf eps={LARGE_EPS}, where any image can be made grey; ")
    if saturated:
        return head + ("the saturated softmax explains it (see saturated-softmax: this PGD ascends the "
                       "cross-entropy, whose gradient is zero there), not masking: judge the model with a margin or "
                       "DLR loss (APGD-DLR, APGD-T)")
    return head + ("the attack is not reaching the model (masked gradients, a non-differentiable or randomised "
                   "defense): use BPDA/EOT (threat='adaptive')")


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
                "adversarial); keep the best iterate (evaluation does: best=True, apgd_ce), use a smaller step or "
                "autoattack, and look for gradient masking")
    return (f"non-monotonic: a larger {what} did worse (" + "; ".join(bad) + "), so the attack is not "
            "converging; use more steps or restarts, or a stronger attack (autoattack)")


def convergence_flag(accuracy: Mapping[str, tuple[float, float]], n: int, *, what: str = "steps",
                     counts: tuple[int, int] = (1, RESTARTS)) -> str | None:
    """Flag when more work (``2k`` steps, or more random starts) breaks more than one point more.

    Args:
        accuracy: ``{label: (accuracy with the evaluation's work, accuracy with more)}``, on the
            same ``n`` points.
        n: number of points behind each accuracy.
        what: ``"steps"`` (``not-converged``) or ``"restarts"`` (``restarts``).
        counts: for the message, the work of the two runs (steps ``(k, 2k)`` are in the labels).
    """
    if what not in ("steps", "restarts"):
        raise ValueError(f"what must be 'steps' or 'restarts', got {what!r}")
    tol = 1.0 / max(n, 1) + 1e-9
    bad = [f"{label} {base:.3f} -> {more:.3f}" for label, (base, more) in accuracy.items() if more < base - tol]
    if not bad:
        return None
    if what == "steps":
        return ("not-converged: twice the steps broke more points (" + "; ".join(bad) + "), so the attack had not "
                "converged and the robust accuracy is too high; rerun with more steps (at least twice as many) until "
                "the number stops moving, or use autoattack")
    return (f"restarts: {counts[1]} random starts broke more points than {counts[0]} (" + "; ".join(bad) + "), so "
            "one run of the attack is not converged and its robust accuracy is too high; rerun with more restarts "
            "(n_restarts) or more steps, or use autoattack")


def blackbox_flag(n_square: int, n: int) -> str | None:
    """Flag when Square, run after the gradient attacks, broke more than :data:`BLACKBOX_SHARE`
    (0.2 percentage points) of all ``n`` points: the reference AutoAttack's rule."""
    if n == 0 or n_square / n <= BLACKBOX_SHARE:
        return None
    return (f"black-box-beats-white-box: Square (gradient-free) broke {n_square} of the {n} points ({n_square / n:.1%} "
            f"of the set, more than the reference's {BLACKBOX_SHARE:.1%}) after the gradient attacks had left them "
            "robust: the gradients are uninformative (masking); look for the cause, attack with BPDA/EOT or run "
            "Square with more queries and restarts, and do not trust the white-box numbers alone")


def few_classes_flag(n_classes: int, skipped: Sequence[str], cut: Mapping[str, tuple[int, int]]) -> str | None:
    """Flag attacks of a chain that do not fit ``n_classes`` classes.

    Args:
        n_classes: the model's number of outputs.
        skipped: attacks not run (their loss needs more classes).
        cut: ``{attack: (targets asked, targets run)}`` for target counts cut to ``n_classes - 1``.
    """
    if not skipped and not cut:
        return None
    parts = []
    if skipped:
        parts.append(f"{', '.join(skipped)} not run (the DLR loss needs at least 3 classes, the targeted DLR 4)")
    parts += [f"{name} asked for {asked} target classes, only {got} exist (run with {got})"
              for name, (asked, got) in cut.items()]
    return (f"few-classes: the model has {n_classes} classes: " + "; ".join(parts) + ". The evaluation rests on "
            "the attacks that remain, so it may be weaker than the standard one; if the model's softmax saturates, "
            "add an attack on the logit margin (FAB, or a CW-loss attack), which needs no third class")


def weak_adaptive_flag(iterations: Mapping[str, int]) -> str | None:
    """Flag an adaptive evaluation whose attacks lack the strong pair (see the module docstring).

    Args:
        iterations: the evaluation's attacks, ``{name: iterations it runs}`` (0 for a one-step or
            non-iterative attack); an ``"autoattack"`` entry is strong by itself.
    """
    if "autoattack" in iterations:
        return None

    def strong(name: str) -> bool:
        return iterations.get(name, 0) >= STRONG_ITERATIONS

    if strong("apgd_ce") and (strong("apgd_dlr") or strong("apgd_t")):
        return None
    return (f"weak-adaptive: this adaptive evaluation ran only {', '.join(iterations)}: without APGD-CE and a "
            f"scale-invariant loss (APGD-DLR or APGD-T), {STRONG_ITERATIONS} iterations each, its accuracy is what "
            "weaker attacks leave, which a defense can owe to the attack; run the default --attacks autoattack, or "
            "add apgd_ce,apgd_t (Tramer et al. 2020; Carlini et al. 2019)")


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
