"""The one checkpoint format of advviz's training engine (:func:`advviz.train.fit_steps`).

A checkpoint is a pair written after every complete epoch: ``<stem>.safetensors`` (``model.*``:
the module's state; ``optim.<i>.*``: optimizer ``i``'s tensors) and ``<stem>.json`` (``format``,
``epoch``, ``history``, ``run``, ``config``, the optimizers' hyper-parameters, ``extra``), each
written atomically, the JSON last (it declares the epoch complete).

**Resuming only what was asked for.** The JSON holds the run's full configuration (``config``:
for :func:`advviz.train.fit` the optimizer, learning rate, batch size, seed, schedule, loss,
augmentation, the architecture and the data size). A checkpoint resumes a run only when its
configuration is the run's own; otherwise :func:`check_config` refuses it with the differences
and the way to start fresh (``fresh=True``, ``advviz train --fresh``) instead of resuming (and
saving) weights trained with other settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from advviz._weights import CheckpointError, atomic_write_bytes, save_state

__all__ = ["CHECKPOINT_FORMAT", "read_checkpoint", "checkpoint_paths", "read_meta", "save_checkpoint",
           "load_checkpoint", "check_config", "ConfigMismatch"]


class ConfigMismatch(CheckpointError):
    """A checkpoint was written by a run with another configuration."""


#: The format tag of the checkpoints :func:`fit_steps` writes (``advviz-fit-1``: the same pair of
#: files with one optimizer, still read).
CHECKPOINT_FORMAT = "advviz-fit-2"



def checkpoint_paths(stem: Path) -> tuple[Path, Path]:
    """``(<stem>.safetensors, <stem>.json)`` (a ``.safetensors``/``.json`` suffix of ``stem`` is dropped)."""
    base = stem.with_suffix("") if stem.suffix in (".safetensors", ".json") else stem
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def read_meta(stem: Path) -> dict[str, Any]:
    """The checkpoint's JSON (``CheckpointError`` when unreadable)."""
    json_path = checkpoint_paths(stem)[1]
    try:
        return json.loads(json_path.read_text())
    except Exception as exc:
        raise CheckpointError(f"checkpoint {stem} is unreadable ({exc}); delete {checkpoint_paths(stem)[0].name} and "
                              f"{json_path.name} to start over") from exc


def read_checkpoint(stem: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The module tensors (``model.`` prefix removed) and the JSON of a :func:`fit_steps` checkpoint.

    Returns ``None`` when there is no checkpoint at ``stem``; raises
    :class:`~advviz.models.CheckpointError` when it is unreadable.
    """
    stem = Path(stem)
    if not checkpoint_paths(stem)[1].is_file():
        return None
    tensors, meta = _read_all(stem)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, meta


def _read_all(stem: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors_path, json_path = checkpoint_paths(stem)
    meta = read_meta(stem)
    try:
        tensors = load_file(str(tensors_path))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {stem} is unreadable ({exc}); delete {tensors_path.name} and "
                              f"{json_path.name} to start over") from exc
    return tensors, meta


def save_checkpoint(stem: Path, module: nn.Module, optimizers: Sequence[torch.optim.Optimizer], epoch: int,
                    history: list[dict[str, float]], *, run: str | None = None,
                    extra: dict[str, Any] | None = None, config: Mapping[str, Any] | None = None) -> None:
    """Write the checkpoint of ``module`` and ``optimizers`` after ``epoch`` complete epochs (atomically)."""
    tensors_path, json_path = checkpoint_paths(stem)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    opt_meta = []
    for i, opt in enumerate(optimizers):
        opt_state = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, pstate in opt_state["state"].items():
            for key, val in pstate.items():
                if isinstance(val, torch.Tensor):
                    tensors[f"optim.{i}.{pid}.{key}"] = val.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[key] = val
        opt_meta.append({"param_groups": opt_state["param_groups"], "scalars": scalars})
    meta = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "history": history, "run": run,
            "config": None if config is None else dict(config), "optimizers": opt_meta, "extra": extra or {}}
    # tensors first, then the JSON that declares the epoch complete
    save_state(tensors, tensors_path)
    atomic_write_bytes(json_path, json.dumps(meta, indent=1).encode())


def load_checkpoint(stem: Path, module: nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                    dev: torch.device) -> tuple[int, list[dict[str, float]]]:
    """Load a checkpoint into ``module`` and ``optimizers``; returns ``(epochs done, history)``."""
    tensors, meta = _read_all(stem)
    try:
        module.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {stem} does not fit this model: {exc}") from exc
    if meta.get("format") == "advviz-fit-1":  # one optimizer: optim.<pid>.<key>, param_groups, optim_scalars
        opt_meta = [{"param_groups": meta["param_groups"], "scalars": meta.get("optim_scalars", {})}]
        tensors = {f"optim.0.{k[len('optim.'):]}": v for k, v in tensors.items() if k.startswith("optim.")}
    else:
        opt_meta = meta["optimizers"]
    if len(opt_meta) != len(optimizers):
        raise CheckpointError(f"checkpoint {stem} holds {len(opt_meta)} optimizer(s), this run has {len(optimizers)}; "
                              "delete it to start over")
    for i, (opt, om) in enumerate(zip(optimizers, opt_meta)):
        opt_state: dict[str, Any] = {"state": {}, "param_groups": om["param_groups"]}
        prefix = f"optim.{i}."
        for k, v in tensors.items():
            if k.startswith(prefix):
                pid, key = k[len(prefix):].split(".", 1)
                opt_state["state"].setdefault(int(pid), {})[key] = v.to(dev)
        for pid, vals in om["scalars"].items():
            opt_state["state"].setdefault(int(pid), {}).update(vals)
        opt.load_state_dict(opt_state)
    return int(meta["epoch"]), list(meta["history"])


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def check_config(stem: Path, meta: Mapping[str, Any], config: Mapping[str, Any] | None) -> None:
    """Refuse to resume checkpoint ``stem`` unless it was written with ``config``.

    ``config=None`` (a caller that records none) checks nothing.

    Raises:
        ConfigMismatch: the checkpoint's configuration differs (each difference is named), or it
            records none (written by an older advviz); the message says how to start fresh.
    """
    if config is None:
        return
    paths = " and ".join(p.name for p in checkpoint_paths(stem))
    fresh = (f"To start fresh, pass fresh=True (advviz train: --fresh), or delete {paths}; to resume it, run with "
             "its settings")
    saved = meta.get("config")
    if saved is None:
        raise ConfigMismatch(f"checkpoint {stem} records no training configuration (an older advviz wrote it), so "
                             f"it cannot be checked against this run's. {fresh}.")
    want = json.loads(_show(config))
    diffs = [f"{k}: checkpoint {_show(saved.get(k))}, this run {_show(want.get(k))}"
             for k in sorted(set(saved) | set(want)) if saved.get(k) != want.get(k)]
    if diffs:
        raise ConfigMismatch(f"checkpoint {stem} was written by a run with other settings ({'; '.join(diffs)}); "
                             f"resuming it would continue that run, not this one. {fresh}.")
