"""Training and evaluation: the one training engine, ``fit``, ``evaluate``, adversarial training.

:func:`fit_steps` is the one training loop of advviz; :func:`fit` (classifiers, and through its
``loss`` argument adversarial training, distillation and the denoisers) and the GAN and purifier
trainers (pix2pix/cGAN, GNR, AdvGAN, both TSGAN stages) are steps plugged into it
(:class:`Step`: two optimisers, ``n_critic`` critic steps per generator step and per-step loss
dicts are the step's business). What they all share:

* a tqdm.auto progress bar (terminal and notebook), a per-epoch history;
* one seeding approach: epoch ``e`` of a run with ``seed`` draws everything (data order, noise,
  augmentation, dropout) from ``seed * 100_003 + e``, so a resumed run sees what an
  uninterrupted one would, and the caller's random state is left alone;
* one checkpoint format, written after every complete epoch: ``<checkpoint>.safetensors``
  (module and optimizer tensors) plus ``<checkpoint>.json`` (epoch, history, optimizer
  hyper-parameters, the caller's extra metadata), both written atomically;
* Ctrl-C (``KeyboardInterrupt``) or a callback's ``state.request_stop()`` stops cleanly: the
  networks and optimizers are left with the state of the last *complete* epoch (which is also
  what the checkpoint holds), and the result says ``interrupted=True``;
* :func:`gradient_penalty`, the WGAN-GP penalty of both GAN papers.

``fit``'s device is CUDA when available, unless given. Under ``torchrun`` (N processes),
``fit`` trains with DistributedDataParallel: every process draws the same global batch order,
each takes its contiguous share of every global batch of ``batch_size`` images, and DDP averages
the gradients (weighted so that the step equals one process's step on the whole batch;
BatchNorm statistics stay per process). Only rank 0 shows progress and writes checkpoints; a
stopped or killed run keeps the last complete epoch's checkpoint, from which every rank resumes.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from advviz._modules import model_guard, module_device
from advviz.data import ImageDataset

__all__ = [
    "fit",
    "fit_steps",
    "Step",
    "gradient_penalty",
    "epoch_callback",
    "read_checkpoint",
    "CHECKPOINT_FORMAT",
    "evaluate",
    "predict",
    "FitResult",
    "TrainState",
    "Callback",
    "RECIPES",
    "cifar_augment",
    "default_device",
    "batches",
]

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# Recipes of the weights advviz trains itself (keyword arguments of ``fit``).
def __getattr__(name: str) -> Any:
    # ``train.RECIPES``: fit's keyword arguments of the zoo recipes, read from advviz.artifacts.recipes
    # (the one place recipes live), computed on access so that importing train stays cheap.
    if name == "RECIPES":
        from advviz.artifacts import recipes

        return {"lenet5_digits": recipes.LENET5_DIGITS.fit_kwargs()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The format tag of the checkpoints :func:`fit_steps` writes (``advviz-fit-1``: the same pair of
#: files with one optimizer, still read).
CHECKPOINT_FORMAT = "advviz-fit-2"


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


def cifar_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (4-pixel zero padding) and horizontal flip, batched: ``(B, C, H, W)`` -> same."""
    b, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    gen_dev = generator.device if generator is not None else x.device
    dx = torch.randint(0, 9, (b,), generator=generator, device=gen_dev).to(x.device)
    dy = torch.randint(0, 9, (b,), generator=generator, device=gen_dev).to(x.device)
    flip = torch.rand(b, generator=generator, device=gen_dev).to(x.device) < 0.5
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device).view(1, h))  # (B, H)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device).view(1, w))  # (B, W)
    cols = torch.where(flip.view(b, 1), cols.flip(1), cols)
    out = padded[torch.arange(b, device=x.device).view(b, 1, 1), :, rows.view(b, h, 1), cols.view(b, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


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


def _num_items(data: Dataset | tuple[torch.Tensor, torch.Tensor]) -> int:
    return data[0].shape[0] if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]


def _ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def _make_optimizer(name: str, params: Sequence[nn.Parameter] | Iterator[nn.Parameter], lr: float,
                    weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def plateaued(history: Sequence[dict[str, float]], tol: float = 0.01) -> bool:
    """Whether some epoch's training loss improved by less than ``tol`` (relative) on the epoch before."""
    losses = [h["loss"] for h in history if "loss" in h]
    return any(b > a * (1 - tol) for a, b in zip(losses, losses[1:]))


def fit(
    model: nn.Module,
    train_data: Dataset | tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    val_data: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    callbacks: Sequence[Any] = (),
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    schedule: str | None = None,
    augment: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
    loss: LossFn | None = None,
    progress: bool = True,
    description: str = "train",
    lr_final: float | None = None,
) -> FitResult:
    """Train ``model`` in place.

    Args:
        model: any classifier taking ``(B, C, H, W)`` in ``[0, 1]``.
        train_data: an :class:`~advviz.data.ImageDataset`, any dataset of ``(image, label)``,
            or an ``(x, y)`` tensor pair.
        epochs: total number of epochs (a resumed run continues up to this number).
        lr: learning rate (peak rate with a schedule).
        batch_size: images per step.
        val_data: optional data evaluated after each epoch (``val_loss``, ``val_accuracy``).
        device: default CUDA when available, else CPU. The model is moved there.
        seed: seeds initial-state-independent randomness: data order (epoch ``e`` uses
            ``seed + e``, so a resumed run sees the same order), augmentation and dropout.
        checkpoint: path stem; after every complete epoch ``<stem>.safetensors`` and
            ``<stem>.json`` are written, and an existing pair is resumed from.
        callbacks: objects with optional ``on_train_begin/on_batch_end/on_epoch_end/
            on_train_end(state)`` methods; ``state.request_stop()`` stops training.
        optimizer: ``"adam"`` or ``"sgd"`` (Nesterov momentum).
        weight_decay: L2 weight decay.
        momentum: SGD momentum.
        schedule: ``None`` (constant), ``"cosine"`` (per-step cosine decay to 0) or ``"plateau"``
            (``lr`` until the first epoch whose training loss improved by less than 1% on the
            epoch before, then ``lr_final``: the UDDN paper's "1e-3, decayed to 1e-4 when the
            training loss converges").
        augment: ``(x, generator) -> x`` applied to training batches (e.g. :func:`cifar_augment`).
        loss: ``(model, x, y) -> (scalar loss, logits)``; default cross-entropy. Adversarial
            training and distillation plug in here.
        progress: show a tqdm.auto progress bar.
        description: progress-bar label.
        lr_final: the rate after the plateau (``schedule="plateau"`` only).

    Returns:
        :class:`FitResult` (history, interrupted flag, epochs completed).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if lr <= 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if schedule not in (None, "cosine", "plateau"):
        raise ValueError(f"schedule must be None, 'cosine' or 'plateau', got {schedule!r}")
    if (schedule == "plateau") != (lr_final is not None):
        raise ValueError("schedule='plateau' needs lr_final (the rate after the plateau), and lr_final needs it")
    n = _num_items(train_data)
    if n == 0:
        raise ValueError("train_data is empty")
    from advviz import distributed

    many = distributed.init(device)
    dev = torch.device(device) if device is not None else (distributed.local_device() if many else default_device())
    model.to(dev)
    world, rank = distributed.world_size(), distributed.rank()
    net: nn.Module = model
    if many:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = _make_optimizer(optimizer, model.parameters(), lr, weight_decay, momentum)
    loss_fn = loss or _ce_loss
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    cur_lr = [lr]

    def step(batch: tuple[torch.Tensor, torch.Tensor], state: TrainState) -> tuple[dict[str, float], float]:
        x, y = batch[0].to(dev, non_blocking=True), batch[1].to(dev, non_blocking=True)
        if augment is not None:
            x = augment(x, state.generator if x.device.type == "cpu" else None)
        i = (state.epoch - 1) * steps_per_epoch + state.batch - 1
        if schedule == "cosine":
            cur_lr[0] = 0.5 * lr * (1 + math.cos(math.pi * i / total_steps))
        elif schedule == "plateau":
            cur_lr[0] = lr_final if plateaued(state.history) else lr  # type: ignore[assignment]
        else:
            cur_lr[0] = lr
        for g in opt.param_groups:
            g["lr"] = cur_lr[0]
        weight = 1.0
        if many:  # this rank's share of the global batch, weighted so DDP's mean is the batch mean
            part = torch.tensor_split(torch.arange(y.shape[0], device=y.device), world)[rank]
            weight = part.numel() * world / y.shape[0]
            if part.numel() == 0:  # fewer images than processes: take part with no weight
                part = torch.arange(1, device=y.device)
            x, y = x[part], y[part]
        value, logits = loss_fn(net, x, y)
        if not torch.isfinite(value):
            raise FloatingPointError(f"loss became {value.item()} at epoch {state.epoch}, batch {state.batch}; "
                                     "lower the learning rate")
        opt.zero_grad(set_to_none=True)
        (value * weight if many else value).backward()
        opt.step()
        bs = y.shape[0] if weight else 0
        state.loss = float(value.detach())
        correct = int((logits.detach().argmax(1) == y).sum()) if bs else 0
        return {"loss": state.loss * bs, "accuracy": correct}, bs

    def end_epoch(record: dict[str, float]) -> None:
        record["lr"] = cur_lr[0]
        if val_data is not None:
            vl, va = _eval_loss_acc(model, val_data, dev, batch_size=max(256, batch_size))
            record.update(val_loss=vl, val_accuracy=va)

    return fit_steps(model, step, lambda st: batches(train_data, batch_size, shuffle=True, generator=st.generator),
                     optimizers=[opt], epochs=epochs, steps_per_epoch=steps_per_epoch, seed=seed, device=dev,
                     checkpoint=checkpoint, callbacks=callbacks, progress=progress, description=description,
                     show=("loss",), end_epoch=end_epoch, distributed=many)


# ---------------------------------------------------------------------------------------------
# the engine: one loop for classifiers, purifiers and GANs
# ---------------------------------------------------------------------------------------------


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
    resumed from (module, optimizers, epoch, history); one of another ``run`` is ignored.

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

    Returns:
        :class:`FitResult`.
    """
    from tqdm.auto import tqdm

    from advviz import distributed as dist

    dev = torch.device(device) if device is not None else module_device(module)
    rank = dist.rank() if distributed else 0
    state = TrainState(model=module, epochs=epochs)
    state.history = history if history is not None else []
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and _ckpt_paths(ckpt)[1].is_file():
        meta = _read_meta(ckpt)
        if meta.get("run") == run and int(meta["epoch"]) >= start_epoch:
            start_epoch, saved_history = _load_checkpoint(ckpt, module, optimizers, dev)
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
                    _save_checkpoint(ckpt, module, optimizers, epoch + 1, state.history, run=run,
                                     extra=extra() if extra is not None else None)
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


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *,
                     t: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's penalty ``mean_i (||grad_x D(x_bar_i)||_2 - 1)^2`` (Gulrajani et al. 2017, Algorithm 1).

    ``x_bar = t * real + (1 - t) * fake`` with one weight ``t_i`` per sample. Used by TSGAN's
    critic (Algorithm 1 lines 6-8 of the TSGAN paper) and GNR's (UDDN paper, eq. 3).

    Args:
        critic: ``D``, mapping ``(B, ...)`` to scores ``(B,)``.
        real: real samples ``(B, ...)``.
        fake: generated samples ``(B, ...)`` (detached here: only the interpolate's gradient is taken).
        t: interpolation weights ``(B,)`` (or any shape with ``B`` elements) in ``[0, 1]``;
            default ``U(0, 1)`` drawn from ``generator`` (on its device), else on ``real``'s device.
        generator: random generator for ``t``.

    Returns:
        Scalar tensor on ``real``'s device, differentiable with respect to the critic's parameters.
    """
    b = real.shape[0]
    if t is None:
        t = torch.rand(b, generator=generator, device=generator.device if generator is not None else real.device)
    t = t.to(device=real.device, dtype=real.dtype).view(b, *([1] * (real.dim() - 1)))
    x_bar = (t * real.detach() + (1 - t) * fake.detach()).requires_grad_(True)
    scores = critic(x_bar)
    (grad,) = torch.autograd.grad(scores.sum(), x_bar, create_graph=True)
    return ((grad.flatten(1).norm(p=2, dim=1) - 1.0) ** 2).mean()


def _call(callbacks: Sequence[Any], method: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, method, None)
        if fn is not None:
            fn(state)


def _ckpt_paths(stem: Path) -> tuple[Path, Path]:
    base = stem.with_suffix("") if stem.suffix in (".safetensors", ".json") else stem
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def _read_meta(stem: Path) -> dict[str, Any]:
    from advviz.models import CheckpointError

    json_path = _ckpt_paths(stem)[1]
    try:
        return json.loads(json_path.read_text())
    except Exception as exc:
        raise CheckpointError(f"checkpoint {stem} is unreadable ({exc}); delete {_ckpt_paths(stem)[0].name} and "
                              f"{json_path.name} to start over") from exc


def read_checkpoint(stem: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The module tensors (``model.`` prefix removed) and the JSON of a :func:`fit_steps` checkpoint.

    Returns ``None`` when there is no checkpoint at ``stem``; raises
    :class:`~advviz.models.CheckpointError` when it is unreadable.
    """
    stem = Path(stem)
    if not _ckpt_paths(stem)[1].is_file():
        return None
    tensors, meta = _read_all(stem)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, meta


def _read_all(stem: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    from advviz.models import CheckpointError

    tensors_path, json_path = _ckpt_paths(stem)
    meta = _read_meta(stem)
    try:
        tensors = load_file(str(tensors_path))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {stem} is unreadable ({exc}); delete {tensors_path.name} and "
                              f"{json_path.name} to start over") from exc
    return tensors, meta


def _save_checkpoint(stem: Path, module: nn.Module, optimizers: Sequence[torch.optim.Optimizer], epoch: int,
                     history: list[dict[str, float]], *, run: str | None = None,
                     extra: dict[str, Any] | None = None) -> None:
    from safetensors.torch import save_file

    tensors_path, json_path = _ckpt_paths(stem)
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
    meta = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "history": history, "run": run, "optimizers": opt_meta,
            "extra": extra or {}}
    tmp_t = tensors_path.with_name(tensors_path.name + ".tmp")
    tmp_j = json_path.with_name(json_path.name + ".tmp")
    save_file(tensors, str(tmp_t))
    tmp_j.write_text(json.dumps(meta, indent=1))
    # tensors first, then the JSON that declares the epoch complete
    os.replace(tmp_t, tensors_path)
    os.replace(tmp_j, json_path)


def _load_checkpoint(stem: Path, module: nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                     dev: torch.device) -> tuple[int, list[dict[str, float]]]:
    from advviz.models import CheckpointError

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


@torch.no_grad()
def _eval_loss_acc(model: nn.Module, data: Dataset | tuple[torch.Tensor, torch.Tensor], dev: torch.device,
                   batch_size: int = 256) -> tuple[float, float]:
    tot_loss, correct, n = 0.0, 0, 0
    with model_guard(model, freeze=False):
        for x, y in batches(data, batch_size):
            x, y = x.to(dev), y.to(dev)
            logits = model(x)
            tot_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += y.shape[0]
    return tot_loss / max(n, 1), correct / max(n, 1)


def evaluate(model: nn.Module, data: Dataset | tuple[torch.Tensor, torch.Tensor], *, batch_size: int = 256,
             device: str | torch.device | None = None) -> float:
    """Top-1 accuracy in ``[0, 1]`` of ``model`` on ``data`` (eval mode; the mode is restored).

    Args:
        model: classifier taking ``(B, C, H, W)`` in ``[0, 1]``.
        data: a dataset of ``(image, label)`` or an ``(x, y)`` pair.
        batch_size: batch size.
        device: where the model is (default: where its parameters are).
    """
    dev = torch.device(device) if device is not None else module_device(model)
    return _eval_loss_acc(model, data, dev, batch_size)[1]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities ``(B, num_classes)`` for ``x`` ``(B, C, H, W)`` in [0, 1] (eval mode, restored)."""
    dev = module_device(model)
    with model_guard(model, freeze=False):
        out = [F.softmax(model(x[s:s + batch_size].to(dev)), dim=1).cpu() for s in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# adversarial training
# ---------------------------------------------------------------------------------------------

ADV_ATTACKS = ("fgsm", "pgd", "fast")
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str | AttackFn = "pgd",
                         eps: float = 8 / 255, alpha: float | None = None, steps: int | None = None,
                         bn_mode: str = "train") -> torch.Tensor:
    """The inner maximisation of adversarial training: adversarial versions of a training batch.

    Gradients are taken w.r.t. the input only (:func:`advviz.attacks._core.input_grad`), so the
    parameters' ``.grad`` is untouched. Random initialisations use the global RNG (seeded per
    epoch by :func:`fit`).

    * ``"fgsm"``: ``x + eps * sign(grad)`` (Goodfellow et al. 2015); ``alpha``/``steps`` unused.
    * ``"fast"``: Wong, Rice, Kolter 2020 ("Fast is better than free"): ``delta ~ U(-eps, eps)``,
      one step ``delta += alpha * sign(grad)`` with ``alpha = 1.25 * eps``, then ``delta`` is
      clipped to ``[-eps, eps]`` and ``x + delta`` to [0, 1].
    * ``"pgd"``: Madry et al. 2018: uniform random start in the ball, ``steps`` (7) signed steps
      of ``alpha`` (``eps / 4``, i.e. 2/255 for ``eps = 8/255``), each projected on the
      L-infinity ball and [0, 1].
    * a callable ``attack(model, x, y) -> x_adv`` (e.g. ``functools.partial`` of a registered
      attack; those run the model in eval mode themselves).

    Args:
        model: the model being trained, taking ``(B, C, H, W)`` in [0, 1].
        x: clean batch ``(B, C, H, W)`` in [0, 1].
        y: labels ``(B,)``.
        attack: ``"fgsm"``, ``"fast"``, ``"pgd"`` or a callable.
        eps: L-infinity budget on the [0, 1] scale.
        alpha: step size (default: ``eps`` for FGSM, ``1.25 * eps`` for fast, ``eps / 4`` for PGD).
        steps: PGD iterations (default 7).
        bn_mode: ``"train"`` (batch statistics during the attack; running statistics are left
            untouched by the attack's forward passes) or ``"eval"`` (running statistics).

    Returns:
        ``(B, C, H, W)`` in [0, 1], detached, within ``eps`` of ``x`` (built-in attacks).
    """
    from advviz.attacks._core import check_budget, input_grad, loss_ce, project_linf

    if bn_mode not in ("train", "eval"):
        raise ValueError(f"bn_mode must be 'train' or 'eval', got {bn_mode!r}")
    x = x.detach()
    # "train": batch statistics, as the training loss sees them, with the BatchNorm buffers put back
    # afterwards (only the training pass updates them); "eval": running statistics. Parameters stay
    # trainable (DDP's view of them must not change); gradients are taken w.r.t. the input only.
    with model_guard(model, eval=bn_mode == "eval", freeze=False, keep_batchnorm_stats=bn_mode == "train"):
        if callable(attack):
            return attack(model, x, y).detach()
        if attack not in ADV_ATTACKS:
            raise ValueError(f"attack must be one of {ADV_ATTACKS} or a callable (model, x, y) -> x_adv, "
                             f"got {attack!r}")
        eps = check_budget("eps", eps)
        default_alpha = {"fgsm": eps, "fast": 1.25 * eps, "pgd": eps / 4}[attack]
        alpha = default_alpha if alpha is None else check_budget("alpha", alpha)
        n_steps = {"fgsm": 1, "fast": 1, "pgd": 7 if steps is None else int(steps)}[attack]
        if n_steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        loss = loss_ce(y, targeted=False)
        if attack == "fgsm":
            x_adv = x
        else:
            x_adv = (x + (torch.rand_like(x) * 2 - 1) * eps).clamp(0.0, 1.0)
        for _ in range(n_steps):
            g, _logits = input_grad(model, x_adv, loss)
            x_adv = project_linf(x_adv + alpha * g.sign(), x, eps)
    return x_adv.detach()


def adversarial_loss(*, attack: str | AttackFn = "pgd", eps: float = 8 / 255, alpha: float | None = None,
                     steps: int | None = None, bn_mode: str = "train", clean_weight: float = 0.0) -> LossFn:
    """A ``loss`` for :func:`fit`: cross-entropy on :func:`adversarial_examples` of each batch.

    Args:
        attack, eps, alpha, steps, bn_mode: as in :func:`adversarial_examples`.
        clean_weight: weight of the clean cross-entropy, ``(1 - w) * CE(adv) + w * CE(clean)``
            (0: Madry et al. and Wong et al.; Goodfellow et al. used 0.5 with FGSM).

    Returns:
        ``(model, x, y) -> (loss, logits on the adversarial batch)``.
    """
    if not 0.0 <= clean_weight <= 1.0:
        raise ValueError(f"clean_weight must lie in [0, 1], got {clean_weight}")
    if bn_mode not in ("train", "eval"):
        raise ValueError(f"bn_mode must be 'train' or 'eval', got {bn_mode!r}")
    if not callable(attack) and attack not in ADV_ATTACKS:
        raise ValueError(f"attack must be one of {ADV_ATTACKS} or a callable (model, x, y) -> x_adv, got {attack!r}")

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # under DDP the attack runs on the wrapped module: only the training pass is synchronised
        inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        x_adv = adversarial_examples(inner, x, y, attack=attack, eps=eps, alpha=alpha, steps=steps, bn_mode=bn_mode)
        logits = model(x_adv)
        value = F.cross_entropy(logits, y)
        if clean_weight > 0:
            value = (1 - clean_weight) * value + clean_weight * F.cross_entropy(model(x), y)
        return value, logits

    return loss


def adversarial_fit(
    model: nn.Module,
    train_data: Dataset | tuple[torch.Tensor, torch.Tensor],
    *,
    attack: str | AttackFn = "pgd",
    eps: float = 8 / 255,
    alpha: float | None = None,
    steps: int | None = None,
    bn_mode: str = "train",
    clean_weight: float = 0.0,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    val_data: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    callbacks: Sequence[Any] = (),
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    schedule: str | None = None,
    augment: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
    progress: bool = True,
    description: str | None = None,
) -> FitResult:
    """Adversarial training in place: :func:`fit` with :func:`adversarial_loss`.

    Recipes: ``attack="pgd"`` is PGD adversarial training (Madry et al. 2018; on CIFAR-10
    ``eps = 8/255``, 7 steps of ``alpha = 2/255``); ``attack="fast"`` is Fast-AT (Wong et al.
    2020: FGSM from a uniform random start, ``alpha = 1.25 * eps``; pair it with
    ``schedule="cosine"``/SGD as they do); ``attack="fgsm"`` is FGSM adversarial training
    (Goodfellow et al. 2015; ``clean_weight=0.5`` for their mixed objective). BatchNorm during
    the inner attack (``bn_mode``): ``"train"`` by default, as in Madry's and Wong's reference
    code (the attack sees the function being trained), with running statistics restored after
    the attack so that only the training pass updates them; ``"eval"`` uses running statistics.
    Training-set ``loss``/``accuracy`` in the history are on the adversarial batches;
    ``val_accuracy`` is clean. Checkpoints, progress, resumption and Ctrl-C are :func:`fit`'s.

    Args:
        model: classifier taking ``(B, C, H, W)`` in [0, 1]; trained in place.
        train_data: dataset or ``(x, y)`` pair.
        attack: ``"pgd"``, ``"fast"``, ``"fgsm"`` or a callable ``(model, x, y) -> x_adv``.
        eps: L-infinity budget on the [0, 1] scale (8/255).
        alpha: step size (default: ``eps / 4`` for PGD, ``1.25 * eps`` for fast, ``eps`` for FGSM).
        steps: PGD steps (7).
        bn_mode: ``"train"`` or ``"eval"`` (see above).
        clean_weight: weight of the clean loss (0).
        epochs: as in :func:`fit`; so are ``lr``, ``batch_size``, ``val_data``, ``device``,
            ``seed``, ``checkpoint``, ``callbacks``, ``optimizer``, ``weight_decay``,
            ``momentum``, ``schedule``, ``augment`` and ``progress``.
        description: progress-bar label (default ``"adv-train (<attack>)"``).

    Returns:
        :class:`FitResult`.
    """
    loss = adversarial_loss(attack=attack, eps=eps, alpha=alpha, steps=steps, bn_mode=bn_mode,
                            clean_weight=clean_weight)
    if not callable(attack):
        from advviz.attacks._core import check_budget

        check_budget("eps", eps)
        if alpha is not None:
            check_budget("alpha", alpha)
    name = attack if isinstance(attack, str) else getattr(attack, "__name__", "custom")
    return fit(model, train_data, epochs=epochs, lr=lr, batch_size=batch_size, val_data=val_data, device=device,
               seed=seed, checkpoint=checkpoint, callbacks=callbacks, optimizer=optimizer,
               weight_decay=weight_decay, momentum=momentum, schedule=schedule, augment=augment, loss=loss,
               progress=progress, description=description or f"adv-train ({name})")


__all__ += ["ADV_ATTACKS", "adversarial_examples", "adversarial_fit", "adversarial_loss"]
