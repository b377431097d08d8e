"""``advviz bench autoattack``: advviz's AutoAttack beside the reference AutoAttack and torchattacks'.

One process, the same model object, the same images and budget, one seed policy, for each budget:

* **advviz**: ``advviz.evaluate.autoattack(model, x, y, eps=eps, version="standard", seed=seed,
  checks=False)`` (the chain alone: APGD-CE, APGD-T, FAB-T, Square-5000, as the reference);
* **advviz, fast copy off**: the same inside ``advviz.attacks.fast_models(False)``: the model
  itself instead of advviz's BatchNorm-folded, channels-last copy (:mod:`advviz.attacks._fast`),
  which is what the reference gets;
* **reference**: Croce & Hein's code (``pyautoattack`` on PyPI, the ``autoattack`` package):
  ``AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device=...,
  verbose=False).run_standard_evaluation(x, y)``, on the model as given (no folded copy);
* **torchattacks**: ``torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
  n_classes=K, seed=seed)`` as shipped: it builds APGD, APGD-T and FAB-T without a ``steps``
  argument, so they run their class default of **10 iterations**, a tenth of the paper's 100
  (Croce & Hein 2020, Sec. 4): its time is not equal work and its ratio says so;
* **advviz with its checks**: ``checks=True`` (gradients, outputs, the large-eps attack, the
  steps and restarts checks on 16 points): what the sanity checks cost on top of the chain.

Seeds: every side gets ``seed`` (advviz seeds each call from ``(seed, indices)``, the reference
and torchattacks seed their attacks with it). Each side gets one warm-up first (a 2-iteration
APGD-CE on 2 images: imports, allocator, advviz's fast copy), then the sides run in turn,
``repeats`` rounds (3; interleaved, so that a change of load hits every side alike), and the
times are the medians. Robust accuracy is each side's first run, judged on the evaluated model
(the defended one with ``defense=``). Ratios are the other side's median seconds over advviz's
(above 1: advviz faster). The fast copy's factor is advviz-without-copy over advviz; its share
of the speed-up over the reference is ``log(copy factor) / log(speed-up)``.

``defense=`` puts a purifier in front (:func:`advviz.evaluate.threat_models`): advviz attacks the
``threat`` model (adaptive: BPDA/end to end) and judges on the defended model; the reference and
torchattacks attack the same attacked model (its forward is the defended model's for a
deterministic purifier) and are judged on the defended model too.

What measures the goals of the evaluation issue (the lead's command, on a quiet machine)::

    ADVVIZ_BENCH_THREADS=2 advviz bench autoattack --model resnet20_cifar10 --eps 0.25/255,0.5/255,1/255 --n 100
    ADVVIZ_BENCH_THREADS=2 advviz bench autoattack --model resnet20_cifar10_pgd_at_quick --eps 8/255 --n 100
    ADVVIZ_BENCH_THREADS=2 advviz bench autoattack --defense jpeg --eps 8/255 --n 100
    ADVVIZ_BENCH_THREADS=2 advviz bench autoattack --defense uddn --eps 8/255 --n 100

The reference and torchattacks are imported here only, inside :func:`run`, and are needed only
for this benchmark (``pip install 'advviz[dev]'``).
"""

from __future__ import annotations

import builtins
import importlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from advviz import attacks as A
from advviz import metrics
from advviz.benchmarks._setup import model_sample
from advviz.benchmarks.attacks import import_torchattacks
from advviz.evaluate import autoattack, threat_models

__all__ = ["format", "import_reference", "run", "SIDES"]

log = logging.getLogger(__name__)

#: the timed sides, in the order they run in each round
SIDES = ("advviz", "advviz_no_fast_copy", "reference", "torchattacks", "advviz_checks")


def _zero_gradients(x: Any) -> None:
    """``torch.autograd.gradcheck.zero_gradients``, removed from torch 1.9, which the reference's
    ``fab_pt.py`` (pyautoattack 0.2.0) still imports: zero ``x.grad`` in place (recursively)."""
    if isinstance(x, torch.Tensor):
        if x.grad is not None:
            x.grad.detach_()
            x.grad.zero_()
    elif isinstance(x, (list, tuple)):
        for item in x:
            _zero_gradients(item)


def import_reference() -> Any:
    """The reference AutoAttack (Croce & Hein's code, ``pyautoattack`` on PyPI), an optional dependency.

    pyautoattack 0.2.0 imports ``zero_gradients`` from ``torch.autograd.gradcheck``, which torch
    removed in 1.9; it is put back there (the same function) before the reference is imported."""
    gradcheck = importlib.import_module("torch.autograd.gradcheck")  # the module (the attribute is the function)
    if not hasattr(gradcheck, "zero_gradients"):
        gradcheck.zero_gradients = _zero_gradients  # type: ignore[attr-defined]
    try:
        import autoattack as reference
        import autoattack.autopgd_pt  # noqa: F401 - the submodules the warm-up and the tests use
        import autoattack.fab_pt  # noqa: F401
        import autoattack.square  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError(
            "the AutoAttack benchmark compares with the reference AutoAttack, which is not installed: "
            "pip install pyautoattack (or pip install 'advviz[dev]')") from exc
    return reference


def _timed(fn: Callable[[], Any], dev: torch.device) -> tuple[Any, float]:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return out, time.perf_counter() - t0


def _robust(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    return float((metrics.predictions(model, x_adv) == y).float().mean())


def run(*, n: int | None = None, quick: bool = False, device: str = "cpu", seed: int = 0,
        eps: Sequence[float] | None = None, threads: int | None = None, model: str = "resnet20_cifar10",
        defense: str | None = None, threat: str = "adaptive", repeats: int | None = None,
        sides: Sequence[str] = SIDES) -> list[dict[str, Any]]:
    """Run the side-by-side AutoAttack benchmark.

    Args:
        n: number of correctly classified test images (default 100; 8 with ``quick``).
        quick: fewer images, one budget, one round (the CI's size).
        device: ``"cpu"`` or ``"cuda"``.
        seed: seeds the image sample and every side's attacks.
        eps: L-infinity budgets (default ``(0.25/255, 0.5/255, 1/255)``; ``(0.5/255,)`` with ``quick``).
        threads: ``torch.set_num_threads`` for the run (restored afterwards); default
            ``$ADVVIZ_BENCH_THREADS`` if set.
        model: a pretrained entry (default ``resnet20_cifar10``).
        defense: a purifier in front of the model (:func:`advviz.defenses.list_purifiers`).
        threat: with ``defense``: ``"adaptive"`` (default) or ``"oblivious"``.
        repeats: rounds; the times are medians (default 3; 1 with ``quick``).
        sides: which of :data:`SIDES` to run (``"advviz"`` always runs).

    Returns:
        One dict per budget: ``eps, n, threads, repeats, model, defense, threat, robust {side:
        accuracy}, seconds {side: [each round]}, median {side: seconds}, ratio {side: its median /
        advviz's}, fast_copy {"factor", "share_of_speedup"}, advviz_per_attack, flags, config``.
    """
    unknown = set(sides) - set(SIDES)
    if unknown:
        raise ValueError(f"unknown sides {sorted(unknown)}; choose from {SIDES}")
    want = ["advviz", *(s for s in SIDES if s in sides and s != "advviz")]
    reference = import_reference() if "reference" in want else None
    ta = import_torchattacks() if "torchattacks" in want else None
    n = n if n is not None else (8 if quick else 100)
    repeats = int(repeats) if repeats is not None else (1 if quick else 3)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    budgets = tuple(eps) if eps is not None else ((0.5 / 255,) if quick else (0.25 / 255, 0.5 / 255, 1 / 255))

    def judge(m: torch.nn.Module) -> torch.nn.Module:
        return threat_models(m, defense, threat=threat)[1]

    with model_sample(model, n=n, device=device, seed=seed, threads=threads,
                      judge=judge if defense else None) as (net, x, y, dev):
        attacked, evaluated, threat_cfg = threat_models(net, defense, threat=threat)
        n_classes = int(metrics.logits(evaluated, x[:1]).shape[1])
        rows = []
        for e in budgets:
            calls = _sides(want, attacked, evaluated, x, y, eps=float(e), seed=seed, dev=dev, n_classes=n_classes,
                           reference=reference, ta=ta)
            _warm_up(want, attacked, x, y, eps=float(e), dev=dev, reference=reference, ta=ta)
            seconds: dict[str, list[float]] = {s: [] for s in want}
            robust: dict[str, float] = {}
            reports: dict[str, Any] = {}
            for r in range(repeats):
                for side in want:
                    out, t = _timed(calls[side], dev)
                    seconds[side].append(t)
                    if r == 0:
                        robust[side], reports[side] = out
                    log.info("eps %.4g round %d %s: %.1f s", e, r + 1, side, t)
            median = {s: statistics.median(v) for s, v in seconds.items()}
            ratio = {s: median[s] / median["advviz"] for s in want if s != "advviz"}
            fast: dict[str, float | None] = {"factor": ratio.get("advviz_no_fast_copy"), "share_of_speedup": None}
            if fast["factor"] and ratio.get("reference", 0) > 1 and fast["factor"] > 0:
                fast["share_of_speedup"] = math.log(fast["factor"]) / math.log(ratio["reference"])
            rep = reports["advviz"]
            rows.append({"eps": float(e), "n": n, "threads": torch.get_num_threads(), "repeats": repeats,
                         "model": model, "defense": defense, "threat": threat_cfg.get("threat"),
                         "robust": robust, "seconds": seconds, "median": median, "ratio": ratio, "fast_copy": fast,
                         "advviz_per_attack": {k: {"seconds": rep.seconds[k], "ran_on": rep.reached[k],
                                                   "broke": sum(1 for s in rep.per_sample if s == k)}
                                               for k in rep.reached},
                         "flags": reports.get("advviz_checks", rep).flags,
                         "checks_seconds": reports["advviz_checks"].seconds.get("checks")
                         if "advviz_checks" in reports else None,
                         "config": rep.config})
            log.info("eps %.4g: %s", e, {s: (robust[s], median[s]) for s in want})
        return rows


def _sides(want: Sequence[str], attacked: torch.nn.Module, evaluated: torch.nn.Module, x: torch.Tensor,
           y: torch.Tensor, *, eps: float, seed: int, dev: torch.device, n_classes: int, reference: Any,
           ta: Any) -> dict[str, Callable[[], tuple[float, Any]]]:
    """Each side as a call returning ``(robust accuracy on the evaluated model, its report or None)``."""
    def ours(checks: bool) -> tuple[float, Any]:
        rep = autoattack(evaluated, x, y, eps=eps, norm="Linf", version="standard", seed=seed,
                         attack_model=attacked, checks=checks)
        return rep.robust_accuracy, rep

    def ours_plain() -> tuple[float, Any]:
        with A.fast_models(False):
            return ours(False)

    def theirs() -> tuple[float, Any]:
        adversary = reference.AutoAttack(attacked, norm="Linf", eps=eps, version="standard", seed=seed,
                                         device=str(dev), verbose=False)
        return _robust(evaluated, adversary.run_standard_evaluation(x, y, bs=max(x.shape[0], 1)), y), None

    def torchattacks_shipped() -> tuple[float, Any]:
        attack = ta.AutoAttack(attacked, norm="Linf", eps=eps, version="standard", n_classes=n_classes, seed=seed)
        return _robust(evaluated, attack(x, y), y), None

    table = {"advviz": lambda: ours(False), "advviz_no_fast_copy": ours_plain, "reference": theirs,
             "torchattacks": torchattacks_shipped, "advviz_checks": lambda: ours(True)}
    return {s: table[s] for s in want}


def _warm_up(want: Sequence[str], attacked: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
             dev: torch.device, reference: Any, ta: Any) -> None:
    """One cheap call per side before any timing: a 2-iteration APGD-CE on 2 images."""
    x2, y2 = x[:2], y[:2]
    A.apgd_ce(attacked, x2, y2, eps=eps, n_iter=2)
    with A.fast_models(False):
        A.apgd_ce(attacked, x2, y2, eps=eps, n_iter=2)
    if reference is not None:
        reference.autopgd_pt.APGDAttack(attacked, n_iter=2, eps=eps, norm="Linf",
                                        device=str(dev)).perturb(x2, y2, cheap=True)
    if ta is not None:
        ta.APGD(attacked, norm="Linf", eps=eps, steps=2, n_restarts=1)(x2, y2)


def format(rows: list[dict[str, Any]]) -> str:  # noqa: A001 - the benchmark modules' interface
    """A text table of :func:`run`'s rows."""
    if not rows:
        return "no rows"
    names = {"advviz": "advviz", "advviz_no_fast_copy": "advviz, no fast copy", "reference": "reference AA",
             "torchattacks": "torchattacks AA (10 it.)", "advviz_checks": "advviz + checks"}
    r0 = rows[0]
    what = r0["model"] + (f" + {r0['defense']} ({r0['threat']})" if r0.get("defense") else "")
    out = [f"AutoAttack (standard, Linf): {what}, {r0['n']} correctly classified test images, {r0['threads']} "
           f"thread(s), median of {r0['repeats']} run(s) after a warm-up per side, one process"]
    head = ("eps", "side", "robust acc", "median s", "runs (s)", "ratio")
    lines = []
    for r in rows:
        for side in r["median"]:
            ratio = "1.00x" if side == "advviz" else f"{r['ratio'][side]:.2f}x"
            lines.append((f"{r['eps'] * 255:g}/255", names.get(side, side), f"{r['robust'][side]:.3f}",
                          f"{r['median'][side]:.1f}", " ".join(f"{t:.1f}" for t in r["seconds"][side]), ratio))
    widths = [builtins.max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out += [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*line) for line in lines]
    out.append("ratio = the side's median seconds / advviz's (above 1: advviz faster). advviz and the reference run "
               "the same work (APGD-CE, APGD-T with 9 targets and FAB-T at 100 iterations, Square 5,000 queries) on "
               "the same model object; advviz attacks its BatchNorm-folded channels-last copy, the reference the "
               "model itself ('no fast copy' is advviz without it). torchattacks' AutoAttack as shipped runs APGD, "
               "APGD-T and FAB-T at 10 iterations (its classes' default): a tenth of the gradient work. "
               "'+ checks' adds advviz's sanity checks (steps and restarts checks on 16 points).")
    for r in rows:
        per = ", ".join(f"{k} {v['broke']}/{v['ran_on']} in {v['seconds']:.1f} s" for k, v in r["advviz_per_attack"].items())
        out.append(f"advviz at {r['eps'] * 255:g}/255: {per}")
        fast = r["fast_copy"]
        if fast.get("factor"):
            share = (f", {fast['share_of_speedup']:.0%} of the speed-up over the reference"
                     if fast.get("share_of_speedup") is not None else "")
            out.append(f"  fast copy: {fast['factor']:.2f}x{share}")
        if r.get("checks_seconds") is not None:
            out.append(f"  checks: {r['checks_seconds']:.1f} s on top of the chain")
        out += [f"  flag {f}" for f in r["flags"]]
    return "\n".join(out)
