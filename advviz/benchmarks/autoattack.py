"""``advviz bench autoattack``: advviz's AutoAttack beside torchattacks', same model, images and budget.

ResNet-20 (``resnet20_cifar10``) on CIFAR-10 test images it classifies correctly
(:func:`advviz.data.sample` with ``model=``; 100 by default, 16 with ``quick``), L-infinity
budgets 0.25/255 and 0.5/255 (0.5/255 only with ``quick``): at 8/255 the undefended network
has no robust point left and every implementation agrees trivially. For each budget, one run of:

* ``advviz.evaluate.autoattack(model, x, y, eps=eps, norm="Linf", version="standard", seed=seed)``;
* ``torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)``;
* torchattacks' own four attacks with the paper's parameters, chained the same way
  (``torchattacks.MultiAttack([APGD(steps=100, loss="ce"), APGDT(steps=100), FAB(steps=100,
  multi_targeted=True), Square(n_queries=5000)])``, each with ``n_restarts=1``, ``n_classes=10``
  and ``seed``): the like-for-like reference;
* a plain PGD-20 (advviz ``pgd``, alpha ``eps/4``, random start) as the floor AutoAttack must beat.

Why two torchattacks rows: ``torchattacks.AutoAttack`` (3.3.0) builds APGD, APGD-T and FAB-T
without a ``steps`` argument, so they run their class default of **10 iterations**, not the 100
of the paper (Croce & Hein 2020, Sec. 4) that advviz's ``standard`` version runs; Square gets its
5,000 queries in both. Its time therefore measures a tenth of the gradient work: ``ratio`` (its
seconds / advviz's) compares unequal work, ``ratio (same work)`` the like-for-like chain.

Rows give each one's robust accuracy and seconds and both time ratios (above 1, advviz is
faster). AutoAttack runs take minutes on a CPU, so each is timed once, after a warm-up that
builds advviz's fast model copy; all run in one process on the same images, one after the other.

Measured (``ADVVIZ_BENCH_THREADS=1 advviz -v bench autoattack --quick --n 32``: 32 correctly
classified JPEG CIFAR-10 test images, seed 0, eps 0.5/255, one thread, on the shared 2-core CPU
at load average 11-13): robust accuracy .312 for all three; advviz 164 s, torchattacks.AutoAttack
97 s (ratio 0.59x: a tenth of the gradient iterations), torchattacks' same-work chain 341 s
(ratio 2.08x). advviz's time is Square 73 s, FAB-T 50 s, APGD-T 35 s, APGD-CE 5 s on the
10 points left robust after APGD-CE: the work on robust points is fixed by the paper's budgets.

torchattacks is imported here only, lazily, and is needed only for this benchmark.
"""

from __future__ import annotations

import builtins
import logging
import time
from typing import Any

import torch

from advviz.attacks import pgd
from advviz.benchmarks._setup import resnet20_sample
from advviz.benchmarks.attacks import import_torchattacks
from advviz.evaluate import autoattack

__all__ = ["format", "run"]

log = logging.getLogger(__name__)


def _robust(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def _timed(fn: Any, dev: torch.device) -> tuple[Any, float]:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return out, time.perf_counter() - t0


def run(*, n: int | None = None, quick: bool = False, device: str = "cpu", seed: int = 0,
        eps: tuple[float, ...] | None = None, threads: int | None = None) -> list[dict[str, Any]]:
    """Run the side-by-side AutoAttack benchmark.

    Args:
        n: number of correctly classified images (default 100; 16 with ``quick``).
        quick: fewer images, one budget.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seeds the image sample and both AutoAttacks.
        eps: L-infinity budgets (default ``(0.25/255, 0.5/255)``; ``(0.5/255,)`` with ``quick``).
        threads: ``torch.set_num_threads`` for the run (restored afterwards); default
            ``$ADVVIZ_BENCH_THREADS`` if set.

    Returns:
        One dict per budget: ``eps, n, threads, advviz_robust, advviz_seconds, advviz_per_attack,
        torchattacks_robust, torchattacks_seconds, speedup, torchattacks_paper_robust,
        torchattacks_paper_seconds, speedup_paper, pgd20_robust, pgd20_seconds, flags``.
    """
    ta = import_torchattacks()

    n = n if n is not None else (16 if quick else 100)
    budgets = tuple(eps) if eps is not None else ((0.5 / 255,) if quick else (0.25 / 255, 0.5 / 255))
    with resnet20_sample(n=n, device=device, seed=seed, threads=threads) as (model, x, y, dev):
        pgd(model, x[:4], y[:4], eps=budgets[0], steps=1, seed=seed)  # warm-up: the fast copy, allocator
        rows = []
        for e in budgets:
            rep, t_adv = _timed(lambda: autoattack(model, x, y, eps=e, norm="Linf", version="standard", seed=seed), dev)
            attack = ta.AutoAttack(model, norm="Linf", eps=e, version="standard", n_classes=10, seed=seed)
            x_ta, t_ta = _timed(lambda: attack(x, y), dev)
            x_tp, t_tp = _timed(lambda: _torchattacks_paper(ta, model, e, seed)(x, y), dev)
            x_pgd, t_pgd = _timed(lambda: pgd(model, x, y, eps=e, alpha=e / 4, steps=20, random_start=True,
                                              seed=seed), dev)
            rows.append({"eps": e, "n": n, "threads": torch.get_num_threads(),
                         "advviz_robust": rep.robust_accuracy, "advviz_seconds": t_adv,
                         "advviz_per_attack": {k: {"seconds": v, "ran_on": rep.reached[k],
                                                   "broke": sum(1 for s in rep.per_sample if s == k)}
                                               for k, v in rep.seconds.items()},
                         "torchattacks_robust": _robust(model, x_ta, y), "torchattacks_seconds": t_ta,
                         "speedup": t_ta / t_adv, "torchattacks_paper_robust": _robust(model, x_tp, y),
                         "torchattacks_paper_seconds": t_tp, "speedup_paper": t_tp / t_adv,
                         "pgd20_robust": _robust(model, x_pgd, y), "pgd20_seconds": t_pgd,
                         "flags": rep.flags, "config": rep.config})
            log.info("eps %.4g: advviz %.3f (%.0f s), torchattacks %.3f (%.0f s), same work %.3f (%.0f s)", e,
                     rep.robust_accuracy, t_adv, rows[-1]["torchattacks_robust"], t_ta,
                     rows[-1]["torchattacks_paper_robust"], t_tp)
        return rows


def _torchattacks_paper(ta: Any, model: torch.nn.Module, eps: float, seed: int) -> Any:
    """torchattacks' APGD-CE, APGD-T, FAB-T and Square with the paper's iterations (100, 100, 100,
    5,000 queries), chained like ``torchattacks.AutoAttack`` (each on the points still robust)."""
    kw = {"norm": "Linf", "eps": eps, "seed": seed, "n_restarts": 1}
    return ta.MultiAttack([
        ta.APGD(model, steps=100, loss="ce", **kw),
        ta.APGDT(model, steps=100, n_classes=10, **kw),
        ta.FAB(model, steps=100, multi_targeted=True, n_classes=10, **kw),
        ta.Square(model, n_queries=5000, **kw),
    ])


def format(rows: list[dict[str, Any]]) -> str:
    """A text table of :func:`run`'s rows."""
    if not rows:
        return "no rows"
    head = ("eps", "advviz AA", "torchattacks AA", "t.a. same work", "PGD-20", "advviz s", "torchattacks s",
            "same work s", "ratio", "ratio (same work)")
    lines = [(f"{r['eps'] * 255:g}/255", f"{r['advviz_robust']:.3f}", f"{r['torchattacks_robust']:.3f}",
              f"{r['torchattacks_paper_robust']:.3f}" if "torchattacks_paper_robust" in r else "-",
              f"{r['pgd20_robust']:.3f}", f"{r['advviz_seconds']:.1f}", f"{r['torchattacks_seconds']:.1f}",
              f"{r['torchattacks_paper_seconds']:.1f}" if "torchattacks_paper_seconds" in r else "-",
              f"{r['speedup']:.2f}x", f"{r['speedup_paper']:.2f}x" if "speedup_paper" in r else "-") for r in rows]
    widths = [builtins.max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    r0 = rows[0]
    out = [f"AutoAttack (standard, Linf) robust accuracy: ResNet-20, {r0['n']} correctly classified CIFAR-10 test "
           f"images, {r0['threads']} thread(s), one timed run each",
           fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    out.append("ratio = torchattacks seconds / advviz seconds (above 1: advviz faster). torchattacks.AutoAttack "
               "runs APGD, APGD-T and FAB-T with 10 iterations (its classes' default), advviz and the same-work "
               "chain (torchattacks' attacks in MultiAttack) the paper's 100. PGD-20: alpha eps/4, random start "
               "(the floor AutoAttack should beat or match).")
    for r in rows:
        per = ", ".join(f"{k} {v['broke']}/{v['ran_on']} in {v['seconds']:.1f} s" for k, v in r["advviz_per_attack"].items())
        out.append(f"advviz at {r['eps'] * 255:g}/255: {per}")
        out += [f"  flag {f}" for f in r["flags"]]
    return "\n".join(out)
