"""Running on N processes with PyTorch's own engine (``torchrun`` / ``torch.distributed``).

advviz has no scheduler of its own: launch any command with ``torchrun`` and the pieces that
know how to share work (training in :func:`advviz.train.fit`, evaluation in
:mod:`advviz.evaluate`) do so. This module holds the few primitives they share.

* :func:`init` joins the process group that ``torchrun`` describes in the environment
  (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): backend ``nccl``
  on CUDA, ``gloo`` on CPU. Outside ``torchrun`` it does nothing and everything below behaves
  as one process (rank 0 of 1).
* :func:`rank`, :func:`world_size`, :func:`is_main`: where this process stands.
* :func:`shard`: this rank's share of a sequence of sample indices (``indices[rank::world]``),
  so that each sample is handled by exactly one process whatever N is.
* :func:`all_sum`, :func:`gather_objects`, :func:`barrier`: the collective operations used.
* :func:`local_device`: ``cuda:LOCAL_RANK`` when CUDA is present, else the CPU.
* :func:`shutdown`: wait for every rank, then leave the process group (the CLI calls it last;
  a rank that exits while holding the group can abort in the backend's threads).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["init", "active", "rank", "world_size", "is_main", "local_device", "shard", "all_sum",
           "gather_objects", "barrier", "backend_for", "shutdown"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def backend_for(device: torch.device | str | None = None) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` otherwise."""
    if device is None:
        device = local_device()
    return "nccl" if torch.device(device).type == "cuda" and dist.is_nccl_available() else "gloo"


def local_device() -> torch.device:
    """``cuda:$LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def init(device: torch.device | str | None = None) -> bool:
    """Join ``torchrun``'s process group when launched by it; return whether N > 1 processes run.

    Idempotent. ``device`` chooses the backend (default :func:`local_device`).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend)
    log.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_world_size() > 1


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, the process that writes files and shows progress."""
    return rank() == 0


def shard(indices: Sequence[T]) -> list[T]:
    """This rank's share of ``indices``: every ``world_size()``-th item from position ``rank()``."""
    return list(indices)[rank()::world_size()]


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over all processes (``values`` itself for one process); float64 on the CPU."""
    if not active():
        return values
    t = values.detach().to(torch.float64)
    if dist.get_backend() == "nccl":
        t = t.to(local_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` for one process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every process (nothing for one process)."""
    if active():
        dist.barrier()


def shutdown(*, wait: bool = True) -> None:
    """Wait for every process (``wait``), then destroy the process group (nothing outside one).

    After an error pass ``wait=False``: the other ranks may never reach the barrier; the rank
    exits with an error status and ``torchrun`` stops the others.
    """
    if dist.is_available() and dist.is_initialized():
        if wait and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
