"""The training engine: one loop (:func:`fit_steps`) for classifiers, purifiers and GANs.

:func:`fit_steps` runs :class:`Step` s over batches with one seeding approach, one checkpoint
format (:mod:`advviz.train.checkpoints`), a tqdm.auto progress bar, callbacks and a clean stop
(Ctrl-C or ``state.request_stop()``: the last complete epoch is kept). :func:`batches` yields
batches of any dataset or ``(x, y)`` pair.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from advviz import distributed as dist
from advviz._modules import module_device
from advviz.data import ImageDataset
from advviz.train.checkpoints import check_config, checkpoint_paths, load_checkpoint, read_meta, save_checkpoint

__all__ = ["TrainState", "Callback", "FitResult", "Step", "fit_steps", "epoch_callback", "batches", "default_device",
           "plateaued", "num_items"]

log = logging.getLogger("advviz.train")


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TrainState:
    """What callbacks (and steps) see. ``request_stop()`` ends training after the current batch.

    ``epoch`` and ``batch`` count from 1; ``generator`` is the epoch's seeded CPU generator;
    ``values`` the last step's numbers (per unit of weight); ``loss`` what a step reports as its loss.
    """

    model: nn.Module
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches_per_epoch: int = 0
    loss: float = float("nan")
    history: list[dict[str, float]] = field(default_factory=list)
    stop_requested: bool = False
    generator: torch.Generator | None = None
    values: dict[str, float] = field(default_factory=dict)

    def request_stop(self) -> None:
        """Ask ``fit`` to stop; the last complete epoch is kept."""
        self.stop_requested = True


class Callback(Protocol):
    """Any object with some of these methods; each is optional."""

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_batch_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


@dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
        history: one dict per complete epoch: ``epoch``, ``loss``, ``accuracy`` (training),
            ``val_loss``/``val_accuracy`` (with ``val_data``), ``seconds``, ``lr``.
        interrupted: training stopped early (Ctrl-C or a stop request).
        epochs_completed: number of complete epochs, counting resumed ones.
        checkpoint: the checkpoint path stem, if any.
    """

    history: list[dict[str, float]]
    interrupted: bool
    epochs_completed: int
    checkpoint: Path | None = None

    @property
    def last(self) -> dict[str, float]:
        """The last epoch's record (empty when no epoch completed)."""
        return self.history[-1] if self.history else {}


def batches(data: Dataset | tuple[torch.Tensor, torch.Tensor], batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` CPU batches from an :class:`ImageDataset`, a ``(x, y)`` pair or any dataset."""
    if isinstance(data, tuple):
        x_all, y_all = data
        n = x_all.shape[0]
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            yield x_all[idx], y_all[idx]
    elif isinstance(data, ImageDataset):
        n = len(data)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for s in range(0, n, batch_size):
            yield data.tensors(order[s:s + batch_size])
    else:
        loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
        for x, y in loader:
            yield x, torch.as_tensor(y)


def num_items(data: Dataset | tuple[torch.Tensor, torch.Tensor]) -> int:
    """The number of items of a dataset or an ``(x, y)`` pair."""
    return data[0].shape[0] if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]


def plateaued(history: Sequence[dict[str, float]], tol: float = 0.01) -> bool:
    """Whether some epoch's training loss improved by less than ``tol`` (relative) on the epoch before."""
    losses = [h["loss"] for h in history if "loss" in h]
    return any(b > a * (1 - tol) for a, b in zip(losses, losses[1:]))


class Step(Protocol):
    """One training step of :func:`fit_steps`: takes a batch, updates the networks, reports numbers.

    The step does its own forward and backward passes and calls its optimizers' ``step()`` (a GAN
    step may update a critic and then a generator, or only the critic: ``state.batch`` counts the
    epoch's batches from 1, so ``state.batch % n_critic == 0`` marks a generator step). It draws
    any randomness from ``state.generator`` (seeded per epoch) or the global RNG (seeded per
    epoch as well). It returns the numbers to average over the epoch, either

    * a mapping ``{name: value}``: each step counts once (a name missing from a step is not
      counted for it), or
    * ``(totals, weight)``: the totals are summed over the epoch and divided by the summed
      weight (e.g. ``({"loss": loss * batch_size}, batch_size)`` for a per-image mean).
    """

    def __call__(self, batch: Any, state: TrainState) -> Mapping[str, float] | tuple[Mapping[str, float], float]: ...


def fit_steps(
    module: nn.Module,
    step: Step,
    data: Callable[[TrainState], Iterable[Any]],
    *,
    optimizers: Sequence[torch.optim.Optimizer],
    epochs: int,
    steps_per_epoch: int | Callable[[int], int],
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    run: str | None = None,
    extra: Callable[[], dict[str, Any]] | None = None,
    start_epoch: int = 0,
    history: list[dict[str, float]] | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    description: str = "train",
    show: Sequence[str] = (),
    leave: bool = True,
    train_mode: Callable[[], Any] | None = None,
    end_epoch: Callable[[dict[str, float]], None] | None = None,
    distributed: bool = False,
    config: Mapping[str, Any] | None = None,
    fresh: bool = False,
) -> FitResult:
    """The training engine behind :func:`fit` and every GAN and purifier loop of advviz.

    For each epoch from ``start_epoch`` to ``epochs``: seed (``torch.manual_seed`` and a CPU
    ``torch.Generator``, both with ``seed * 100_003 + epoch``, inside ``torch.random.fork_rng`` so
    the caller's random state is left alone), put the networks in training mode, run ``step``
    on every batch of ``data(state)``, then append the epoch's record (``epoch``, the
    averages of the step's numbers, ``seconds``, and what ``end_epoch`` adds) to the history and
    write the checkpoint. A tqdm.auto bar counts the steps.

    Ctrl-C (``KeyboardInterrupt``, also raised from a callback) or a callback's
    ``state.request_stop()`` stops cleanly: ``module`` and every optimizer are put back to the
    last *complete* epoch (what the checkpoint holds) and the result says ``interrupted=True``.
    Afterwards ``module`` is in eval mode.

    Checkpoint (one format for all of advviz): ``<stem>.safetensors`` (``model.*``: the module's
    state; ``optim.<i>.*``: optimizer ``i``'s tensors) and ``<stem>.json`` (``format``, ``epoch``,
    ``history``, ``run``, the optimizers' hyper-parameters, ``extra``), written atomically, the
    JSON last. An existing checkpoint of the same ``run`` that is not behind ``start_epoch`` is
    resumed from (module, optimizers, epoch, history) when it was written with the same ``config``
    (:func:`~advviz.train.checkpoints.check_config` refuses it otherwise, naming what differs); one
    of another ``run`` is ignored (and overwritten); ``fresh=True`` ignores any checkpoint.

    Args:
        module: everything that is trained, checkpointed and restored (e.g. an
            ``nn.ModuleDict`` of a generator and a critic), on its device already.
        step: the :class:`Step`.
        data: ``state -> iterable of batches`` for epoch ``state.epoch`` (shuffle with
            ``state.generator``).
        optimizers: the step's optimizers (checkpointed and restored with ``module``).
        epochs: total epochs (a resumed run continues up to this number).
        steps_per_epoch: batches per epoch (for the progress bar), or ``epoch -> batches``.
        seed: the run's seed.
        device: where the networks are (its CUDA random state is forked too).
        checkpoint: path stem (a ``.safetensors`` or ``.json`` suffix is dropped), or ``None``.
        run: a tag stored in the checkpoint; only a checkpoint of the same tag is resumed.
        extra: called at every checkpoint; a JSON-serialisable dict stored as ``extra``.
        start_epoch: epochs already done (e.g. kept by the caller in memory).
        history: the records of the epochs already done; the list is extended in place.
        callbacks: objects with optional ``on_train_begin/on_batch_end/on_epoch_end/
            on_train_end(state)`` methods.
        progress: show the bar; ``description``: its label; ``show``: the step's numbers it
            shows; ``leave``: keep it after the run.
        train_mode: called at the start of every epoch (default ``module.train()``).
        end_epoch: completes an epoch's record (e.g. validation) before it is stored.
        distributed: torchrun: only rank 0 shows progress and writes checkpoints, a stop
            request of one rank stops all, and the epoch's numbers are summed over the ranks.
        config: the run's configuration (JSON-ready), stored in the checkpoint; a checkpoint of
            the same ``run`` is resumed only when its ``config`` is this one (``None``: not checked).
        fresh: start from epoch ``start_epoch`` whatever checkpoint exists (it is overwritten).

    Raises:
        advviz.train.checkpoints.ConfigMismatch: the checkpoint was written with another ``config``.

    Returns:
        :class:`FitResult`.
    """
    dev = torch.device(device) if device is not None else module_device(module)
    rank = dist.rank() if distributed else 0
    state = TrainState(model=module, epochs=epochs)
    state.history = history if history is not None else []
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and fresh and checkpoint_paths(ckpt)[1].is_file():
        log.info("starting fresh: %s will be overwritten after the first complete epoch", ckpt)
    elif ckpt is not None and checkpoint_paths(ckpt)[1].is_file():
        meta = read_meta(ckpt)
        if meta.get("run") == run and int(meta["epoch"]) >= start_epoch:
            check_config(ckpt, meta, config)
            start_epoch, saved_history = load_checkpoint(ckpt, module, optimizers, dev)
            state.history[:] = saved_history
            log.info("resuming from %s after epoch %d", ckpt, start_epoch)
        else:
            log.info("not resuming from %s: written by run %r at epoch %s (this run: %r from epoch %d)", ckpt,
                     meta.get("run"), meta.get("epoch"), run, start_epoch)
    per_epoch = steps_per_epoch if callable(steps_per_epoch) else (lambda _e: int(steps_per_epoch))
    last_good = (copy.deepcopy(module.state_dict()), [copy.deepcopy(o.state_dict()) for o in optimizers])
    interrupted = False
    _call(callbacks, "on_train_begin", state)
    bar = tqdm(total=sum(per_epoch(e) for e in range(start_epoch, epochs)), desc=description,
               disable=not progress or rank != 0, leave=leave, dynamic_ncols=True)
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            for epoch in range(start_epoch, epochs):
                torch.manual_seed(seed * 100_003 + epoch)
                state.generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
                state.epoch, state.batches_per_epoch = epoch + 1, per_epoch(epoch)
                if train_mode is None:
                    module.train()
                else:
                    train_mode()
                t0 = time.perf_counter()
                sums: dict[str, float] = {}
                counts: dict[str, float] = {}
                for bi, batch in enumerate(data(state)):
                    state.batch = bi + 1
                    out = step(batch, state)
                    totals, weight = out if isinstance(out, tuple) else (out, 1.0)
                    for k, v in totals.items():
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0.0) + weight
                    state.values = {k: v / weight for k, v in totals.items()} if weight else dict(totals)
                    bar.update(1)
                    bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", refresh=False,
                                    **{k: f"{state.values[k]:.4f}" for k in show if k in state.values})
                    _call(callbacks, "on_batch_end", state)
                    if distributed:  # one rank's stop request stops them all, at the same batch
                        state.stop_requested = bool(dist.all_sum(torch.tensor([float(state.stop_requested)])) > 0)
                    if state.stop_requested:
                        raise KeyboardInterrupt
                if distributed:
                    keys = sorted(sums)
                    total = dist.all_sum(torch.tensor([sums[k] for k in keys] + [counts[k] for k in keys],
                                                      dtype=torch.float64)).tolist()
                    sums, counts = dict(zip(keys, total[:len(keys)])), dict(zip(keys, total[len(keys):]))
                record = {"epoch": epoch + 1, **{k: v / counts[k] for k, v in sums.items()},
                          "seconds": time.perf_counter() - t0}
                if end_epoch is not None:
                    end_epoch(record)
                state.history.append(record)
                last_good = (copy.deepcopy(module.state_dict()), [copy.deepcopy(o.state_dict()) for o in optimizers])
                if ckpt is not None and rank == 0:
                    save_checkpoint(ckpt, module, optimizers, epoch + 1, state.history, run=run,
                                    extra=extra() if extra is not None else None, config=config)
                if distributed:
                    dist.barrier()
                _call(callbacks, "on_epoch_end", state)
                if state.stop_requested:
                    break
    except KeyboardInterrupt:
        interrupted = True
        module.load_state_dict(last_good[0])
        for o, saved in zip(optimizers, last_good[1]):
            o.load_state_dict(saved)
        log.warning("%s interrupted; kept the weights of the last complete epoch (%d)", description,
                    len(state.history))
    finally:
        bar.close()
        module.eval()
    interrupted = interrupted or (state.stop_requested and len(state.history) < epochs)
    _call(callbacks, "on_train_end", state)
    return FitResult(history=state.history, interrupted=interrupted, epochs_completed=len(state.history),
                     checkpoint=ckpt)


class _EpochCallback:
    def __init__(self, fn: Callable[[dict[str, float]], None]) -> None:
        self.fn = fn

    def on_epoch_end(self, state: TrainState) -> None:
        self.fn(state.history[-1])


def epoch_callback(fn: Callable[[dict[str, float]], None] | None) -> list[Any]:
    """``callbacks`` for :func:`fit_steps` that call ``fn(record)`` after every complete epoch
    (the ``callback`` argument of the GAN trainers); empty for ``None``."""
    return [] if fn is None else [_EpochCallback(fn)]


def _call(callbacks: Sequence[Any], method: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, method, None)
        if fn is not None:
            fn(state)
