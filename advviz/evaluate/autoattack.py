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

What else the chain does, and why (each recorded in :attr:`Report.config`):

* **Judging a random model** (Athalye et al. 2018): the determinism probe
  (:func:`advviz.evaluate.flags.randomized`, two forward passes of the first
  :data:`~advviz.evaluate.flags.PROBE_POINTS` images) decides how points are judged. A
  deterministic model is judged by one forward pass. A randomized one is judged by
  :data:`~advviz.evaluate.flags.JUDGE_DRAWS` draws, and a point counts as correct (clean, or after
  an attack) only if **every** draw classifies it correctly: a defense must be right reliably,
  and a lucky or unlucky single draw can no longer make two identical calls disagree. The
  global random state is seeded from ``(seed, indices)`` inside the call (and restored after
  it), so a randomized model draws the same numbers in two identical calls. ``config["judge"]``
  holds the rule and the draws; the ``randomized`` flag says to attack with EOT.
* **Oblivious evaluation** (``attack_model`` another model than ``model``, e.g. the bare
  classifier of a defense): a point ``model`` classifies correctly but ``attack_model`` already
  gets wrong would be returned unchanged by the attacks (they skip what their model already
  misclassifies) and counted as robust without having been attacked. Those points are attacked
  all the same: on a model with ``attack_model``'s gradients and ``model``'s values (its logits,
  straight through: the attack's steps follow the attacked model, and it stops, keeps its best
  iterate and skips points by what ``model`` says), so that every point is scored on ``model``.
* **Too few classes**: with 2 classes the DLR losses are constant (no gradient), so
  ``apgd_dlr`` and ``apgd_t`` are skipped; target counts above ``K - 1`` are cut to ``K - 1``;
  the ``few-classes`` flag says which.
* **Checks** (``checks=True``): gradients (margin and cross-entropy), outputs, a large-eps
  attack, the chain's first iterative attack again with twice the steps and with
  :data:`~advviz.evaluate.flags.RESTARTS` random starts on the first
  :data:`~advviz.evaluate.flags.STEPS_POINTS` correctly classified points. Always: the
  determinism probe, the class count, the budget, and, when Square follows gradient attacks,
  black-box beating white-box at the reference's threshold. See :mod:`advviz.evaluate.flags`
  for each flag.
* **Provenance**: :attr:`Report.provenance` holds the sha256 of the model's (and the attack
  model's) tensors and the records of the artefacts given by the caller or loaded during the
  call (a purifier's networks).

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

import contextlib
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advviz import artifacts, metrics
from advviz import attacks as A
from advviz._checks import check_images
from advviz._modules import model_logits
from advviz._weights import tensors_sha256
from advviz.attacks._core import check_labels
from advviz.attacks.gradient import check_norm_budget
from advviz.evaluate import flags as F

__all__ = ["Report", "autoattack", "batch_seed", "sample_seed", "VERSIONS", "run_attack", "check_runs",
           "correct_in_every_draw", "weights_identity", "DLR_ATTACKS", "JUDGE_RULE", "fit_classes",
           "iteration_count", "restart_plan", "check_label", "convergence_flags"]

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

#: attacks on a DLR loss and the classes it needs to have a gradient: with 2 classes both the DLR
#: and the targeted DLR are constant (+-1); with 3 the targeted DLR's 4th logit is the smallest
DLR_ATTACKS: dict[str, int] = {"apgd_dlr": 3, "apgd_t": 3}

#: how a randomized model's points are judged (recorded in ``config["judge"]``)
JUDGE_RULE = "correct only if classified correctly in every one of the draws"

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
        config: eps, norm, version, seed, the attacks and the parameters each received, how points
            were judged (``"judge"``), what the checks ran (``"checks"``).
        seconds: wall time per attack (and ``"checks"``: the sanity checks).
        reached: per attack, how many points it was run on.
        randomized: the determinism probe's verdict (:func:`advviz.evaluate.flags.randomized`):
            ``True`` when two forward passes of the same images differ (the points were then
            judged by repeated draws), ``None`` when the caller chose the draws (``draws=``).
        provenance: ``{"weights": {"model": sha256 of its tensors[, "attack_model": ...]},
            "artifacts": [record dicts]}``: the identity of the networks behind the numbers
            (:func:`advviz._weights.tensors_sha256`; the artefact records given as ``provenance=``
            or loaded during the call, :class:`advviz.artifacts.Record`).
    """

    robust_accuracy: float
    clean_accuracy: float
    per_sample: list[str | None]
    x_adv: torch.Tensor
    flags: list[str]
    config: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    reached: dict[str, int] = field(default_factory=dict)
    randomized: bool | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def robust(self) -> torch.Tensor:
        """``(B,)`` bool: the points no attack broke."""
        return torch.tensor([s is None for s in self.per_sample], dtype=torch.bool)

    def summary(self) -> str:
        """A few lines: accuracies, per-attack counts and times, flags."""
        lines = [f"AutoAttack ({self.config['version']}, {self.config['norm']}, eps={self.config['eps']:.5g}, "
                 f"seed {self.config['seed']}): clean {self.clean_accuracy:.3f}, robust {self.robust_accuracy:.3f} "
                 f"on {len(self.per_sample)} points"]
        for name in self.reached:
            broke = sum(1 for s in self.per_sample if s == name)
            lines.append(f"  {name:<10} ran on {self.reached.get(name, 0):>5}, broke {broke:>5}, "
                         f"{self.seconds.get(name, 0.0):.1f} s")
        if "checks" in self.seconds:
            lines.append(f"  checks     {self.seconds['checks']:.1f} s")
        judge = self.config.get("judge", {})
        if judge.get("draws", 1) > 1:
            lines.append(f"  judged by {judge['draws']} draws per point ({judge['rule']})")
        lines += [f"  flag {f}" for f in self.flags] or ["  no flags"]
        return "\n".join(lines)


def weights_identity(model: nn.Module, attack_model: nn.Module | None = None) -> dict[str, str | None]:
    """``{"model": sha256 of its tensors[, "attack_model": ...]}`` (:func:`advviz._weights.tensors_sha256`,
    names left out): the identity of the weights behind an evaluation's numbers. A network outside
    the modules' state (a purifier function's own network) is not in it: its artefact record is."""
    ident: dict[str, str | None] = {"model": tensors_sha256(model, names=False) if isinstance(model, nn.Module) else None}
    if attack_model is not None and attack_model is not model:
        ident["attack_model"] = (tensors_sha256(attack_model, names=False) if isinstance(attack_model, nn.Module)
                                 else None)
    return ident


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


def _param_value(fn: Any, params: Mapping[str, Any], key: str) -> tuple[str | None, Any]:
    """The name under which ``fn`` takes canonical parameter ``key`` and the value it will get
    (``params``' own, under the canonical or the signature's name, else the signature's default)."""
    sig = inspect.signature(fn).parameters
    hit = next((n for n in PARAM_ALIASES.get(key, (key,)) if n in sig), None)
    if hit is None:
        return None, None
    for name in (key, hit):
        if name in params:
            return hit, params[name]
    default = sig[hit].default
    return hit, None if default is inspect.Parameter.empty else default


def fit_classes(plan: Sequence[tuple[str, Mapping[str, Any]]], n_classes: int
                ) -> tuple[list[tuple[str, dict[str, Any]]], list[str], dict[str, tuple[int, int]]]:
    """The plan for a model with ``n_classes`` outputs: DLR attacks that cannot work dropped
    (:data:`DLR_ATTACKS`), target counts above ``n_classes - 1`` cut.

    Returns:
        ``(plan, skipped names, {name: (targets asked, targets run)})``.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    skipped: list[str] = []
    cut: dict[str, tuple[int, int]] = {}
    for name, params in plan:
        if n_classes < DLR_ATTACKS.get(name, 0):
            skipped.append(name)
            continue
        params = dict(params)
        hit, asked = _param_value(A.get(name).fn, params, "n_target_classes")
        if hit is not None and asked is not None and int(asked) > n_classes - 1:
            cut[name] = (int(asked), n_classes - 1)
            params.pop("n_target_classes", None)
            params[hit] = n_classes - 1
        out.append((name, params))
    return out, skipped, cut


def _within_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    in_box = (x_adv >= 0).flatten(1).all(1) & (x_adv <= 1).flatten(1).all(1)
    return (size <= eps * (1 + 1e-5) + 1e-6) & in_box


def correct_in_every_draw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, draws: int = 1,
                          batch_size: int = 256) -> torch.Tensor:
    """Per point ``(B,)`` bool: ``model`` classifies it as ``y`` in every one of ``draws`` forward
    passes (one pass for a deterministic model; see the module docstring for randomized ones)."""
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=y.device)
    ok = metrics.predictions(model, x, batch_size=batch_size) == y
    for _ in range(int(draws) - 1):
        ok &= metrics.predictions(model, x, batch_size=batch_size) == y
    return ok


class _Judged(nn.Module):
    """An oblivious attack's model for points its own model already misclassifies: the attacked
    model's gradients with the evaluated model's logits (``a + (m - a).detach()``), so that the
    attack follows the attacked model but stops, keeps its best iterate and skips by the evaluated
    model's predictions."""

    def __init__(self, attack_model: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.attacked = attack_model
        self.judge = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = model_logits(self.attacked, x)
        with torch.no_grad():
            m = model_logits(self.judge, x).to(a.dtype)
        return a + (m - a).detach()


def _calls(fn: Any, kw: Mapping[str, Any], net: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *,
           eps: float, seed: int, batch_size: int, batch_invariant: bool, takes_seed: bool) -> torch.Tensor:
    """``fn`` over ``x`` in calls of ``batch_size`` points (one per point when ``batch_invariant``),
    each seeded by :func:`batch_seed` / :func:`sample_seed` of the points' dataset indices."""
    x_adv = x.clone()
    step = 1 if batch_invariant else batch_size
    for s in range(0, x.shape[0], step):
        sl = slice(s, s + step)
        call = dict(kw)
        if takes_seed:
            call["seed"] = sample_seed(seed, int(idx[sl][0])) if batch_invariant else batch_seed(seed, idx[sl])
        x_adv[sl] = fn(net, x[sl], y[sl], eps=eps, **call).detach().to(x.dtype)
    return x_adv


def run_attack(name: str, params: Mapping[str, Any], attack_model: nn.Module, model: nn.Module, x: torch.Tensor,
               y: torch.Tensor, *, eps: float, norm: str, seed: int, indices: torch.Tensor, batch_size: int,
               batch_invariant: bool, draws: int = 1) -> tuple[torch.Tensor, torch.Tensor, int, dict[str, Any]]:
    """Run one registered attack on ``x`` and judge it on ``model``.

    Args:
        name: registered attack name.
        params: canonical or literal parameters (see the module docstring).
        attack_model: the model whose gradients the attack follows (``model`` for white-box).
        model: the model whose predictions decide success.
        x, y: ``(B, C, H, W)`` points and ``(B,)`` labels (points ``model`` classifies correctly).
        eps, norm: the budget.
        seed: the run's seed; each call is seeded by :func:`batch_seed` / :func:`sample_seed`.
        indices: ``(B,)`` dataset indices of the points.
        batch_size: points per attack call.
        batch_invariant: one call per point.
        draws: forward passes of ``model`` that judge each point (:func:`correct_in_every_draw`).

    When ``attack_model`` is another model, the points it already misclassifies are attacked again
    on its gradients with ``model``'s values (the module docstring's oblivious evaluation).

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
    common = dict(eps=eps, seed=seed, batch_size=batch_size, batch_invariant=batch_invariant, takes_seed=takes_seed)
    x_adv = _calls(spec.fn, kw, attack_model, x, y, indices, **common)
    if attack_model is not model and x.shape[0]:
        pre = (metrics.predictions(attack_model, x, batch_size=batch_size) != y).nonzero().flatten()
        if pre.numel():
            judged = _Judged(attack_model, model)
            x_adv[pre] = _calls(spec.fn, kw, judged, x[pre], y[pre], indices[pre.cpu()], **common)
    ok = _within_budget(x_adv, x, eps, norm)
    fooled = ~correct_in_every_draw(model, x_adv, y, draws=draws, batch_size=batch_size) & ok if x.shape[0] else ok
    return fooled, x_adv, int((~ok).sum()), kw


def iteration_count(name: str, params: Mapping[str, Any]) -> tuple[str | None, int]:
    """The name of ``name``'s iteration-count parameter and the count it runs (``(None, 0)``: none)."""
    hit, value = _param_value(A.get(name).fn, params, "steps")
    return (hit, int(value)) if hit is not None and value is not None and int(value) >= 1 else (None, 0)


def restart_plan(name: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """How the restarts check restarts attack ``name``: ``{"param": "n_restarts", "restarts": R x its own}``
    where it has a restarts parameter, ``{"param": "seed", "restarts": R}`` (other seeds) where it
    starts at random (``random_start`` on), ``None`` where it has no random start to vary."""
    fn = A.get(name).fn
    hit, value = _param_value(fn, params, "restarts")
    if hit is not None:
        return {"param": hit, "restarts": F.RESTARTS * int(value or 1)}
    sig = inspect.signature(fn).parameters
    start = params.get("random_start", sig["random_start"].default) if "random_start" in sig else False
    if start and "seed" in sig:
        return {"param": "seed", "restarts": F.RESTARTS}
    return None


def check_runs(name: str, params: Mapping[str, Any], attack_model: nn.Module, model: nn.Module, x: torch.Tensor,
               y: torch.Tensor, *, eps: float, norm: str, seed: int, indices: torch.Tensor, batch_size: int,
               batch_invariant: bool, draws: int = 1, steps: bool = True, restarts: bool = True
               ) -> dict[str, list[list[bool]]]:
    """The steps and restarts checks of one attack on points ``model`` classifies correctly.

    The attack runs with ``k`` (its own) and ``2k`` steps, same seeds, with ``best=False`` where
    it has that option (the module :mod:`advviz.evaluate.flags` says why); then from
    :data:`~advviz.evaluate.flags.RESTARTS` random starts (:func:`restart_plan`; the ``k`` run is
    the first start). A point counts as broken by the restarts if any start broke it.

    Returns:
        ``{"steps": [[robust after k, robust after 2k] per point], "restarts": [[robust after one
        start, robust after all] per point]}``, each only where it applies (an attack without an
        iteration count has no steps check, one without a random start no restarts check).
    """
    param, k = iteration_count(name, params)
    out: dict[str, list[list[bool]]] = {}
    if x.shape[0] == 0 or (not steps and not restarts):
        return out
    base = dict(params)
    if "best" in inspect.signature(A.get(name).fn).parameters:
        base["best"] = False
    kw = dict(eps=eps, norm=norm, seed=seed, indices=indices, batch_size=batch_size, batch_invariant=batch_invariant,
              draws=draws)
    first, _, _, _ = run_attack(name, base, attack_model, model, x, y, **kw)
    if steps and param is not None:
        more = {k2: v for k2, v in base.items() if k2 not in PARAM_ALIASES["steps"]}
        twice, _, _, _ = run_attack(name, {**more, param: 2 * k}, attack_model, model, x, y, **kw)
        out["steps"] = [[not a, not b] for a, b in zip(first.tolist(), twice.tolist(), strict=True)]
    plan = restart_plan(name, params) if restarts else None
    if plan is not None:  # the first run is the first start; the others run where it failed
        broken = first.clone()
        if plan["param"] == "seed":
            extra = [({}, seed + r) for r in range(1, plan["restarts"])]
        else:
            rest = {k2: v for k2, v in base.items() if k2 not in PARAM_ALIASES["restarts"]}
            own = plan["restarts"] // F.RESTARTS
            extra = [({**rest, plan["param"]: plan["restarts"] - own}, seed + 1)]
        for change, start_seed in extra:
            todo = (~broken).nonzero().flatten()
            if not todo.numel():
                break
            fooled, _, _, _ = run_attack(name, {**base, **change}, attack_model, model, x[todo], y[todo],
                                         **{**kw, "seed": start_seed, "indices": indices[todo.cpu()]})
            broken[todo[fooled]] = True
        out["restarts"] = [[not a, not b] for a, b in zip(first.tolist(), broken.tolist(), strict=True)]
    return out


def check_label(name: str, params: Mapping[str, Any]) -> str:
    """How flags name a checked attack: ``"pgd (steps 20)"``."""
    param, k = iteration_count(name, params)
    return f"{name} ({param} {k})" if param else name


def _share_robust(pairs: Sequence[Sequence[bool]]) -> tuple[float, float]:
    return (sum(bool(a) for a, _ in pairs) / len(pairs), sum(bool(b) for _, b in pairs) / len(pairs))


def convergence_flags(runs: Mapping[str, Mapping[str, Sequence[Sequence[bool]]]],
                      steps: Mapping[str, tuple[int, int]]) -> list[str | None]:
    """The ``non-monotonic`` (more steps did worse), ``not-converged`` and ``restarts`` flags of
    :func:`check_runs`' results ``{label: {"steps": pairs, "restarts": pairs}}`` on the same points;
    ``steps``: ``{label: (k, 2k)}``."""
    by_steps = {lab: r["steps"] for lab, r in runs.items() if r.get("steps")}
    by_restarts = {lab: r["restarts"] for lab, r in runs.items() if r.get("restarts")}
    n = max([len(v) for v in (*by_steps.values(), *by_restarts.values())] or [0])
    grid = {lab: dict(zip(steps[lab], _share_robust(p), strict=True)) for lab, p in by_steps.items()}
    found: list[str | None] = []
    for flag in (F.monotonic_flag(grid, n, what="steps"),
                 F.convergence_flag({f"{lab} at {steps[lab][0]} -> {steps[lab][1]} steps": _share_robust(p)
                                     for lab, p in by_steps.items()}, n, what="steps"),
                 F.convergence_flag({lab: _share_robust(p) for lab, p in by_restarts.items()}, n, what="restarts")):
        found.append(None if flag is None else f"{flag} (checked on {n} points)")
    return found


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
               version: str = "standard", seed: int = 0,
               attacks: Sequence[str | tuple[str, Mapping[str, Any]]] | None = None,
               batch_size: int = 256, indices: torch.Tensor | Sequence[int] | None = None,
               batch_invariant: bool = False, attack_model: nn.Module | None = None,
               checks: bool = True, draws: int | None = None,
               provenance: Sequence[Mapping[str, Any] | artifacts.Record] | None = None) -> Report:
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
        seed: seeds every attack and the model's own random draws (see the module docstring).
        attacks: a custom sequence: names, or ``(name, params)`` pairs, e.g. ``["apgd_ce",
            ("pgd", {"steps": 20})]``.
        batch_size: points per attack call.
        indices: ``(B,)`` dataset indices of the points (seeding); default ``0..B-1``.
        batch_invariant: attack each point on its own, seeded by ``(seed, index)``.
        attack_model: the model the attacks differentiate (default ``model``); e.g. the bare
            classifier for an oblivious evaluation of a defense.
        checks: run the sanity checks (gradients, outputs, a large-eps attack, the steps and
            restarts checks); the determinism probe, the class count and Square's check always run.
        draws: forward passes that judge each point (``None``: probe the model, then 1 for a
            deterministic model and :data:`~advviz.evaluate.flags.JUDGE_DRAWS` for a randomized one).
        provenance: artefact records (:class:`advviz.artifacts.Record` or their dicts) of the model
            and the defense, for :attr:`Report.provenance`.

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
    if draws is not None and (isinstance(draws, bool) or int(draws) < 1):
        raise ValueError(f"draws must be a positive integer (forward passes per point) or None, got {draws!r}")
    b = x.shape[0]
    if indices is None:
        idx = torch.arange(b)
    else:
        idx = torch.as_tensor(indices, dtype=torch.long).cpu()
        if idx.shape != (b,):
            raise ValueError(f"indices must have shape ({b},) to match x, got {tuple(idx.shape)}")
    amodel = model if attack_model is None else attack_model
    x = x.detach()
    devices = [x.device] if x.device.type == "cuda" else []
    with artifacts.track() as used, torch.random.fork_rng(devices=devices):
        torch.manual_seed(batch_seed(seed, idx))  # a randomized model draws the same numbers in two identical calls
        rep = _chain(model, amodel, x, y, idx, eps=eps, nrm=nrm, version=version, plan=plan, seed=seed,
                     batch_size=batch_size, batch_invariant=batch_invariant, checks=checks, draws=draws)
    records = [r.to_dict() if isinstance(r, artifacts.Record) else dict(r) for r in (provenance or ())]
    names = {r.get("name") for r in records}
    records += [r.to_dict() for r in artifacts.records(used, on_disk_only=True) if r.name not in names]
    rep.provenance = {"weights": weights_identity(model, attack_model), "artifacts": records}
    return rep


def _chain(model: nn.Module, amodel: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *, eps: float,
           nrm: str, version: str, plan: list[tuple[str, dict[str, Any]]], seed: int, batch_size: int,
           batch_invariant: bool, checks: bool, draws: int | None) -> Report:
    """:func:`autoattack`'s work once its inputs are checked (inside its seeded random state)."""
    b = x.shape[0]
    logits = metrics.logits(model, x, batch_size=batch_size)
    y = check_labels(y, x, logits.shape[1])  # also for a model without num_classes: its number of outputs
    n_classes = int(logits.shape[1])
    is_random = F.randomized(model, x[:F.PROBE_POINTS]) if draws is None and b else None
    n_draws = int(draws) if draws is not None else (F.JUDGE_DRAWS if is_random else 1)
    correct = logits.argmax(1) == y
    if n_draws > 1:
        correct &= correct_in_every_draw(model, x, y, draws=n_draws - 1, batch_size=batch_size)
    plan, skipped, cut = fit_classes(plan, n_classes)
    # a random model's fast copy cannot be checked against it (and checking it would draw numbers once only)
    with A.fast_models(False) if n_draws > 1 else contextlib.nullcontext():
        return _run_chain(model, amodel, x, y, idx, correct, logits, eps=eps, nrm=nrm, version=version, plan=plan,
                          seed=seed, batch_size=batch_size, batch_invariant=batch_invariant, checks=checks,
                          n_draws=n_draws, is_random=is_random, skipped=skipped, cut=cut)


def _run_chain(model: nn.Module, amodel: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
               correct: torch.Tensor, logits: torch.Tensor, *, eps: float, nrm: str, version: str,
               plan: list[tuple[str, dict[str, Any]]], seed: int, batch_size: int, batch_invariant: bool, checks: bool,
               n_draws: int, is_random: bool | None, skipped: list[str], cut: dict[str, tuple[int, int]]) -> Report:
    b = x.shape[0]
    n_classes = int(logits.shape[1])
    robust = correct.clone()
    per_sample: list[str | None] = [None if c else "clean" for c in correct.tolist()]
    x_adv = x.clone()
    seconds: dict[str, float] = {}
    reached: dict[str, int] = {}
    outside: dict[str, int] = {}
    passed: list[dict[str, Any]] = []
    common = dict(eps=eps, norm=nrm, seed=seed, batch_size=batch_size, batch_invariant=batch_invariant, draws=n_draws)
    for name, params in plan:
        todo = robust.nonzero().flatten()
        reached[name] = int(todo.numel())
        t0 = time.perf_counter()
        if todo.numel():
            pos = todo.cpu()
            fooled, adv, n_out, kw = run_attack(name, params, amodel, model, x[todo], y[todo], indices=idx[pos],
                                                **common)
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
    found: list[str | None] = [F.randomized_flag(is_random, n_draws), F.few_classes_flag(n_classes, skipped, cut),
                               F.budget_flag(outside)]
    if "square" in reached and any(n != "square" for n, _ in plan):
        found.append(F.blackbox_flag(sum(1 for s in per_sample if s == "square"), b))
    checked: dict[str, Any] = {}
    if checks:
        t0 = time.perf_counter()
        found += _checks(model, amodel, x, y, correct, logits, plan, idx, checked, **common)
        seconds["checks"] = time.perf_counter() - t0
    config = {"eps": eps, "norm": "Linf" if nrm == "linf" else "L2", "version": version, "seed": int(seed),
              "attacks": passed, "batch_size": int(batch_size), "batch_invariant": bool(batch_invariant),
              "n": b, "n_classes": n_classes, "reference": "Croce & Hein, ICML 2020 (AutoAttack)",
              "judge": {"draws": n_draws, "rule": JUDGE_RULE if n_draws > 1 else "one forward pass"},
              **({"skipped": skipped} if skipped else {}), "checks": checked if checks else None}
    return Report(robust_accuracy=float(robust.float().mean()) if b else float("nan"),
                  clean_accuracy=float(correct.float().mean()) if b else float("nan"),
                  per_sample=per_sample, x_adv=x_adv, flags=F.collect(found), config=config, seconds=seconds,
                  reached=reached, randomized=is_random)


def _checks(model: nn.Module, amodel: nn.Module, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor,
            logits: torch.Tensor, plan: Sequence[tuple[str, Mapping[str, Any]]], idx: torch.Tensor,
            checked: dict[str, Any], *, eps: float, norm: str, seed: int, batch_size: int, batch_invariant: bool,
            draws: int) -> list[str | None]:
    """The sanity checks of :func:`autoattack` (``checks=True``); ``checked`` receives what they ran."""
    pts = correct.nonzero().flatten()
    n = int(pts.numel())
    margin_ok = F.gradient_ok(amodel, x[pts], y[pts]) if n else torch.zeros(0, dtype=torch.bool)
    ce_ok = F.gradient_ok(amodel, x[pts], y[pts], loss="ce") if n else torch.zeros(0, dtype=torch.bool)
    saturated = F.saturated_flag(int((margin_ok & ~ce_ok).sum()), n)
    few = pts[:F.LARGE_EPS_POINTS]
    big = F.large_eps_robust(amodel, model, x[few], y[few], seed=seed)
    found = [F.gradient_flag(int((~margin_ok).sum()), n), saturated,
             F.probability_flag(int(F.probability_rows(logits).sum()), x.shape[0]),
             F.large_eps_flag(int(big.sum()), int(few.numel()), saturated=saturated is not None)]
    target = next(((nm, p) for nm, p in plan if iteration_count(nm, p)[0] is not None), None)
    if target is not None and n:
        name, params = target
        sel = pts[:F.STEPS_POINTS]
        runs = check_runs(name, params, amodel, model, x[sel], y[sel], eps=eps, norm=norm, seed=seed,
                          indices=idx[sel.cpu()], batch_size=batch_size, batch_invariant=batch_invariant, draws=draws)
        _, k = iteration_count(name, params)
        label = check_label(name, params)
        checked.update({"attack": name, "points": int(sel.numel()), "steps": [k, 2 * k],
                        "restarts": restart_plan(name, params)})
        found += convergence_flags({label: runs}, {label: (k, 2 * k)})
    return found
