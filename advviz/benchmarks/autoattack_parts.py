"""``advviz bench autoattack-parts``: AutoAttack's four attacks in advviz beside torchattacks' versions,
each on the whole sample (``advviz bench autoattack`` compares the whole ensembles).

ResNet-20 (``resnet20_cifar10``) on CIFAR-10 test images it classifies correctly
(:func:`advviz.data.sample` with ``model=``; 100 by default, 32 with ``quick``), L-inf budgets
0.5/255 and 1/255 (``quick``: 1/255 only). Each attack runs once per library on the whole sample
with AutoAttack's standard parameters: APGD-CE (100 iterations, 1 restart), APGD-T (100
iterations, 9 target classes), FAB-T (100 iterations, 9 targets), Square (5,000 queries,
``p_init`` 0.8); ``quick`` divides iterations and queries by 10. Rows give the robust accuracy
(the fraction still classified correctly) and the wall time of each.

Measured (100 images, seed 0, CPU shared with other jobs, one thread, advviz then torchattacks;
robust accuracy, seconds): 1/255: APGD-CE .010/.010 (51/74 s), APGD-T .010/.010 (71/96 s),
FAB-T .040/.030 (121/179 s), Square .320/.290 (509/305 s); 0.5/255: APGD-CE .370/.370 (18/21 s),
APGD-T .360/.360 (51/59 s), FAB-T .360/.360 (75/158 s), Square .700/.710 (231/241 s). The
machine's load changed during the run (load average 13 to 3), so compare times within a row only.

torchattacks is imported here only, lazily, and is needed only for this benchmark.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from advviz import attacks as A
from advviz.benchmarks._setup import resnet20_sample
from advviz.benchmarks.attacks import import_torchattacks

__all__ = ["format", "run"]

log = logging.getLogger(__name__)


def _cases(ta: Any, model: torch.nn.Module, eps: float, seed: int, scale: int) -> list[dict[str, Any]]:
    it, nq = 100 // scale, 5000 // scale
    return [
        {"attack": "APGD-CE", "params": f"n_iter={it}",
         "advviz": lambda x, y: A.apgd_ce(model, x, y, eps=eps, n_iter=it, seed=seed),
         "ta": ta.APGD(model, norm="Linf", eps=eps, steps=it, n_restarts=1, loss="ce", seed=seed)},
        {"attack": "APGD-T", "params": f"n_iter={it} 9 targets",
         "advviz": lambda x, y: A.apgd_t(model, x, y, eps=eps, n_iter=it, n_target_classes=9, seed=seed),
         "ta": ta.APGDT(model, norm="Linf", eps=eps, steps=it, n_restarts=1, n_classes=10, seed=seed)},
        {"attack": "FAB-T", "params": f"n_iter={it} 9 targets",
         "advviz": lambda x, y: A.fab(model, x, y, eps=eps, n_iter=it, n_target_classes=9, seed=seed),
         "ta": ta.FAB(model, norm="Linf", eps=eps, steps=it, n_restarts=1, multi_targeted=True, n_classes=10,
                      seed=seed)},
        {"attack": "Square", "params": f"n_queries={nq}",
         "advviz": lambda x, y: A.square(model, x, y, eps=eps, n_queries=nq, seed=seed),
         "ta": ta.Square(model, norm="Linf", eps=eps, n_queries=nq, n_restarts=1, seed=seed)},
    ]


def run(*, n: int | None = None, quick: bool = False, device: str = "cpu", seed: int = 0,
        only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the side-by-side comparison.

    Args:
        n: number of images (default 100; 32 with ``quick``).
        quick: fewer images, one budget, a tenth of the iterations and queries.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seeds the image sample and both libraries' random draws.
        only: restrict to these attack names (``APGD-CE``, ``APGD-T``, ``FAB-T``, ``Square``).

    Returns:
        One dict per budget and attack: ``attack, params, eps, n, advviz_robust, torchattacks_robust,
        advviz_s, torchattacks_s, advviz_linf``.
    """
    ta = import_torchattacks()
    n = n if n is not None else (32 if quick else 100)
    with resnet20_sample(n=n, device=device, seed=seed) as (model, x, y, _dev):
        return _run(ta, model, x, y, n=n, quick=quick, seed=seed, only=only)


def _run(ta: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, n: int, quick: bool, seed: int,
         only: list[str] | None) -> list[dict[str, Any]]:
    def robust(x_adv: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == y).float().mean())

    rows = []
    for eps in ((1 / 255,) if quick else (0.5 / 255, 1 / 255)):
        for case in _cases(ta, model, eps, seed, 10 if quick else 1):
            if only and case["attack"] not in only:
                continue
            t = time.perf_counter()
            ours = case["advviz"](x, y)
            t_ours = time.perf_counter() - t
            t = time.perf_counter()
            theirs = case["ta"](x, y)
            t_theirs = time.perf_counter() - t
            rows.append({"attack": case["attack"], "params": case["params"], "eps": eps, "n": n,
                         "advviz_robust": robust(ours), "torchattacks_robust": robust(theirs),
                         "advviz_s": t_ours, "torchattacks_s": t_theirs,
                         "advviz_linf": float((ours - x).abs().max())})
            log.info("%s", rows[-1])
    return rows


def format(rows: list[dict[str, Any]]) -> str:  # noqa: A001 - the benchmark modules' interface
    """A plain-text table of :func:`run`'s rows."""
    head = f"{'attack':9} {'eps':>8} {'n':>4} {'advviz':>7} {'t.attacks':>9} {'advviz s':>9} {'t.a. s':>8}"
    lines = ["robust accuracy, ResNet-20, JPEG CIFAR-10 test images classified correctly", head]
    for r in rows:
        eps = f"{r['eps'] * 255:g}/255"
        lines.append(f"{r['attack']:9} {eps:>8} {r['n']:>4} {r['advviz_robust']:7.3f} {r['torchattacks_robust']:9.3f}"
                     f" {r['advviz_s']:9.1f} {r['torchattacks_s']:8.1f}")
    return "\n".join(lines)
