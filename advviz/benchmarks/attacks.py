"""``advviz bench attacks``: advviz's attacks beside torchattacks, same model, images and seeds.

ResNet-20 (``resnet20_cifar10``) on CIFAR-10 test images it classifies correctly
(:func:`advviz.data.sample` with ``model=``; 256 by default, 64 with ``quick``). For each attack
both libraries run with the same parameters in one process, alternating which goes first, after
a warm-up of both; the reported time is the median of the repeats (3; 2 with ``quick``; one
timed run for C&W and DeepFool, which take minutes). Rows
give images/s for both, their ratio (advviz / torchattacks), both attack success rates
(:func:`advviz.metrics.asr`) and, for the minimal-perturbation attacks, the mean L2 over the
successful images.

Parameters matching between the libraries: FGSM eps 8/255; PGD-10 L-inf eps 8/255, alpha 2/255,
random start (both seeded with ``seed``); PGD-10 L2 eps 0.5, alpha 0.1; MI-FGSM eps 8/255, alpha
2/255, 10 steps, decay 1.0; C&W c=1, kappa=0, 100 steps, lr 0.01, and ``binary_steps=1`` for
advviz since torchattacks' CW has no binary search over c; DeepFool 50 steps, overshoot 0.02,
all 10 classes.

torchattacks is imported here only, lazily, and is needed only for this benchmark.
"""

from __future__ import annotations

import builtins
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from advviz import attacks as A
from advviz import metrics
from advviz.benchmarks._setup import resnet20_sample

__all__ = ["format", "run", "import_torchattacks"]

log = logging.getLogger(__name__)


def import_torchattacks() -> Any:
    try:
        import torchattacks
    except ImportError as exc:
        raise ModuleNotFoundError(
            "the attack benchmark compares with torchattacks, which is not installed: "
            "pip install torchattacks (or pip install 'advviz[dev]')") from exc
    return torchattacks


def _cases(ta: Any, model: torch.nn.Module, seed: int) -> list[dict[str, Any]]:
    def seeded(attack: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def call(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            torch.manual_seed(seed)  # torchattacks draws its random start from the global generator
            return attack(x, y)
        return call

    e8, a2 = 8 / 255, 2 / 255
    return [
        {"attack": "FGSM", "params": "eps=8/255", "minimal": False,
             "advviz": lambda x, y: A.fgsm(model, x, y, eps=e8, seed=seed),
             "ta": seeded(ta.FGSM(model, eps=e8))},
        {"attack": "PGD-10 Linf", "params": "eps=8/255 alpha=2/255 random start", "minimal": False,
             "advviz": lambda x, y: A.pgd(model, x, y, eps=e8, alpha=a2, steps=10, random_start=True, seed=seed),
             "ta": seeded(ta.PGD(model, eps=e8, alpha=a2, steps=10, random_start=True))},
        {"attack": "PGD-10 L2", "params": "eps=0.5 alpha=0.1 random start", "minimal": False,
             "advviz": lambda x, y: A.pgd(model, x, y, norm="l2", eps=0.5, alpha=0.1, steps=10, random_start=True,
                                       seed=seed),
             "ta": seeded(ta.PGDL2(model, eps=0.5, alpha=0.1, steps=10, random_start=True))},
        {"attack": "MI-FGSM", "params": "eps=8/255 alpha=2/255 steps=10 decay=1", "minimal": False,
             "advviz": lambda x, y: A.mifgsm(model, x, y, eps=e8, alpha=a2, steps=10, decay=1.0, seed=seed),
             "ta": seeded(ta.MIFGSM(model, eps=e8, alpha=a2, steps=10, decay=1.0))},
        {"attack": "C&W L2", "params": "c=1 kappa=0 steps=100 lr=0.01 (advviz binary_steps=1)", "minimal": True,
             "advviz": lambda x, y: A.cw_l2(model, x, y, c=1.0, kappa=0.0, steps=100, lr=0.01, binary_steps=1),
             "ta": seeded(ta.CW(model, c=1, kappa=0, steps=100, lr=0.01))},
        {"attack": "DeepFool", "params": "steps=50 overshoot=0.02 10 classes", "minimal": True,
             "advviz": lambda x, y: A.deepfool(model, x, y, steps=50, overshoot=0.02, nb_candidate=10),
             "ta": seeded(ta.DeepFool(model, steps=50, overshoot=0.02))},
    ]


def _stats(model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """``(asr, mean L2 over successes, max Linf)``."""
    rate = metrics.asr(model, x_adv, y)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
        l2 = (x_adv - x).flatten(1).norm(dim=1)
    mean_l2 = float(l2[fooled].mean()) if fooled.any() else float("nan")
    return rate, mean_l2, float((x_adv - x).abs().max())


def run(*, n: int | None = None, quick: bool = False, device: str = "cpu", seed: int = 0,
        repeats: int | None = None, threads: int | None = None,
        only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the side-by-side benchmark.

    Args:
        n: number of images (default 256; 64 with ``quick``).
        quick: fewer images and repeats.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seeds the image sample and both libraries' random starts.
        repeats: timed repeats per library and attack (default 3; 2 with ``quick``); median kept.
        threads: ``torch.set_num_threads`` for the run (restored afterwards); default:
            ``$ADVVIZ_BENCH_THREADS`` if set, else unchanged. On a machine shared with other jobs,
            1 thread avoids OpenMP spin-waiting (several times faster for both libraries).
        only: restrict to these attack names (as in the rows' ``attack``).

    Returns:
        One dict per attack: ``attack, params, n, threads, advviz_ips, torchattacks_ips, speedup,
        advviz_asr, torchattacks_asr, advviz_l2, torchattacks_l2, advviz_linf, torchattacks_linf``.
    """
    ta = import_torchattacks()

    n = n if n is not None else (64 if quick else 256)
    repeats = repeats if repeats is not None else (2 if quick else 3)
    with resnet20_sample(n=n, device=device, seed=seed, threads=threads) as (model, x, y, dev):
        rows = []
        for case in _cases(ta, model, seed):
            if only is not None and case["attack"] not in only:
                continue
            fns = {"advviz": case["advviz"], "torchattacks": case["ta"]}
            warm = min(8, n)
            for fn in fns.values():  # warm-up: builds advviz's fast copy, allocator, kernels
                fn(x[:warm], y[:warm])
            times: dict[str, list[float]] = {k: [] for k in fns}
            outs: dict[str, torch.Tensor] = {}
            # the minimal-perturbation attacks take minutes per run (torchattacks' DeepFool loops over
            # images and classes): one timed run each, after the warm-up
            reps = 1 if case["minimal"] else repeats
            for r in range(reps):
                order = list(fns) if r % 2 == 0 else list(fns)[::-1]
                for k in order:
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    t0 = time.perf_counter()
                    out = fns[k](x, y)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    times[k].append(time.perf_counter() - t0)
                    outs[k] = out
            row: dict[str, Any] = {"attack": case["attack"], "params": case["params"], "n": n,
                                   "threads": torch.get_num_threads(), "repeats": reps}
            for k in fns:
                rate, l2, linf = _stats(model, x, outs[k], y)
                row[f"{k}_ips"] = n / statistics.median(times[k])
                row[f"{k}_asr"] = rate
                row[f"{k}_l2"] = l2
                row[f"{k}_linf"] = linf
            row["speedup"] = row["advviz_ips"] / row["torchattacks_ips"]
            row["minimal"] = case["minimal"]
            log.info("%s: %.1f vs %.1f images/s", case["attack"], row["advviz_ips"], row["torchattacks_ips"])
            rows.append(row)
        return rows


def format(rows: list[dict[str, Any]]) -> str:
    """A text table of :func:`run`'s rows."""
    if not rows:
        return "no rows"
    head = ("attack", "advviz img/s", "torchattacks img/s", "ratio", "ASR advviz", "ASR ta", "L2 advviz", "L2 ta",
            "runs")
    lines = []
    for r in rows:
        l2a = f"{r['advviz_l2']:.3f}" if r["minimal"] else "-"
        l2t = f"{r['torchattacks_l2']:.3f}" if r["minimal"] else "-"
        lines.append((r["attack"], f"{r['advviz_ips']:.1f}", f"{r['torchattacks_ips']:.1f}", f"{r['speedup']:.2f}x",
                      f"{r['advviz_asr']:.3f}", f"{r['torchattacks_asr']:.3f}", l2a, l2t, str(r["repeats"])))
    widths = [builtins.max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    r0 = rows[0]
    out = [(f"advviz vs torchattacks: ResNet-20, {r0['n']} correctly classified CIFAR-10 test images, "
           f"{r0['threads']} thread(s), median of the timed runs (alternating order) after a warm-up"),
           fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    out.append("ratio = advviz / torchattacks throughput; L2 = mean over the successful images.")
    out.append("Parameters: " + "; ".join(f"{r['attack']}: {r['params']}" for r in rows))
    out.append("C&W: torchattacks' CW has no binary search over c, so advviz runs binary_steps=1 here "
               "(the same mathematics).")
    return "\n".join(out)
