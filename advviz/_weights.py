"""Weight files, safely: read and write state dicts, and the sha256 digests that identify them.

The one copy of each, used by the model zoo (:mod:`advviz.models`), the artefact store
(:mod:`advviz.artifacts`), the training engine and the evaluation's resume files:

* :func:`load_state_file`: a state dict from ``.safetensors`` or a PyTorch checkpoint, never
  unpickling code (``torch.load(..., weights_only=True)``);
* :func:`save_weights`: a module's state dict as safetensors with string metadata, written
  atomically (a temporary file in the same folder, then :func:`os.replace`), so an interrupted
  write never leaves a half-written file where a good one was;
* :func:`sha256_file` (a file) and :func:`tensors_sha256` (the tensors of a state dict, in key
  order: the same weights give the same digest whatever the file's metadata says).

This module imports nothing from advviz.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["CheckpointError", "load_state_file", "save_weights", "save_state", "sha256_file", "tensors_sha256",
           "atomic_write_bytes", "read_metadata"]


class CheckpointError(ValueError):
    """A weight file is missing, corrupt, or does not fit the architecture."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def tensors_sha256(state: Mapping[str, torch.Tensor] | nn.Module, *, names: bool = True) -> str:
    """Hex sha256 over a state dict's tensors (dtype, shape, bytes), in sorted key order.

    The identity of weights wherever they live (CPU or GPU give the same digest) and whatever file
    holds them. Non-tensor entries (``extra_state``) enter through their ``repr``.

    Args:
        state: a state dict, or a module (its ``state_dict()``).
        names: include the entries' names. ``False`` gives the identity of the weights whatever
            wraps them (a wrapper that holds the model as a submodule, adding nothing, has the
            model's identity).

    Returns:
        64 hex digits.
    """
    if isinstance(state, nn.Module):
        state = state.state_dict()
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if names:
            h.update(json.dumps(key).encode())
        if not isinstance(value, torch.Tensor):
            h.update(f"{value!r}\n".encode())
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}\0{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """A safetensors file's string metadata (``{}`` for other files or none).

    Raises:
        CheckpointError: the file cannot be read as safetensors.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}

    try:
        with safe_open(str(path), "pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - reported with the file's name
        raise CheckpointError(f"cannot read {path} ({type(exc).__name__}: {exc}); the file is corrupt: delete it "
                              "and make it again") from exc


def load_state_file(path: str | os.PathLike[str], *, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a PyTorch checkpoint, safely.

    PyTorch files are read with ``weights_only=True``; a ``{"state_dict": ...}`` wrapper and a
    ``module.`` prefix (``DataParallel``) are removed.

    Args:
        path: the file.
        expected_sha256: when given, the file's sha256 must equal it.

    Raises:
        CheckpointError: missing file, sha256 mismatch, or unreadable/corrupt content.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"{path} is corrupt (sha256 differs from the published {expected_sha256[:12]}…); "
                              "delete it and download it again")
    try:
        if path.suffix == ".safetensors":
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zips, pickles with code, garbage bytes ...
        raise CheckpointError(f"cannot read {path} as weights ({type(exc).__name__}: {exc}); the file is corrupt "
                              "or not a weight file; delete it and download or retrain it") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _temporary(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_state(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str], *,
               metadata: Mapping[str, Any] | None = None) -> Path:
    """Save tensors as safetensors at ``path``, atomically, with string metadata (non-strings as JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tmp = _temporary(path)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_weights(model: nn.Module, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None,
                 half: bool = False) -> Path:
    """Save ``model.state_dict()`` as safetensors (atomically), with string metadata.

    ``half=True`` stores floating-point tensors as float16 (half the size, for weights that ship
    with advviz); ``load_state_dict`` casts them back to the model's dtype.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return save_state(state, path, metadata=metadata)
