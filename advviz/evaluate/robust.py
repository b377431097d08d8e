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
refuses a file written with another configuration or for other weights (the configuration holds
the sha256 of the model's tensors; ``advviz evaluate`` adds every artefact file's sha256). Ctrl-C (``KeyboardInterrupt``) stops after
the last finished batch and returns the partial :class:`Result` (``complete=False``).

``on_batch=`` is called after every finished batch with a :class:`Batch` (its per-sample records,
clean images and each attack's output), and ``should_stop=`` is polled before every batch and
between the attacks of a batch: when it returns ``True`` the run ends as after Ctrl-C. The
explorer's Robustness tab draws its security curves through them, so the tab and
``advviz evaluate`` give the same per-sample results for the same settings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from advviz import attacks as A
from advviz import distributed, metrics
from advviz._modules import module_device
from advviz._registry import parse_number
from advviz.attacks._core import check_budget
from advviz.evaluate import flags as F
from advviz.evaluate.autoattack import (
    JUDGE_RULE,
    VERSIONS,
    autoattack,
    batch_seed,
    check_runs,
    convergence_flags,
    correct_in_every_draw,
    iteration_count,
    restart_plan,
    weights_identity,
)

__all__ = ["Batch", "Result", "robust_accuracy", "eps_key", "DEFAULT_PARAMS", "ResumeMismatchError"]

log = logging.getLogger(__name__)

# parameters the runner gives an attack unless told otherwise ("eps/4" means a quarter of eps)
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"pgd": {"steps": 20, "alpha": "eps/4"}}


class ResumeMismatchError(ValueError):
    """A resume file cannot be used: written with another configuration or other weights, not a
    resume file, or damaged. The message names the file, what differs and what to do."""


class _Stopped(Exception):
    """``should_stop()`` returned True."""


@dataclass(frozen=True)
class Batch:
    """One finished batch of :func:`robust_accuracy`, as its ``on_batch`` callback receives it.

    Attributes:
        indices: the batch's dataset indices, in order (points read back from a resume file are
            not in it: they were done before).
        samples: their per-sample records, as in :attr:`Result.samples`.
        x: ``(B, C, H, W)`` the clean images in ``[0, 1]``, on the run's device.
        y: ``(B,)`` their labels.
        x_adv: ``{eps_key(eps): {attack: (B, C, H, W)}}``: each attack's output at each budget
            (for ``"autoattack"``, the output of the attack that broke the point). A point the
            attack did not break, or did not run on (misclassified to begin with), keeps its
            clean image.
        done: points of the selection done so far by this process (resumed ones included).
        total: points of the selection this process has to do.
    """

    indices: list[int]
    samples: dict[int, dict[str, Any]]
    x: torch.Tensor
    y: torch.Tensor
    x_adv: dict[str, dict[str, torch.Tensor]]
    done: int
    total: int


def eps_key(eps: float) -> str:
    """The string key of a budget in per-sample results and JSON (``8/255`` -> ``"0.0313725490196"``)."""
    return f"{float(eps):.12g}"


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


def _short(digest: Any) -> str:
    return f"{digest[:12]}..." if isinstance(digest, str) else "none recorded"


def _differences(head: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    """What differs between a resume file's configuration and this run's, in words."""
    keys = sorted(k for k in set(head) | set(want) if head.get(k) != want.get(k))
    words = []
    if "weights" in keys:
        old, new = head.get("weights"), want.get("weights") or {}
        if not isinstance(old, Mapping):
            words.append("the file records no identity of the weights (written by an older advviz), so its "
                         "results may be another model's")
        else:
            words += [f"the {role.replace('_', ' ')}'s weights (sha256 of its tensors {_short(old.get(role))} in "
                      f"the file, {_short(new.get(role))} now)" for role in sorted(set(old) | set(new))
                      if old.get(role) != new.get(role)]
    if "meta" in keys:
        old_m, new_m = head.get("meta") or {}, want.get("meta") or {}
        old_a, new_a = old_m.get("artifacts") or {}, new_m.get("artifacts") or {}
        words += [f"artefact {name} (sha256 {_short(old_a.get(name))} in the file, {_short(new_a.get(name))} now)"
                  for name in sorted(set(old_a) | set(new_a)) if old_a.get(name) != new_a.get(name)]
        words += [f"{k} ({old_m.get(k)!r} in the file, {new_m.get(k)!r} now)"
                  for k in sorted(set(old_m) | set(new_m)) if k != "artifacts" and old_m.get(k) != new_m.get(k)]
    return ", ".join(keys) + (": " + "; ".join(words) if words else "")


def _read_resume(path: Path, config: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The per-sample records of a resume file written with ``config``; refuses any other file."""
    done: dict[int, dict[str, Any]] = {}
    if not path.exists() or path.stat().st_size == 0:
        return done
    what = "delete it to start over, or give another resume path"
    if not path.is_file():
        raise ResumeMismatchError(f"{path} is not a file: give a file path for the resume file")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ResumeMismatchError(f"{path} is not an advviz evaluation resume file (not even text); {what}") from None
    except OSError as exc:
        raise ResumeMismatchError(f"cannot read the resume file {path} ({exc.strerror}); {what}") from None
    try:
        head = json.loads(lines[0])["config"]
        if not isinstance(head, dict):
            raise TypeError
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        raise ResumeMismatchError(f"{path} is not an advviz evaluation resume file (no config line); "
                                  "give another --resume path or delete it") from None
    want = json.loads(json.dumps(config))
    if head != want:
        raise ResumeMismatchError(f"{path} was written with another configuration (differs in: "
                                  f"{_differences(head, want)}); use another resume path, or delete the file to "
                                  "start over")
    attacks = [a["name"] for a in want["attacks"]] + ["all"]
    budgets = [eps_key(e) for e in want["eps"]]
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: its batch is redone
            log.warning("ignoring a truncated line in %s", path)
            continue
        problem = _record_problem(rec, budgets, attacks)
        if problem:
            raise ResumeMismatchError(f"{path}, line {number}: not a per-sample record of this evaluation "
                                      f"({problem}); the file is damaged or was edited: {what}")
        done[int(rec["index"])] = {k: v for k, v in rec.items() if k != "index"}
    return done


def _record_problem(rec: Any, budgets: Sequence[str], attacks: Sequence[str]) -> str | None:
    """Why ``rec`` is not a per-sample record with these budgets and attacks (``None``: it is one)."""
    if not isinstance(rec, dict):
        return f"a {type(rec).__name__}, not a record"
    for key, kind in (("index", int), ("clean", bool), ("robust", dict)):
        if key not in rec:
            return f"no {key!r}"
        if not isinstance(rec[key], kind) or (kind is int and isinstance(rec[key], bool)):
            return f"{key!r} is not a {kind.__name__}"
    for k in budgets:
        per = rec["robust"].get(k)
        if not isinstance(per, dict):
            return f"no results at eps {k}"
        if any(not isinstance(per.get(a), bool) for a in attacks):
            return f"not one true/false per attack at eps {k}"
    return None


def _open_for_append(part: Path, config: dict[str, Any] | None) -> None:
    """Make sure ``part`` can take this run's records before any work: write its configuration
    line when it is new or empty (``config=None``: leave a new file empty, only check), end a line
    cut by a kill, and refuse a path that cannot be written (read-only folder or file, a file
    where a folder should be) with one clear message."""
    try:
        if not part.exists() or part.stat().st_size == 0:
            part.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "a" if config is None else "w") as fh:
                if config is not None:
                    fh.write(json.dumps({"config": config}) + "\n")
            return
        with open(part, "rb+") as fh:  # opened for writing now, not after the first batch
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":  # a record cut by a kill: the next one starts on its own line
                fh.write(b"\n")
    except OSError as exc:
        raise ValueError(f"cannot write the resume file {part} ({exc.strerror or exc}): choose a path in a folder "
                         "you can write, or make this one writable") from None


def robust_accuracy(model: nn.Module, data: Dataset, *, attacks: Sequence[str | tuple[str, Mapping[str, Any]]],
                    eps: Sequence[float | str], norm: str = "Linf", n: int | None = None, batch_size: int = 128,
                    device: str | torch.device | None = None, progress: bool = True,
                    resume: str | os.PathLike[str] | None = None, seed: int = 0, version: str = "standard",
                    attack_model: nn.Module | None = None, batch_invariant: bool = False,
                    meta: Mapping[str, Any] | None = None, steps_check: bool = True,
                    restarts_check: bool = True, on_batch: Callable[[Batch], Any] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> Result:
    """Robust accuracy per budget and attack over a dataset (the security curve), resumable.

    The model is probed for randomness (:func:`advviz.evaluate.flags.randomized`) on the first
    :data:`~advviz.evaluate.flags.PROBE_POINTS` points of the selection (a resumed run takes the
    verdict its file recorded); a randomized model's points are judged by
    :data:`~advviz.evaluate.flags.JUDGE_DRAWS` draws (correct only if correct in all of them, its
    random draws seeded per batch), recorded in ``config["judge"]``.

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
        eps: budgets on the ``[0, 1]`` scale (numbers or strings like ``"8/255"``); each ``>= 0``, and
            at most 1 in L-infinity (``ValueError`` otherwise, suggesting ``k/255``).
        norm: ``"Linf"`` or ``"L2"``.
        n: number of points, drawn by a permutation seeded with ``seed`` (default: all, in order).
        batch_size: points per batch (and per resume record), at least 1.
        device: where to run (default: the model's device).
        progress: show a tqdm progress bar (stderr).
        resume: JSON-lines file of per-sample results: appended to as batches finish, read back on
            a rerun (done indices are skipped). A file written with another configuration or other
            weights (``config["weights"]``: the sha256 of the model's and ``attack_model``'s
            tensors), not a resume file, or holding a damaged record raises
            :class:`ResumeMismatchError` saying what differs; a path that cannot be written raises
            ``ValueError``; both before any work.
        seed: seeds the selection and every attack.
        version: AutoAttack version for the ``"autoattack"`` entry.
        attack_model: the model the attacks differentiate (default ``model``): the bare classifier
            for an oblivious evaluation, a BPDA/EOT wrapper for an adaptive one.
        batch_invariant: attack each point alone (per-point results independent of batching).
        meta: extra configuration recorded with the results (model name, data, threat model).
        steps_check: run every iterative attack (``steps``/``n_iter``; for the ``"autoattack"``
            entry its first, APGD-CE) again with ``k`` and ``2k`` steps on the first
            :data:`~advviz.evaluate.flags.STEPS_POINTS` correctly classified points at each
            budget, same seeds (``best=False`` where the attack has it: see
            :mod:`advviz.evaluate.flags`), and flag ``non-monotonic`` when more steps leave more
            than one more of them robust, ``not-converged`` when they break more than one more.
            Costs about ``3k`` steps on 16 points per attack and budget.
        restarts_check: run every attack with a random start from
            :data:`~advviz.evaluate.flags.RESTARTS` starts on the same points
            (:func:`~advviz.evaluate.autoattack.restart_plan`) and flag ``restarts`` when they
            break more than one point more than one start. Costs about ``RESTARTS - 1`` more
            runs on 16 points per attack and budget.
        on_batch: called after each finished batch (and after its resume record is written)
            with a :class:`Batch`: per-sample records, clean images, each attack's output. Under
            N processes each process calls its own for its own batches. An exception it raises
            ends the run and propagates.
        should_stop: polled before each batch and between the attacks of a batch; when it
            returns ``True`` the run ends as after Ctrl-C: the batch in progress is dropped
            (nothing of it is recorded or passed to ``on_batch``) and the partial result is
            returned.

    Returns:
        A :class:`Result`; ``complete=False`` if interrupted by Ctrl-C or ``should_stop``.
    """
    t_start = time.perf_counter()
    nrm = str(norm).lower()
    if nrm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
    grid = [check_budget("eps", parse_number(e), scale_255=nrm == "linf") for e in eps]
    if not grid:
        raise ValueError("eps is empty: give at least one budget, e.g. eps=[8/255]")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (points per batch), got {batch_size!r}")
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    plan: list[tuple[str, dict[str, Any]]] = []
    for a in attacks:
        name, params = (a, {}) if isinstance(a, str) else (a[0], dict(a[1]))
        if name == "autoattack":
            if version not in VERSIONS:
                raise ValueError(f"version must be one of {sorted(VERSIONS)}, got {version!r}")
        else:
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
    dev = torch.device(device) if device is not None else module_device(model)
    config: dict[str, Any] = {
        "eps": grid, "norm": "Linf" if nrm == "linf" else "L2", "seed": int(seed), "n": len(selection),
        "attacks": [{"name": a, "params": p, **({"version": version} if a == "autoattack" else {})} for a, p in plan],
        "batch_invariant": bool(batch_invariant), "batch_size": None if batch_invariant else int(batch_size),
        "data": {"name": getattr(data, "name", type(data).__name__), "split": getattr(data, "split", ""),
                 "size": total},
        "selection": "all, in order" if n is None else "torch.randperm(size, seed)[:n]",
        "steps_check": _steps_plan(plan, version) if steps_check else None,
        "restarts_check": _restarts_plan(plan, version) if restarts_check else None,
        "judge": None,
        "weights": weights_identity(model, attack_model),
        **({"meta": dict(meta)} if meta else {}),
    }
    world, rank = distributed.world_size(), distributed.rank()
    path = Path(resume) if resume is not None else None
    part = _part_path(path, rank, world) if path is not None else None
    if part is not None:
        _open_for_append(part, None)  # refuse a path that cannot be written before any work
    # how points are judged: the verdict a resume file of this very configuration recorded, else the probe's
    config["judge"] = (_recorded_judge(path, config) if path is not None else None) or _judge(model, data, selection,
                                                                                          dev)
    samples = _read_resume_parts(path, config) if path is not None else {}
    mine = [start for k, start in enumerate(range(0, len(selection), batch_size)) if k % world == rank]
    if part is not None:
        _open_for_append(part, config)
    amodel = model if attack_model is None else attack_model
    budget_flags: set[str] = set()  # flags of the autoattack calls (budget, few-classes), by text
    my_points = [int(i) for start in mine for i in selection[start:start + batch_size].tolist()]
    bar = tqdm(total=len(my_points), initial=sum(i in samples for i in my_points),
               disable=not progress or rank != 0, desc="evaluate" + (f" (rank 0 of {world})" if world > 1 else ""),
               unit="img", file=sys.stderr)
    complete = True
    try:
        for start in mine:
            if should_stop is not None and should_stop():
                raise _Stopped
            chunk = selection[start:start + batch_size]
            todo = torch.tensor([int(i) for i in chunk.tolist() if int(i) not in samples], dtype=torch.long)
            if not todo.numel():
                continue
            x, y = _gather(data, todo)
            x, y = x.to(dev), y.to(dev)
            advs: dict[str, dict[str, torch.Tensor]] = {}
            recs = _evaluate_batch(model, amodel, x, y, todo, positions=[start + j for j, i in enumerate(chunk.tolist())
                                                                     if int(i) not in samples],
                                   plan=plan, grid=grid, norm=nrm, seed=int(seed), version=version,
                                   steps_plan=config["steps_check"], restarts_plan=config["restarts_check"],
                                   draws=config["judge"]["draws"],
                                   batch_size=batch_size, batch_invariant=batch_invariant, budget_flags=budget_flags,
                                   adversarial=advs, should_stop=should_stop)
            if part is not None:
                with open(part, "a") as fh:
                    fh.write("".join(json.dumps({"index": i, **r}) + "\n" for i, r in recs.items()))
            samples.update(recs)
            bar.update(len(recs))
            if on_batch is not None:
                on_batch(Batch(indices=todo.tolist(), samples=recs, x=x, y=y, x_adv=advs,
                               done=sum(i in samples for i in my_points), total=len(my_points)))
    except (KeyboardInterrupt, _Stopped) as stop:
        complete = False
        log.log(logging.WARNING if isinstance(stop, KeyboardInterrupt) else logging.INFO,
                "%s: %d of %d points done%s", "interrupted" if isinstance(stop, KeyboardInterrupt) else "stopped",
                len(samples), len(selection), f"; rerun with resume={str(path)!r} to continue" if path else "")
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


def _recorded_judge(path: Path, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``judge`` entry of a resume file (or of its ``.rank*`` parts) written with ``config``
    otherwise, so that a run with nothing left to do calls the model not even for the probe; ``None``
    when there is no such file (a file written otherwise is refused later, saying what differs)."""
    want = json.loads(json.dumps({k: v for k, v in config.items() if k != "judge"}))
    for part in [path, *sorted(path.parent.glob(f"{path.name}.rank*"))]:
        try:
            with open(part, "rb") as fh:
                head = json.loads(fh.readline().decode("utf-8"))["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(head, dict) and isinstance(head.get("judge"), dict) and \
                {k: v for k, v in head.items() if k != "judge"} == want:
            return head["judge"]
    return None


def _judge(model: nn.Module, data: Dataset, selection: torch.Tensor, dev: torch.device) -> dict[str, Any]:
    """How points are judged: the determinism probe on the selection's first points
    (:func:`advviz.evaluate.flags.randomized`) and the draws it implies."""
    x, _ = _gather(data, selection[:F.PROBE_POINTS])
    is_random = bool(F.randomized(model, x.to(dev))) if x.shape[0] else False
    draws = F.JUDGE_DRAWS if is_random else 1
    return {"randomized": is_random, "draws": draws, "rule": JUDGE_RULE if is_random else "one forward pass"}


def _evaluate_batch(model: nn.Module, amodel: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *,
                    positions: list[int], plan: list[tuple[str, dict[str, Any]]], grid: list[float], norm: str,
                    seed: int, version: str, batch_size: int, batch_invariant: bool,
                    budget_flags: set[str], steps_plan: Mapping[str, Any] | None = None,
                    restarts_plan: Mapping[str, Any] | None = None, draws: int = 1,
                    adversarial: dict[str, dict[str, torch.Tensor]] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> dict[int, dict[str, Any]]:
    """Per-sample records of one batch (the clean checks, then every eps and attack).

    ``adversarial``, when given, receives each attack's output per budget (``{eps_key: {attack:
    x_adv}}``); ``should_stop`` is polled before each attack (raises ``_Stopped``).
    """
    devices = [x.device] if x.device.type == "cuda" else []
    # a randomized model's draws: seeded by the batch; its fast copy cannot be checked against it
    with torch.random.fork_rng(devices=devices), (A.fast_models(False) if draws > 1 else contextlib.nullcontext()):
        torch.manual_seed(batch_seed(seed, idx))
        return _batch_records(model, amodel, x, y, idx, positions=positions, plan=plan, grid=grid, norm=norm,
                              seed=seed, version=version, batch_size=batch_size, batch_invariant=batch_invariant,
                              budget_flags=budget_flags, steps_plan=steps_plan or {},
                              restarts_plan=restarts_plan or {}, draws=draws, adversarial=adversarial,
                              should_stop=should_stop)


def _batch_records(model: nn.Module, amodel: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *,
                   positions: list[int], plan: list[tuple[str, dict[str, Any]]], grid: list[float], norm: str,
                   seed: int, version: str, batch_size: int, batch_invariant: bool, budget_flags: set[str],
                   steps_plan: Mapping[str, Any], restarts_plan: Mapping[str, Any], draws: int,
                   adversarial: dict[str, dict[str, torch.Tensor]] | None,
                   should_stop: Callable[[], bool] | None) -> dict[int, dict[str, Any]]:
    logits = metrics.logits(model, x, batch_size=batch_size)
    correct = logits.argmax(1) == y
    if draws > 1:
        correct &= correct_in_every_draw(model, x, y, draws=draws - 1, batch_size=batch_size)
    prob = F.probability_rows(logits)
    grad = torch.zeros_like(correct)
    ce_grad = torch.zeros_like(correct)
    if correct.any():
        grad[correct] = F.gradient_ok(amodel, x[correct], y[correct])
        ce_grad[correct] = F.gradient_ok(amodel, x[correct], y[correct], loss="ce")
    big = torch.zeros_like(correct)
    few = torch.tensor([j for j, p in enumerate(positions) if p < F.LARGE_EPS_POINTS and bool(correct[j])],
                       dtype=torch.long, device=x.device)
    if few.numel():
        big[few] = F.large_eps_robust(amodel, model, x[few], y[few], seed=seed)
    ids = idx.tolist()
    check = torch.tensor([j for j, p in enumerate(positions) if p < F.STEPS_POINTS and bool(correct[j])],
                         dtype=torch.long, device=x.device)
    recs: dict[int, dict[str, Any]] = {}
    for j, i in enumerate(ids):
        c = bool(correct[j])
        recs[i] = {"clean": c, "robust": {}, "breaker": {}, "checks": {
            "prob_row": bool(prob[j]), "grad_ok": bool(grad[j]) if c else None,
            "ce_grad_ok": bool(ce_grad[j]) if c else None,
            "large_eps_robust": bool(big[j]) if c and j in few.tolist() else None}}
    for e in grid:
        k = eps_key(e)
        per_attack: dict[str, list[bool]] = {}
        for name, params in plan:
            if should_stop is not None and should_stop():
                raise _Stopped
            if name == "autoattack":
                rep = autoattack(model, x, y, eps=e, norm=norm, version=version, seed=seed, batch_size=batch_size,
                                 indices=idx, batch_invariant=batch_invariant, attack_model=amodel, checks=False,
                                 draws=draws, provenance=())
                for j, i in enumerate(ids):
                    recs[i]["breaker"][k] = rep.per_sample[j]
            else:
                rep = autoattack(model, x, y, eps=e, norm=norm, seed=seed, batch_size=batch_size, indices=idx,
                                 attacks=[(name, _params_for(name, params, e))], batch_invariant=batch_invariant,
                                 attack_model=amodel, checks=False, draws=draws, provenance=())
            budget_flags.update(f for f in rep.flags if f.startswith(("budget", "few-classes")))
            per_attack[name] = [s is None for s in rep.per_sample]
            if adversarial is not None:
                adversarial.setdefault(k, {})[name] = rep.x_adv
            checked_name = (steps_plan.get(name) or restarts_plan.get(name) or {}).get("attack", name)
            if check.numel() and (name in steps_plan or name in restarts_plan):  # the steps and restarts checks
                target = _check_target(name, params, version, e)
                runs = check_runs(checked_name, target, amodel, model, x[check], y[check], eps=e, norm=norm,
                                  seed=seed, indices=idx[check.cpu()], batch_size=batch_size,
                                  batch_invariant=batch_invariant, draws=draws, steps=name in steps_plan,
                                  restarts=name in restarts_plan)
                for what, pairs in runs.items():
                    for j, pair in zip(check.tolist(), pairs, strict=True):
                        recs[ids[j]]["checks"].setdefault(what, {}).setdefault(k, {})[name] = pair
        for j, i in enumerate(ids):
            rb = {a: v[j] for a, v in per_attack.items()}
            rb["all"] = all(rb.values())
            recs[i]["robust"][k] = rb
    for r in recs.values():
        if not r["breaker"]:
            del r["breaker"]
    return recs


def _check_target(name: str, params: Mapping[str, Any], version: str, eps: float) -> dict[str, Any]:
    """The parameters the checks run plan entry ``name`` with (for ``"autoattack"``: its first
    iterative attack's, as the version gives them)."""
    if name == "autoattack":
        return dict(next(p for n, p in VERSIONS[version] if iteration_count(n, p)[0] is not None))
    return _params_for(name, params, eps)


def _steps_plan(plan: Sequence[tuple[str, Mapping[str, Any]]], version: str = "standard") -> dict[str, dict[str, Any]]:
    """The attacks the steps check reruns: ``{name: {"param": "steps"|"n_iter"|..., "steps": k, "more": 2k}}``
    for every planned attack with an iteration-count parameter; for ``"autoattack"`` its first
    iterative attack (``"attack"`` names it)."""
    out: dict[str, dict[str, Any]] = {}
    for name, params in plan:
        attack, p = name, params
        if name == "autoattack":
            attack, p = next((n, q) for n, q in VERSIONS[version] if iteration_count(n, q)[0] is not None)
        key, k = iteration_count(attack, p)
        if key is not None:
            out[name] = {"param": key, "steps": k, "more": 2 * k, **({"attack": attack} if attack != name else {})}
    return out


def _restarts_plan(plan: Sequence[tuple[str, Mapping[str, Any]]], version: str = "standard"
                   ) -> dict[str, dict[str, Any]]:
    """The attacks the restarts check reruns from several random starts: ``{name: restart_plan}``
    (:func:`~advviz.evaluate.autoattack.restart_plan`); for ``"autoattack"`` its first iterative attack."""
    out: dict[str, dict[str, Any]] = {}
    for name, params in plan:
        attack, p = name, params
        if name == "autoattack":
            attack, p = next((n, q) for n, q in VERSIONS[version] if iteration_count(n, q)[0] is not None)
        how = restart_plan(attack, p)
        if how is not None:
            out[name] = {**how, **({"attack": attack} if attack != name else {})}
    return out


def _checks_flags(result: Result) -> list[str | None]:
    """The ``non-monotonic`` (more steps did worse), ``not-converged`` and ``restarts`` flags of the
    steps and restarts checks: per attack and budget, on the checked points (the same for all)."""
    steps_plan = result.config.get("steps_check") or {}
    checked = [r["checks"] for r in result.samples.values()
               if r.get("checks", {}).get("steps") or r.get("checks", {}).get("restarts")]
    if not checked:
        return []
    runs: dict[str, dict[str, list[list[bool]]]] = {}
    steps: dict[str, tuple[int, int]] = {}
    for e in result.eps:
        k = eps_key(e)
        for name in result.attacks:
            label = f"{name} (eps={e:.5g})"
            for what in ("steps", "restarts"):
                pairs = [c[what][k][name] for c in checked if name in c.get(what, {}).get(k, {})]
                if pairs:
                    runs.setdefault(label, {})[what] = pairs
            if name in steps_plan:
                steps[label] = (steps_plan[name]["steps"], steps_plan[name]["more"])
    return convergence_flags(runs, steps)


def _flags(result: Result, budget_flags: set[str]) -> list[str]:
    s = list(result.samples.values())
    correct = [r for r in s if r["clean"]]
    checks = [r.get("checks", {}) for r in correct]
    judge = result.config.get("judge") or {}
    saturated = F.saturated_flag(sum(1 for c in checks if c.get("grad_ok") is True and c.get("ce_grad_ok") is False),
                                 len(correct))
    found: list[str | None] = [
        F.randomized_flag(judge.get("randomized"), judge.get("draws", 1)),
        F.gradient_flag(sum(1 for c in checks if c.get("grad_ok") is False), len(correct)),
        saturated,
        F.probability_flag(sum(1 for r in s if r.get("checks", {}).get("prob_row")), len(s)),
        F.large_eps_flag(sum(1 for c in checks if c.get("large_eps_robust") is True),
                         sum(1 for c in checks if c.get("large_eps_robust") is not None),
                         saturated=saturated is not None),
    ]
    if len(result.eps) > 1 and result.n:
        names = result.attacks + (["all"] if len(result.attacks) > 1 else [])
        found.append(F.monotonic_flag({a: {e: result.accuracy(a, e) for e in result.eps} for a in names}, result.n))
    found += _checks_flags(result)
    if any(a == "autoattack" for a in result.attacks):
        version = next(a.get("version") for a in result.config["attacks"] if a["name"] == "autoattack")
        if any(name == "square" for name, _ in VERSIONS.get(version, ())):
            for e in result.eps:
                k = eps_key(e)
                n_square = sum(1 for r in correct if r.get("breaker", {}).get(k) == "square")
                flag = F.blackbox_flag(n_square, result.n)
                if flag:
                    found.append(flag + f" (eps={e:.5g}, the autoattack entry)")
    if (result.config.get("meta") or {}).get("threat") == "adaptive":
        found.append(F.weak_adaptive_flag({a["name"]: 0 if a["name"] == "autoattack" else
                                           iteration_count(a["name"], a["params"])[1]
                                           for a in result.config["attacks"]}))
    found += sorted(budget_flags)
    return F.collect(found)
