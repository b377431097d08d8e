"""Supervised training (:func:`fit`) on the engine, and evaluation (:func:`evaluate`, :func:`predict`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from advviz import distributed, metrics
from advviz._modules import module_device
from advviz.train.engine import FitResult, TrainState, batches, default_device, fit_steps, num_items, plateaued

__all__ = ["fit", "evaluate", "predict", "LossFn"]

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]



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


def _name(fn: Any) -> str | None:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _fit_config(model: nn.Module, n: int, *, optimizer: str, lr: float, batch_size: int, seed: int,
                weight_decay: float, momentum: float, schedule: str | None, lr_final: float | None,
                augment: Any, loss: Any, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The configuration a checkpoint of :func:`fit` must match to be resumed: every setting that
    changes what an epoch does, the architecture (class, parameter names and shapes) and the data
    size (not ``epochs``: a run may be continued to more epochs)."""
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    arch = hashlib.sha256(json.dumps(shapes, sort_keys=True).encode()).hexdigest()[:16]
    return {"trainer": "fit", "optimizer": optimizer, "lr": lr, "batch_size": batch_size, "seed": seed,
            "weight_decay": weight_decay, "momentum": momentum if optimizer == "sgd" else None,
            "schedule": schedule, "lr_final": lr_final, "augment": _name(augment), "loss": _name(loss),
            "model": f"{type(model).__module__}.{type(model).__qualname__}", "architecture": arch, "data_size": n,
            **dict(extra or {})}


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
    config: Mapping[str, Any] | None = None,
    fresh: bool = False,
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
            ``<stem>.json`` are written, and an existing pair is resumed from when it was written
            with this configuration (optimizer, lr, batch size, seed, weight decay, momentum,
            schedule, loss, augmentation, architecture, data size; ``epochs`` may grow);
            otherwise :class:`~advviz.train.checkpoints.ConfigMismatch` names what differs.
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
        config: more of the run's configuration to record in the checkpoint (e.g. an adversarial
            loss's settings); a checkpoint resumes only a run of the same configuration.
        fresh: ignore an existing checkpoint and start from epoch 0 (it is overwritten).

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
    n = num_items(train_data)
    if n == 0:
        raise ValueError("train_data is empty")
    many = distributed.init(device)
    dev = torch.device(device) if device is not None else (distributed.local_device() if many else default_device())
    model.to(dev)
    world, rank = distributed.world_size(), distributed.rank()
    net: nn.Module = model
    if many:
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
                     show=("loss",), end_epoch=end_epoch, distributed=many, fresh=fresh,
                     config=_fit_config(model, n, optimizer=optimizer, lr=lr, batch_size=batch_size, seed=seed,
                                        weight_decay=weight_decay, momentum=momentum, schedule=schedule,
                                        lr_final=lr_final, augment=augment, loss=loss, extra=config))


def _eval_loss_acc(model: nn.Module, data: Dataset | tuple[torch.Tensor, torch.Tensor], dev: torch.device,
                   batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy on ``data`` through the one batched forward (:func:`advviz.metrics.logits`)."""
    tot_loss, correct, n = 0.0, 0, 0
    for x, y in batches(data, batch_size):
        x, y = x.to(dev), y.to(dev)
        logits = metrics.logits(model, x, batch_size=batch_size)
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


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities ``(B, num_classes)`` for ``x`` ``(B, C, H, W)`` in [0, 1] (eval mode, restored),
    through the one batched forward (:func:`advviz.metrics.logits`), on the CPU."""
    return F.softmax(metrics.logits(model, x.to(module_device(model)), batch_size=batch_size), dim=1).cpu()
