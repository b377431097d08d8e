"""Robustness evaluation to the field's standard.

* :func:`autoattack`: Croce & Hein's AutoAttack (APGD-CE, APGD-T, FAB-T, Square), each attack on
  the points still robust, with a :class:`Report` (per-sample breakers, sanity flags, config).
* :func:`robust_accuracy`: per-budget, per-attack robust accuracy over a dataset (the security
  curve), per-sample results by dataset index, progress, Ctrl-C and resume.
* :func:`threat_models`: oblivious and adaptive (BPDA, EOT) evaluation of a purifier defense,
  built on :func:`advviz.defenses.defended`; :func:`adaptive_attack`: the adaptive suite (APGD-CE,
  APGD-T, 100 iterations, end to end) and the transfer attack, per image the worst case.
* :mod:`advviz.evaluate.flags`: the sanity checklist (masked gradients, a saturated softmax,
  probability outputs, a randomized model, accuracy not reaching 0 at a large budget,
  non-monotonic curves, more steps or restarts breaking more points, black-box beating white-box
  at the reference's threshold, too few classes for DLR or targets, transfer beating white-box),
  each flag saying what it means and what to do.
"""

from advviz.evaluate.autoattack import VERSIONS, Report, autoattack, batch_seed, sample_seed
from advviz.evaluate.robust import Result, ResumeMismatchError, eps_key, robust_accuracy
from advviz.evaluate.threat import (
    ADAPTIVE_ATTACKS,
    THREATS,
    AdaptiveResult,
    adaptive_attack,
    format_breakers,
    threat_models,
)

__all__ = ["autoattack", "Report", "VERSIONS", "batch_seed", "sample_seed", "robust_accuracy", "Result",
           "ResumeMismatchError", "eps_key", "threat_models", "THREATS",
           "adaptive_attack", "AdaptiveResult", "ADAPTIVE_ATTACKS", "format_breakers"]
