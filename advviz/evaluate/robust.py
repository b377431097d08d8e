"""``robust_accuracy``: robust accuracy over a dataset, per budget and attack (the security curve),
with per-sample results, progress, Ctrl-C and resume.

For every selected point (a seeded random subset of ``n`` dataset indices, or the whole dataset)
and every ``eps`` of the grid, each attack runs on the points the model classifies correctly
(:func:`advviz.evaluate.autoattack.run_attack` through :func:`~advviz.evaluate.autoattack.autoattack`);
``"autoattack"`` is the whole AutoAttack sequence as one entry. A point is robust to an attack
at ``eps`` when the model still classifies the attack's output correctly; ``"all"`` is robust to
every attack (the per-point worst case, as AutoAttack's robust accuracy is).

Points go through in fixed batches of the selection's order, each attack call seeded by
``(seed, the batch's dataset indices)``; ``batch_invariant=True`` attacks each point alone,
seeded by ``(seed, index)`` (see :mod:`advviz.evaluate.autoattack` for what that buys).

Under ``torchrun`` (N processes, :mod:`advviz.distributed`) batch ``k`` of the selection goes to
rank ``k mod N``; the batches and their seeds are those of one process, so the per-sample results
are identical for 1, 2 or N processes. Every rank returns the whole result (gathered).

``resume=path``: each finished batch's per-sample results are appended to a JSON-lines file
(first line: the configuration; under N processes rank ``r`` appends to ``<path>.rank<r>``, and a
rerun with any number of processes reads the file and all its ``.rank*`` parts). A rerun with the same path skips the indices already there and
refuses a file written with another configuration. Ctrl-C (``KeyboardInterrupt``) stops after
the last finished batch and returns the partial :class:`Result` (``complete=False``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from advviz import metrics
from advviz._modules import module_device
from advviz.evaluate import flags as F
from advviz.evaluate.autoattack import VERSIONS, autoattack, run_attack

__all__ = ["Result", "robust_accuracy", "eps_key", "parse_eps", "parse_attacks", "DEFAULT_PARAMS",
           "ResumeMismatchError"]

log = logging.getLogger(__name__)

# parameters the runner gives an attack unless told otherwise ("eps/4" means a quarter of eps)
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"pgd": {"steps": 20, "alpha": "eps/4"}}


class ResumeMismatchError(ValueError):
    """A resume file was written with another configuration."""


def eps_key(eps: float) -> str:
    """The string key of a budget in per-sample results and JSON (``8/255`` -> ``"0.0313725490196"``)."""
    return f"{float(eps):.12g}"


def parse_eps(text: str | float) -> float:
    """``"8/255"`` -> 0.0313..., ``"0.5"`` -> 0.5 (one budget)."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip()
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return float(num) / float(den)
        return float(s)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"cannot read the budget {text!r}: write a number like 0.03 or a fraction like 8/255") from None


# set by robust_accuracy itself (or meaningless for robust accuracy): never attack parameters on the CLI
_RUNNER_KEYS = {"eps": "--eps", "norm": "--norm", "seed": "--seed", "targeted": None, "mask": None}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _typed_value(attack: str, key: str, text: str, spec: Any, default: Any) -> Any:
    """``text`` as the type of ``attack``'s parameter ``key`` (its ParamSpec, else its default's type)."""
    kind = spec.kind if spec is not None else (
        "bool" if isinstance(default, bool) else "int" if isinstance(default, int)
        else "str" if isinstance(default, str) else "float")
    t = text.strip()
    where = f"{attack}:{key}={text}"
    if kind == "bool":
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        raise ValueError(f"{where}: {key} is true or false")
    if kind == "choice" or kind == "str":
        if spec is not None and t not in spec.choices:
            raise ValueError(f"{where}: {key} must be one of {', '.join(map(str, spec.choices))}")
        return t
    if kind == "int":
        try:
            value: Any = int(t)
        except ValueError:
            raise ValueError(f"{where}: {key} must be an integer") from None
    elif t.startswith(("eps/", "eps*")):  # relative to each budget, resolved per eps (_params_for)
        try:
            float(t[4:])
        except ValueError:
            raise ValueError(f"{where}: write eps/4 or eps*0.5 for a value relative to each budget") from None
        return t
    else:
        try:
            value = parse_eps(t)
        except ValueError:
            raise ValueError(f"{where}: {key} must be a number (0.01, 2/255, or eps/4 relative to each "
                             "budget)") from None
    if spec is not None:
        if spec.low is not None and value < spec.low:
            raise ValueError(f"{where}: {key} must be >= {spec.low}")
        if spec.per255 and value > 1:
            raise ValueError(f"{where}: {key} is on the [0, 1] pixel scale; did you mean {key}={t}/255?")
    return value


def parse_attacks(text: str) -> list[str | tuple[str, dict[str, Any]]]:
    """Read ``--attacks``: names with optional parameters, typed from each attack's signature.

    ``"pgd:steps=40;alpha=eps/8,apgd_ce:n_iter=50,fgsm"``: attacks are separated by commas; an
    attack's parameters follow a colon, separated by semicolons (or commas: a ``key=value`` item
    after a comma belongs to the attack before it, so ``pgd:steps=40,alpha=2/255`` works too).
    Values are typed from the attack's :class:`~advviz._registry.ParamSpec` (else from its
    default): integers, numbers or fractions (``2/255``; ``eps/4`` is relative to each budget),
    ``true``/``false``, choices. Unknown keys are refused with the list of valid ones; ``eps``,
    ``norm`` and ``seed`` are set by their own options, ``targeted`` and ``mask`` do not apply.

    Returns:
        ``[name | (name, {key: value})]`` for :func:`robust_accuracy`.
    """
    import inspect

    from advviz import attacks as A

    out: list[tuple[str, dict[str, Any]]] = []
    for token in (t.strip() for t in str(text).split(",")):
        if not token:
            continue
        head, sep, rest = token.partition(":")
        if not sep and "=" in head:  # "alpha=2/255" after a comma: the previous attack's parameter
            if not out:
                raise ValueError(f"--attacks {text!r}: {token!r} comes before any attack name (write pgd:{token})")
            name, items = out[-1][0], [token]
        else:
            name, items = head.strip(), [i for i in rest.split(";") if i.strip()]
            if sep and not items:
                raise ValueError(f"--attacks {text!r}: nothing after {name}: (write {name}:key=value)")
            if name == "autoattack":
                if items:
                    raise ValueError("autoattack takes no parameters here: choose its --version (standard or fast), "
                                     "or list its attacks with their parameters (apgd_ce:n_iter=50,apgd_t,...)")
            else:
                A.get(name)  # unknown names raise here, listing the registered ones
            out.append((name, {}))
        if not items:
            continue
        spec = A.get(name)
        sig = inspect.signature(spec.fn).parameters
        specs = {p.name: p for p in spec.params}
        valid = [k for k, p in sig.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in _RUNNER_KEYS]
        for item in items:
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ValueError(f"--attacks {text!r}: {item!r} is not key=value (e.g. {name}:{valid[0]}=...)"
                                 if valid else f"--attacks {text!r}: {name} takes no parameters")
            if key in _RUNNER_KEYS:
                opt = _RUNNER_KEYS[key]
                raise ValueError(f"{name}:{key} is set by {opt}, not per attack" if opt else
                                 f"{name}:{key} does not apply to robust accuracy (untargeted, whole image)")
            if key not in valid:
                raise ValueError(f"{name} has no parameter {key!r}; valid: {', '.join(valid)}")
            if key in out[-1][1]:
                raise ValueError(f"{name}:{key} is given twice")
            out[-1][1][key] = _typed_value(name, key, value, specs.get(key), sig[key].default)
    return [n if not p else (n, p) for n, p in out]


def _params_for(name: str, params: Mapping[str, Any], eps: float) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if isinstance(v, str) and v.startswith("eps/"):
            v = eps / float(v[4:])
        elif isinstance(v, str) and v.startswith("eps*"):
            v = eps * float(v[4:])
        out[k] = v
    return out


@dataclass
class Result:
    """Robust accuracy over a dataset.

    Attributes:
        config: everything that determines the numbers (resume files must match it).
        samples: ``{dataset index: {"clean": bool, "robust": {eps_key: {attack: bool, "all": bool}}, ...}}``.
        flags: sanity flags, one line each (none for a healthy model).
        complete: ``False`` when interrupted (Ctrl-C) before every point was done.
        seconds: wall time of this call.
    """

    config: dict[str, Any]
    samples: dict[int, dict[str, Any]]
    flags: list[str] = field(default_factory=list)
    complete: bool = True
    seconds: float = 0.0

    @property
    def attacks(self) -> list[str]:
        return [a["name"] for a in self.config["attacks"]]

    @property
    def eps(self) -> list[float]:
        return list(self.config["eps"])

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def clean_accuracy(self) -> float:
        return sum(s["clean"] for s in self.samples.values()) / self.n if self.n else float("nan")

    def accuracy(self, attack: str, eps: float) -> float:
        """Share of the done points robust to ``attack`` (or ``"all"``) at ``eps``."""
        k = eps_key(eps)
        if not self.n:
            return float("nan")
        return sum(bool(s["robust"][k][attack]) for s in self.samples.values()) / self.n

    @property
    def rows(self) -> list[dict[str, Any]]:
        """``[{"eps", "attack", "accuracy", "n"}]`` for every budget and attack, then ``"all"``."""
        names = self.attacks + (["all"] if len(self.attacks) > 1 else [])
        return [{"eps": e, "attack": a, "accuracy": self.accuracy(a, e), "n": self.n}
                for e in self.eps for a in names]

    def curve(self) -> dict[str, list[tuple[float, float]]]:
        """Security curve ``{attack or "all": [(eps, accuracy), ...]}`` starting at ``(0, clean)``."""
        names = self.attacks + (["all"] if len(self.attacks) > 1 else [])
        return {a: [(0.0, self.clean_accuracy)] + [(e, self.accuracy(a, e)) for e in sorted(self.eps)] for a in names}

    def to_json(self, provenance: Any = None) -> dict[str, Any]:
        """The ``advviz evaluate --json`` document."""
        return {"config": self.config, "provenance": provenance, "clean_accuracy": self.clean_accuracy,
                "complete": self.complete,
                "results": [{"eps": r["eps"], "attack": r["attack"], "accuracy": r["accuracy"]} for r in self.rows],
                "flags": list(self.flags),
                "samples": [{"index": i, "clean": s["clean"],
                             "robust": {k: v["all"] for k, v in s["robust"].items()},
                             "attacks": {k: {a: b for a, b in v.items() if a != "all"} for k, v in s["robust"].items()}}
                            for i, s in sorted(self.samples.items())]}

    def figure(self, title: str | None = None) -> Any:
        """An interactive plotly figure of the security curve (accuracy vs eps, one line per attack)."""
        import plotly.graph_objects as go

        fig = go.Figure()
        scale = 255.0 if self.config["norm"] == "Linf" else 1.0
        for name, pts in self.curve().items():
            fig.add_trace(go.Scatter(x=[e * scale for e, _ in pts], y=[a for _, a in pts], mode="lines+markers",
                                     name=name, line={"width": 3 if name == "all" else 2}))
        fig.update_layout(title=title or f"Security curve ({self.n} points, seed {self.config['seed']})",
                          xaxis_title="eps (x 1/255)" if scale == 255.0 else "eps (L2)",
                          yaxis_title="robust accuracy", yaxis_range=[0, 1.02], template="plotly_white")
        return fig

    def format(self) -> str:
        """A text table: one row per budget, one column per attack."""
        names = self.attacks + (["all"] if len(self.attacks) > 1 else [])
        scale = 255.0 if self.config["norm"] == "Linf" else 1.0
        head = ["eps" + (" (/255)" if scale == 255.0 else "")] + names
        lines = ["  ".join(f"{h:>10}" for h in head)]
        for e in self.eps:
            lines.append("  ".join([f"{e * scale:>10.4g}"] + [f"{self.accuracy(a, e):>10.3f}" for a in names]))
        out = [f"robust accuracy on {self.n} points (clean {self.clean_accuracy:.3f}, norm {self.config['norm']}, "
               f"seed {self.config['seed']}){'' if self.complete else ' - INTERRUPTED, partial'}"] + lines
        out += [f"flag {f}" for f in self.flags] or ["no sanity flags"]
        return "\n".join(out)


def _gather(data: Dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if callable(getattr(data, "tensors", None)):  # advviz's datasets (torch's TensorDataset has a tuple there)
        return data.tensors(idx)  # type: ignore[attr-defined]
    items = [data[int(i)] for i in idx]
    return torch.stack([it[0] for it in items]), torch.tensor([int(it[1]) for it in items])


def _part_path(path: Path, rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` appends its results: ``path`` itself for one process."""
    return path if world == 1 else path.with_name(f"{path.name}.rank{rank}")


def _read_resume_parts(path: Path, config: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per-sample results in ``path`` and in every ``<path>.rank*`` part written by N processes."""
    done = _read_resume(path, config)
    for part in sorted(path.parent.glob(f"{path.name}.rank*")):
        done.update(_read_resume(part, config))
    return done


def _read_resume(path: Path, config: dict[str, Any]) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    if not path.exists() or path.stat().st_size == 0:
        return done
    with open(path) as fh:
        lines = fh.read().splitlines()
    try:
        head = json.loads(lines[0])["config"]
    except (json.JSONDecodeError, KeyError, IndexError):
        raise ResumeMismatchError(f"{path} is not an advviz evaluation resume file (no config line); "
                                  "give another --resume path or delete it") from None
    want = json.loads(json.dumps(config))
    if head != want:
        diff = sorted(k for k in set(head) | set(want) if head.get(k) != want.get(k))
        raise ResumeMismatchError(f"{path} was written with another configuration (differs in: {', '.join(diff)}); "
                                  "use another resume path, or delete the file to start over")
    for line in lines[1:]:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: its batch is redone
            log.warning("ignoring a truncated line in %s", path)
            continue
        done[int(rec["index"])] = {k: v for k, v in rec.items() if k != "index"}
    return done


def robust_accuracy(model: nn.Module, data: Dataset, *, attacks: Sequence[str | tuple[str, Mapping[str, Any]]],
                    eps: Sequence[float | str], norm: str = "Linf", n: int | None = None, batch_size: int = 128,
                    device: str | torch.device | None = None, progress: bool = True,
                    resume: str | os.PathLike[str] | None = None, seed: int = 0, version: str = "standard",
                    attack_model: nn.Module | None = None, batch_invariant: bool = False,
                    meta: Mapping[str, Any] | None = None, steps_check: bool = True) -> Result:
    """Robust accuracy per budget and attack over a dataset (the security curve), resumable.

    Args:
        model: classifier (an ``nn.Module``) taking ``(B, C, H, W)`` in ``[0, 1]`` and returning one
            logits tensor ``(B, K)``; its predictions decide robustness. A model returning a tuple
            or dict is refused (wrap it), as the attacks refuse it.
        data: a dataset of ``(image, label)`` (e.g. :func:`advviz.data.load`). Images of another
            float dtype than the model's (float64) are cast to the model's dtype for every forward
            pass, as the attacks do.
        attacks: registered attack names (``"pgd"``, ``"apgd_ce"``...), ``"autoattack"`` for the
            whole AutoAttack sequence (``version``), or ``(name, params)`` pairs. Parameters given
            as ``"eps/4"`` are relative to each budget. ``pgd`` defaults to 20 steps of ``eps/4``
            (:data:`DEFAULT_PARAMS`).
        eps: budgets on the ``[0, 1]`` scale (numbers or strings like ``"8/255"``).
        norm: ``"Linf"`` or ``"L2"``.
        n: number of points, drawn by a permutation seeded with ``seed`` (default: all, in order).
        batch_size: points per batch (and per resume record).
        device: where to run (default: the model's device).
        progress: show a tqdm progress bar (stderr).
        resume: JSON-lines file of per-sample results: appended to as batches finish, read back on
            a rerun (done indices are skipped; another configuration is refused).
        seed: seeds the selection and every attack.
        version: AutoAttack version for the ``"autoattack"`` entry.
        attack_model: the model the attacks differentiate (default ``model``): the bare classifier
            for an oblivious evaluation, a BPDA/EOT wrapper for an adaptive one.
        batch_invariant: attack each point alone (per-point results independent of batching).
        meta: extra configuration recorded with the results (model name, data, threat model).
        steps_check: run every iterative attack (``steps``/``n_iter``) again with ``k`` and ``2k``
            steps on the first :data:`~advviz.evaluate.flags.STEPS_POINTS` correctly classified
            points at each budget, same seeds, and flag ``non-monotonic`` when more steps leave
            more than one more of them robust (:mod:`advviz.evaluate.flags`). Costs about
            ``3k`` steps on 16 points per attack and budget.

    Returns:
        A :class:`Result`; ``complete=False`` if interrupted by Ctrl-C.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    nrm = str(norm).lower()
    if nrm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
    grid = [parse_eps(e) for e in eps]
    if not grid:
        raise ValueError("eps is empty: give at least one budget, e.g. eps=[8/255]")
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    plan: list[tuple[str, dict[str, Any]]] = []
    for a in attacks:
        name, params = (a, {}) if isinstance(a, str) else (a[0], dict(a[1]))
        if name == "autoattack":
            if version not in VERSIONS:
                raise ValueError(f"version must be one of {sorted(VERSIONS)}, got {version!r}")
        else:
            from advviz import attacks as A

            A.get(name)  # unknown names raise here, listing the registered ones
            params = {**DEFAULT_PARAMS.get(name, {}), **params}
        plan.append((name, params))
    if not plan:
        raise ValueError("attacks is empty: give at least one attack name")
    if len({p[0] for p in plan}) != len(plan):
        raise ValueError("an attack is listed twice")
    total = len(data)
    if n is not None:
        if not 1 <= n <= total:
            raise ValueError(f"n must lie in [1, {total}] (the dataset's size), got {n}")
        selection = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))[:n]
    else:
        selection = torch.arange(total)
    config: dict[str, Any] = {
        "eps": grid, "norm": "Linf" if nrm == "linf" else "L2", "seed": int(seed), "n": len(selection),
        "attacks": [{"name": a, "params": p, **({"version": version} if a == "autoattack" else {})} for a, p in plan],
        "batch_invariant": bool(batch_invariant), "batch_size": None if batch_invariant else int(batch_size),
        "data": {"name": getattr(data, "name", type(data).__name__), "split": getattr(data, "split", ""),
                 "size": total},
        "selection": "all, in order" if n is None else "torch.randperm(size, seed)[:n]",
        "steps_check": _steps_plan(plan) if steps_check else None,
        **({"meta": dict(meta)} if meta else {}),
    }
    from advviz import distributed

    world, rank = distributed.world_size(), distributed.rank()
    dev = torch.device(device) if device is not None else module_device(model)
    path = Path(resume) if resume is not None else None
    samples = _read_resume_parts(path, config) if path is not None else {}
    mine = [start for k, start in enumerate(range(0, len(selection), batch_size)) if k % world == rank]
    part = _part_path(path, rank, world) if path is not None else None
    if part is not None and (not part.exists() or part.stat().st_size == 0):
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "w") as fh:
            fh.write(json.dumps({"config": config}) + "\n")
    amodel = model if attack_model is None else attack_model
    budget_flags: set[str] = set()
    my_points = [int(i) for start in mine for i in selection[start:start + batch_size].tolist()]
    bar = tqdm(total=len(my_points), initial=sum(i in samples for i in my_points),
               disable=not progress or rank != 0, desc="evaluate" + (f" (rank 0 of {world})" if world > 1 else ""),
               unit="img", file=sys.stderr)
    complete = True
    try:
        for start in mine:
            chunk = selection[start:start + batch_size]
            todo = torch.tensor([int(i) for i in chunk.tolist() if int(i) not in samples], dtype=torch.long)
            if not todo.numel():
                continue
            x, y = _gather(data, todo)
            x, y = x.to(dev), y.to(dev)
            recs = _evaluate_batch(model, amodel, x, y, todo, positions=[start + j for j, i in enumerate(chunk.tolist())
                                                                     if int(i) not in samples],
                                   plan=plan, grid=grid, norm=nrm, seed=int(seed), version=version,
                                   steps_plan=config["steps_check"],
                                   batch_size=batch_size, batch_invariant=batch_invariant, budget_flags=budget_flags)
            if part is not None:
                with open(part, "a") as fh:
                    fh.write("".join(json.dumps({"index": i, **r}) + "\n" for i, r in recs.items()))
            samples.update(recs)
            bar.update(len(recs))
    except KeyboardInterrupt:
        complete = False
        log.warning("interrupted: %d of %d points done%s", len(samples), len(selection),
                    f"; rerun with resume={str(path)!r} to continue" if path else "")
    finally:
        bar.close()
    if world > 1:  # every rank gets every rank's samples, flags and completeness
        gathered = distributed.gather_objects((samples, complete, sorted(budget_flags)))
        samples = {i: rec for part_samples, _, _ in gathered for i, rec in part_samples.items()}
        complete = all(c for _, c, _ in gathered)
        budget_flags = {f for _, _, fl in gathered for f in fl}
    wanted = {int(i) for i in selection.tolist()}
    samples = {i: s for i, s in samples.items() if i in wanted}
    result = Result(config=config, samples=samples, complete=complete, seconds=time.perf_counter() - t_start)
    if world > 1:
        result.config = {**config, "processes": world}
    result.flags = _flags(result, budget_flags)
    return result


def _evaluate_batch(model: nn.Module, amodel: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *,
                    positions: list[int], plan: list[tuple[str, dict[str, Any]]], grid: list[float], norm: str,
                    seed: int, version: str, batch_size: int, batch_invariant: bool,
                    budget_flags: set[str], steps_plan: Mapping[str, Any] | None = None) -> dict[int, dict[str, Any]]:
    """Per-sample records of one batch (the clean checks, then every eps and attack)."""
    logits = metrics.logits(model, x, batch_size=batch_size)
    correct = logits.argmax(1) == y
    prob = F.probability_rows(logits)
    grad = torch.zeros_like(correct)
    if correct.any():
        grad[correct] = F.gradient_ok(amodel, x[correct], y[correct])
    big = torch.zeros_like(correct)
    few = torch.tensor([j for j, p in enumerate(positions) if p < F.LARGE_EPS_POINTS and bool(correct[j])],
                       dtype=torch.long, device=x.device)
    if few.numel():
        big[few] = F.large_eps_robust(amodel, model, x[few], y[few], seed=seed)
    ids = idx.tolist()
    check = torch.tensor([j for j, p in enumerate(positions) if p < F.STEPS_POINTS and bool(correct[j])],
                         dtype=torch.long, device=x.device) if steps_plan else torch.zeros(0, dtype=torch.long)
    recs: dict[int, dict[str, Any]] = {}
    for j, i in enumerate(ids):
        c = bool(correct[j])
        recs[i] = {"clean": c, "robust": {}, "breaker": {}, "checks": {
            "prob_row": bool(prob[j]), "grad_ok": bool(grad[j]) if c else None,
            "large_eps_robust": bool(big[j]) if c and j in few.tolist() else None}}
    for e in grid:
        k = eps_key(e)
        per_attack: dict[str, list[bool]] = {}
        for name, params in plan:
            if name == "autoattack":
                rep = autoattack(model, x, y, eps=e, norm=norm, version=version, seed=seed, batch_size=batch_size,
                                 indices=idx, batch_invariant=batch_invariant, attack_model=amodel, checks=False)
                for j, i in enumerate(ids):
                    recs[i]["breaker"][k] = rep.per_sample[j]
            else:
                rep = autoattack(model, x, y, eps=e, norm=norm, seed=seed, batch_size=batch_size, indices=idx,
                                 attacks=[(name, _params_for(name, params, e))], batch_invariant=batch_invariant,
                                 attack_model=amodel, checks=False)
            budget_flags.update(f for f in rep.flags if f.startswith("budget"))
            per_attack[name] = [s is None for s in rep.per_sample]
            if check.numel() and name in (steps_plan or {}):  # the steps check: k and 2k steps, same seeds
                key, few_steps = steps_plan[name]["param"], steps_plan[name]["steps"]
                robust_at = []
                for n_steps in (few_steps, 2 * few_steps):
                    fooled, _, _, _ = run_attack(name, _params_for(name, {**params, key: n_steps}, e), amodel, model,
                                                 x[check], y[check], eps=e, norm=norm, seed=seed,
                                                 indices=idx[check.cpu()], batch_size=batch_size,
                                                 batch_invariant=batch_invariant)
                    robust_at.append((~fooled).tolist())
                for j, r_k, r_2k in zip(check.tolist(), *robust_at, strict=True):
                    recs[ids[j]]["checks"].setdefault("steps", {}).setdefault(k, {})[name] = [r_k, r_2k]
        for j, i in enumerate(ids):
            rb = {a: v[j] for a, v in per_attack.items()}
            rb["all"] = all(rb.values())
            recs[i]["robust"][k] = rb
    for r in recs.values():
        if not r["breaker"]:
            del r["breaker"]
    return recs


def _steps_plan(plan: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The attacks the steps check reruns: ``{name: {"param": "steps"|"n_iter"|..., "steps": k, "more": 2k}}``
    for every planned attack (not the ``autoattack`` entry) with an iteration-count parameter."""
    import inspect

    from advviz import attacks as A
    from advviz.evaluate.autoattack import _ALIASES

    out: dict[str, dict[str, Any]] = {}
    for name, params in plan:
        if name == "autoattack":
            continue
        sig = inspect.signature(A.get(name).fn).parameters
        key = next((k for k in _ALIASES["steps"] if k in sig), None)
        if key is None:
            continue
        k = int(params.get(key, sig[key].default))
        if k >= 1:
            out[name] = {"param": key, "steps": k, "more": 2 * k}
    return out


def _steps_flag(result: Result) -> str | None:
    """The ``non-monotonic`` flag of the steps check: per attack and budget, the share of the
    checked points (the same ones for every attack and budget) robust after ``k`` and ``2k`` steps."""
    plan = result.config.get("steps_check") or {}
    checked = [r["checks"]["steps"] for r in result.samples.values() if r.get("checks", {}).get("steps")]
    if not plan or not checked:
        return None
    grid: dict[str, dict[float, float]] = {}
    for e in result.eps:
        k = eps_key(e)
        for name, p in plan.items():
            pairs = [c[k][name] for c in checked if name in c.get(k, {})]
            if pairs:
                grid[f"{name} (eps={e:.5g})"] = {p["steps"]: sum(a for a, _ in pairs) / len(pairs),
                                                 p["more"]: sum(b for _, b in pairs) / len(pairs)}
    flag = F.monotonic_flag(grid, len(checked), what="steps")
    return None if flag is None else f"{flag} (steps check on {len(checked)} points)"


def _flags(result: Result, budget_flags: set[str]) -> list[str]:
    s = list(result.samples.values())
    correct = [r for r in s if r["clean"]]
    checks = [r.get("checks", {}) for r in correct]
    found: list[str | None] = [
        F.gradient_flag(sum(1 for c in checks if c.get("grad_ok") is False), len(correct)),
        F.probability_flag(sum(1 for r in s if r.get("checks", {}).get("prob_row")), len(s)),
        F.large_eps_flag(sum(1 for c in checks if c.get("large_eps_robust") is True),
                         sum(1 for c in checks if c.get("large_eps_robust") is not None)),
    ]
    if len(result.eps) > 1 and result.n:
        names = result.attacks + (["all"] if len(result.attacks) > 1 else [])
        found.append(F.monotonic_flag({a: {e: result.accuracy(a, e) for e in result.eps} for a in names}, result.n))
    found.append(_steps_flag(result))
    if any(a == "autoattack" for a in result.attacks):
        version = next(a.get("version") for a in result.config["attacks"] if a["name"] == "autoattack")
        if any(name == "square" for name, _ in VERSIONS.get(version, ())):
            for e in result.eps:
                k = eps_key(e)
                br = [r.get("breaker", {}).get(k, "clean") for r in correct]
                flag = F.blackbox_flag(sum(1 for b in br if b == "square"), sum(1 for b in br if b in (None, "square")))
                if flag:
                    found.append(flag + f" (eps={e:.5g})")
    found += sorted(budget_flags)
    return F.collect(found)
