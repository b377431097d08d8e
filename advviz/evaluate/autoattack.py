"""AutoAttack (Croce & Hein, ICML 2020): a fixed ensemble of parameter-free attacks, each run
only on the points the previous ones left robust.

``version="standard"`` is the paper's (Sec. 4 and the reference code's ``standard`` version):

1. ``apgd_ce``: APGD on the cross-entropy, 100 iterations, 1 restart;
2. ``apgd_t``: targeted APGD on the DLR loss, 100 iterations, over the 9 most likely other
   classes (``n_target_classes=9``);
3. ``fab``: FAB-T (targeted FAB), 100 iterations, 9 target classes;
4. ``square``: Square Attack, 5,000 queries, ``p_init=0.8``.

``version="fast"`` (CPU use) runs ``apgd_ce`` and ``apgd_t`` with 3 target classes;
``attacks=[...]`` runs any registered attacks in that order (``version`` becomes ``"custom"``).
A point counts as broken by the first attack whose output is misclassified by ``model``;
misclassified clean points are ``"clean"`` and never attacked.

The attacks are looked up by name in :mod:`advviz.attacks` (``get(name)``); the parameters above
are passed under whichever of their usual names the attack's signature has (``steps`` or
``n_iter``, ``n_queries`` or ``queries``...), and :attr:`Report.config` records exactly what
each attack received.

Seeding and batch invariance. Each call of an attack is seeded from ``(seed, dataset indices)``
(:func:`batch_seed`; ``indices`` default to ``0..B-1``), so a run is reproducible and resuming or
sharding with the same batches gives the same result. What is *not* invariant by default is the
split into batches: an attack draws its random start for the whole batch from one generator,
so the same image in another batch gets another start, and convolutions may round differently
for another batch size. ``batch_invariant=True`` attacks every point on its own, seeded by
:func:`sample_seed` ``(seed, index)``: the per-point results then depend only on the point, its
dataset index and the seed (not on batching, order or process count), at the cost of batch-1
speed.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advviz import attacks as A
from advviz import metrics
from advviz._checks import check_images
from advviz.attacks._core import check_labels
from advviz.attacks.gradient import check_norm_budget
from advviz.evaluate import flags as F

__all__ = ["Report", "autoattack", "batch_seed", "sample_seed", "VERSIONS", "run_attack"]

log = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1

# canonical parameter -> the names an attack's signature may use for it
PARAM_ALIASES: dict[str, tuple[str, ...]] = {
    "steps": ("steps", "n_iter", "iterations"),
    "restarts": ("n_restarts", "restarts"),
    "n_target_classes": ("n_target_classes", "n_targets"),
    "queries": ("n_queries", "queries", "max_queries"),
    "p_init": ("p_init",),
}

VERSIONS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "standard": (
        ("apgd_ce", {"steps": 100, "restarts": 1}),
        ("apgd_t", {"steps": 100, "restarts": 1, "n_target_classes": 9}),
        ("fab", {"steps": 100, "restarts": 1, "n_target_classes": 9}),
        ("square", {"queries": 5000, "p_init": 0.8}),
    ),
    "fast": (
        ("apgd_ce", {"steps": 100, "restarts": 1}),
        ("apgd_t", {"steps": 100, "restarts": 1, "n_target_classes": 3}),
    ),
}


def _mix(z: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit hash of ``z``."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def sample_seed(seed: int, index: int) -> int:
    """The seed of dataset point ``index`` in a run seeded ``seed``: in ``[0, 2**31 - 1)``."""
    return _mix(_mix(int(seed)) ^ int(index)) % (2**31 - 1)


def batch_seed(seed: int, indices: Sequence[int] | torch.Tensor) -> int:
    """The seed of a batch: a hash of ``seed`` and the batch's dataset indices, in order."""
    h = _mix(int(seed))
    for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices):
        h = _mix(h ^ int(i))
    return h % (2**31 - 1)


@dataclass
class Report:
    """The result of :func:`autoattack`.

    Attributes:
        robust_accuracy: share of points correctly classified after every attack.
        clean_accuracy: share of points correctly classified before any attack.
        per_sample: per point, the name of the attack that broke it, ``"clean"`` when it was
            misclassified to begin with, ``None`` when it stayed robust.
        x_adv: ``(B, C, H, W)``: the breaking attack's output where a point was broken, else ``x``.
        flags: sanity flags (:mod:`advviz.evaluate.flags`), one line each; none for a healthy model.
        config: eps, norm, version, seed, the attacks and the parameters each received.
        seconds: wall time per attack.
        reached: per attack, how many points it was run on.
    """

    robust_accuracy: float
    clean_accuracy: float
    per_sample: list[str | None]
    x_adv: torch.Tensor
    flags: list[str]
    config: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    reached: dict[str, int] = field(default_factory=dict)

    @property
    def robust(self) -> torch.Tensor:
        """``(B,)`` bool: the points no attack broke."""
        return torch.tensor([s is None for s in self.per_sample], dtype=torch.bool)

    def summary(self) -> str:
        """A few lines: accuracies, per-attack counts and times, flags."""
        lines = [f"AutoAttack ({self.config['version']}, {self.config['norm']}, eps={self.config['eps']:.5g}, "
                 f"seed {self.config['seed']}): clean {self.clean_accuracy:.3f}, robust {self.robust_accuracy:.3f} "
                 f"on {len(self.per_sample)} points"]
        for name in self.seconds:
            broke = sum(1 for s in self.per_sample if s == name)
            lines.append(f"  {name:<10} ran on {self.reached.get(name, 0):>5}, broke {broke:>5}, "
                         f"{self.seconds[name]:.1f} s")
        lines += [f"  flag {f}" for f in self.flags] or ["  no flags"]
        return "\n".join(lines)


def _norm(norm: str) -> str:
    n = str(norm).lower()
    if n not in ("linf", "l2"):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
    return n


def _plan(version: str, attacks: Sequence[str | tuple[str, Mapping[str, Any]]] | None
          ) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    if attacks is not None:
        if isinstance(attacks, str):
            raise TypeError(f"attacks must be a list of names, e.g. [{attacks!r}]")
        plan = []
        for a in attacks:
            plan.append((a, {}) if isinstance(a, str) else (a[0], dict(a[1])))
        if not plan:
            raise ValueError("attacks is empty: give at least one attack name")
        return "custom", plan
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {sorted(VERSIONS)} or pass attacks=[...], got {version!r}")
    return version, [(n, dict(p)) for n, p in VERSIONS[version]]


def _resolve_params(name: str, fn: Any, canonical: Mapping[str, Any], norm: str) -> dict[str, Any]:
    """Map canonical parameters to the names ``fn`` takes; ``norm`` where it takes one; ``best=True``
    (return the best iterate, not the last) where it takes one and the caller did not choose."""
    sig = inspect.signature(fn).parameters
    out: dict[str, Any] = {}
    for key, value in canonical.items():
        names = PARAM_ALIASES.get(key, (key,))
        hit = next((n for n in names if n in sig), None)
        if hit is None:
            if key in PARAM_ALIASES:
                log.warning("%s takes none of %s: its own default is used", name, names)
                continue
            hit = key  # a user-given parameter: passed as is (a typo raises in the attack)
        out[hit] = value
    if "best" in sig and "best" not in out:
        out["best"] = True  # the best iterate: a point is broken if any iterate broke it (attacks.gradient)
    if "norm" in sig:
        out["norm"] = norm
    return out


def _within_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    in_box = (x_adv >= 0).flatten(1).all(1) & (x_adv <= 1).flatten(1).all(1)
    return (size <= eps * (1 + 1e-5) + 1e-6) & in_box


def run_attack(name: str, params: Mapping[str, Any], attack_model: nn.Module, model: nn.Module, x: torch.Tensor,
               y: torch.Tensor, *, eps: float, norm: str, seed: int, indices: torch.Tensor, batch_size: int,
               batch_invariant: bool) -> tuple[torch.Tensor, torch.Tensor, int, dict[str, Any]]:
    """Run one registered attack on ``x`` and judge it on ``model``.

    Args:
        name: registered attack name.
        params: canonical or literal parameters (see the module docstring).
        attack_model: the model whose gradients the attack follows (``model`` for white-box).
        model: the model whose predictions decide success.
        x, y: ``(B, C, H, W)`` points and ``(B,)`` labels.
        eps, norm: the budget.
        seed: the run's seed; each call is seeded by :func:`batch_seed` / :func:`sample_seed`.
        indices: ``(B,)`` dataset indices of the points.
        batch_size: points per attack call.
        batch_invariant: one call per point.

    Returns:
        ``(fooled (B,) bool, x_adv, n_outside_budget, params_passed)``.
    """
    spec = A.get(name)
    if spec.budget != "eps" or spec.norm not in ("linf", "l2"):
        raise ValueError(f"attack {name!r} has no L-inf/L2 budget eps ({spec.norm}, budget {spec.budget}); robust "
                         "accuracy at a budget needs a budgeted attack such as pgd, apgd_ce or square")
    kw = _resolve_params(name, spec.fn, params, norm)
    if "norm" not in kw and spec.norm != norm:
        raise ValueError(f"attack {name!r} is an {spec.norm} attack and takes no norm=; it cannot run "
                         f"under norm {norm!r}")
    takes_seed = "seed" in inspect.signature(spec.fn).parameters
    x_adv = x.clone()
    starts = range(x.shape[0]) if batch_invariant else range(0, x.shape[0], batch_size)
    step = 1 if batch_invariant else batch_size
    for s in starts:
        sl = slice(s, s + step)
        idx = indices[sl]
        call = dict(kw)
        if takes_seed:
            call["seed"] = sample_seed(seed, int(idx[0])) if batch_invariant else batch_seed(seed, idx)
        x_adv[sl] = spec.fn(attack_model, x[sl], y[sl], eps=eps, **call).detach().to(x.dtype)
    ok = _within_budget(x_adv, x, eps, norm)
    pred = metrics.predictions(model, x_adv, batch_size=batch_size) if x.shape[0] else y
    fooled = (pred != y) & ok
    return fooled, x_adv, int((~ok).sum()), kw


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
               version: str = "standard", seed: int = 0,
               attacks: Sequence[str | tuple[str, Mapping[str, Any]]] | None = None,
               batch_size: int = 256, indices: torch.Tensor | Sequence[int] | None = None,
               batch_invariant: bool = False, attack_model: nn.Module | None = None,
               checks: bool = True) -> Report:
    """Robust accuracy under AutoAttack (Croce & Hein 2020), with sanity flags.

    Args:
        model: classifier (an ``nn.Module``) mapping ``(B, C, H, W)`` in ``[0, 1]`` to one logits
            tensor ``(B, K)``; its predictions decide robustness. A model returning a tuple or
            dict is refused (wrap it), as the attacks refuse it.
        x: images ``(B, C, H, W)`` float in ``[0, 1]``; another float dtype than the model's
            (float64) is cast to the model's dtype for every forward pass, as the attacks do
            (``Report.x_adv`` keeps ``x``'s dtype).
        y: true labels ``(B,)``.
        eps: budget on the ``[0, 1]`` scale (``8/255``, not 8).
        norm: ``"Linf"`` or ``"L2"`` (case-insensitive).
        version: ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square-5000) or ``"fast"`` (APGD-CE,
            APGD-T with 3 targets); ignored when ``attacks`` is given.
        seed: seeds every attack (see the module docstring).
        attacks: a custom sequence: names, or ``(name, params)`` pairs, e.g. ``["apgd_ce",
            ("pgd", {"steps": 20})]``.
        batch_size: points per attack call.
        indices: ``(B,)`` dataset indices of the points (seeding); default ``0..B-1``.
        batch_invariant: attack each point on its own, seeded by ``(seed, index)``.
        attack_model: the model the attacks differentiate (default ``model``); e.g. the bare
            classifier for an oblivious evaluation of a defense.
        checks: run the sanity checks (gradients, outputs, a large-eps attack).

    Returns:
        A :class:`Report`.
    """
    check_images(x)
    y = check_labels(y, x, getattr(model, "num_classes", None))
    nrm = _norm(norm)
    eps = check_norm_budget("eps", eps, nrm, x)
    version, plan = _plan(version, attacks)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    b = x.shape[0]
    if indices is None:
        idx = torch.arange(b)
    else:
        idx = torch.as_tensor(indices, dtype=torch.long).cpu()
        if idx.shape != (b,):
            raise ValueError(f"indices must have shape ({b},) to match x, got {tuple(idx.shape)}")
    amodel = model if attack_model is None else attack_model
    x = x.detach()
    logits = metrics.logits(model, x, batch_size=batch_size)
    y = check_labels(y, x, logits.shape[1])  # also for a model without num_classes: its number of outputs
    correct = logits.argmax(1) == y
    robust = correct.clone()
    per_sample: list[str | None] = [None if c else "clean" for c in correct.tolist()]
    x_adv = x.clone()
    seconds: dict[str, float] = {}
    reached: dict[str, int] = {}
    outside: dict[str, int] = {}
    passed: list[dict[str, Any]] = []
    for name, params in plan:
        todo = robust.nonzero().flatten()
        reached[name] = int(todo.numel())
        t0 = time.perf_counter()
        if todo.numel():
            pos = todo.cpu()
            fooled, adv, n_out, kw = run_attack(name, params, amodel, model, x[todo], y[todo], eps=eps, norm=nrm,
                                                seed=seed, indices=idx[pos], batch_size=batch_size,
                                                batch_invariant=batch_invariant)
            broken = todo[fooled]
            robust[broken] = False
            x_adv[broken] = adv[fooled]
            for i in broken.tolist():
                per_sample[i] = name
            outside[name] = n_out
        else:
            kw = _resolve_params(name, A.get(name).fn, params, nrm)
        seconds[name] = time.perf_counter() - t0
        passed.append({"attack": name, **{k: v for k, v in kw.items() if k != "norm"}})
        log.info("%s: ran on %d, %d robust left (%.1f s)", name, reached[name], int(robust.sum()), seconds[name])
    found: list[str | None] = [F.budget_flag(outside)]
    if "square" in reached and any(n != "square" for n, _ in plan):
        found.append(F.blackbox_flag(sum(1 for s in per_sample if s == "square"), reached["square"]))
    if checks:
        pts = correct.nonzero().flatten()
        good = F.gradient_ok(amodel, x[pts], y[pts]) if pts.numel() else torch.zeros(0, dtype=torch.bool)
        found.append(F.gradient_flag(int((~good).sum()), int(pts.numel())))
        found.append(F.probability_flag(int(F.probability_rows(logits).sum()), b))
        few = pts[:F.LARGE_EPS_POINTS]
        big = F.large_eps_robust(amodel, model, x[few], y[few], seed=seed)
        found.append(F.large_eps_flag(int(big.sum()), int(few.numel())))
    config = {"eps": eps, "norm": "Linf" if nrm == "linf" else "L2", "version": version, "seed": int(seed),
              "attacks": passed, "batch_size": int(batch_size), "batch_invariant": bool(batch_invariant),
              "n": b, "reference": "Croce & Hein, ICML 2020 (AutoAttack)"}
    return Report(robust_accuracy=float(robust.float().mean()) if b else float("nan"),
                  clean_accuracy=float(correct.float().mean()) if b else float("nan"),
                  per_sample=per_sample, x_adv=x_adv, flags=F.collect(found), config=config, seconds=seconds,
                  reached=reached)
