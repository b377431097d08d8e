"""Per-dataset starting budgets for the attack controls (the explorer's defaults, not the attacks').

The attacks' own defaults are the CIFAR-10 conventions (ℓ∞ 8/255, ℓ2 0.5). On the digits and
MNIST (white strokes on black, which a 28x28 LeNet-5 reads robustly) those budgets change
little a class can see: PGD-10 at 8/255 fools LeNet-5 on 10% of the digits test images it
classifies correctly (200 images, seed 0), at 0.3 on all of them. The explorer therefore
starts each attack from the dataset's conventional budget instead (Madry et al. 2018 use ℓ∞
0.3 on MNIST; ℓ2 2.0 is the common MNIST ℓ2 radius), with the step size scaled by the same
factor so that the number of steps still reaches the ball's edge. The sliders keep the
attacks' ranges, widened when needed so that the budget is reachable.

Measured success rates are in DEVELOPERS.md ("The explorer's default budgets").
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["DATASET_BUDGETS", "budget_overrides", "widened_params"]

#: dataset -> threat model -> the budget ``eps`` the attack controls start from.
DATASET_BUDGETS: dict[str, dict[str, float]] = {
    "digits": {"linf": 0.3, "l2": 2.0},
    "mnist": {"linf": 0.3, "l2": 2.0},
}


def budget_overrides(spec: Any, dataset: str | None) -> dict[str, float]:
    """``{"eps": ..., "alpha": ...}`` for attack ``spec`` on ``dataset`` (empty: keep the attack's defaults).

    ``eps`` becomes the dataset's budget for the attack's norm; ``alpha`` (when the attack has
    one on the same scale) is scaled by the same factor as ``eps``.
    """
    budget = DATASET_BUDGETS.get(dataset or "", {}).get(spec.norm)
    if budget is None:
        return {}
    params = {p.name: p for p in spec.params}
    eps = params.get("eps")
    if eps is None or not isinstance(eps.default, (int, float)) or eps.default <= 0:
        return {}
    out = {"eps": budget}
    alpha = params.get("alpha")
    if alpha is not None and isinstance(alpha.default, (int, float)) and alpha.per255 == eps.per255:
        out["alpha"] = alpha.default * budget / eps.default
    return out


def widened_params(spec: Any, values: dict[str, Any]) -> list[Any]:
    """The attack's ParamSpecs, each slider's upper end raised to twice ``values`` when it would not reach it."""
    out = []
    for p in spec.params:
        v = values.get(p.name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and p.high is not None and v > p.high:
            high = min(2 * v, 1.0) if p.per255 else 2 * v
            p = dataclasses.replace(p, high=high)
        out.append(p)
    return out
