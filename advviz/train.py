"""Training and evaluation: ``fit``, ``evaluate`` and the recipes behind advviz's own weights.

``fit`` is the one training loop everything uses (plain training, and later adversarial
training, distillation and the purifiers through its ``loss`` argument):

* a tqdm.auto progress bar (terminal and notebook), a per-epoch history;
* resumable checkpoints after every complete epoch: ``<checkpoint>.safetensors`` (model and
  optimizer tensors) plus ``<checkpoint>.json`` (epoch, history, optimizer hyper-parameters),
  both written atomically;
* Ctrl-C (``KeyboardInterrupt``) or a callback's ``state.request_stop()`` stops cleanly: the
  model is left with the weights of the last *complete* epoch (which is also what the
  checkpoint holds), and the result says ``interrupted=True``;
* the device is CUDA when available, unless given;
* under ``torchrun`` (N processes), ``fit`` trains with DistributedDataParallel: every process
  draws the same global batch order, each takes its contiguous share of every global batch of
  ``batch_size`` images, and DDP averages the gradients (weighted so that the step equals one
  process's step on the whole batch; BatchNorm statistics stay per process). Only rank 0 shows
  progress and writes checkpoints; a stopped or killed run keeps the last complete epoch's
  checkpoint, from which every rank resumes.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from advviz.data import ImageDataset

__all__ = [
    "fit",
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
RECIPES: dict[str, dict[str, Any]] = {
    # LeNet-5 on the digits train split (1,437 images): ~0.98 test accuracy in seconds on a CPU.
    "lenet5_digits": {"epochs": 10, "lr": 1e-3, "batch_size": 64, "optimizer": "adam", "seed": 0},
}


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TrainState:
    """What callbacks see. ``request_stop()`` ends training after the current batch."""

    model: nn.Module
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches_per_epoch: int = 0
    loss: float = float("nan")
    history: list[dict[str, float]] = field(default_factory=list)
    stop_requested: bool = False

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
        schedule: ``None`` (constant) or ``"cosine"`` (per-step cosine decay to 0).
        augment: ``(x, generator) -> x`` applied to training batches (e.g. :func:`cifar_augment`).
        loss: ``(model, x, y) -> (scalar loss, logits)``; default cross-entropy. Adversarial
            training and distillation plug in here.
        progress: show a tqdm.auto progress bar.
        description: progress-bar label.

    Returns:
        :class:`FitResult` (history, interrupted flag, epochs completed).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if lr <= 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
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
    state = TrainState(model=model, epochs=epochs, batches_per_epoch=steps_per_epoch)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    start_epoch = 0
    if ckpt is not None and _ckpt_paths(ckpt)[1].is_file():
        start_epoch, state.history = _load_checkpoint(ckpt, model, opt, dev)
        log.info("resuming from %s after epoch %d", ckpt, start_epoch)
    last_good = copy.deepcopy(model.state_dict())
    last_good_opt = copy.deepcopy(opt.state_dict())
    interrupted = False
    total_steps = epochs * steps_per_epoch

    def set_lr(step: int) -> float:
        cur = lr if schedule is None else 0.5 * lr * (1 + math.cos(math.pi * step / total_steps))
        if schedule not in (None, "cosine"):
            raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
        for g in opt.param_groups:
            g["lr"] = cur
        return cur

    _call(callbacks, "on_train_begin", state)
    from tqdm.auto import tqdm

    bar = tqdm(total=(epochs - start_epoch) * steps_per_epoch, desc=description,
               disable=not progress or rank != 0, leave=True, dynamic_ncols=True)
    fork_devices = [dev] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            for epoch in range(start_epoch, epochs):
                torch.manual_seed(seed * 100_003 + epoch)
                gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
                state.epoch = epoch + 1
                model.train()
                t0 = time.perf_counter()
                tot_loss, tot_correct, tot_n = 0.0, 0, 0
                cur_lr = lr
                for bi, (x, y) in enumerate(batches(train_data, batch_size, shuffle=True, generator=gen)):
                    x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                    if augment is not None:
                        x = augment(x, gen if x.device.type == "cpu" else None)
                    cur_lr = set_lr(epoch * steps_per_epoch + bi)
                    weight = 1.0
                    if many:  # this rank's share of the global batch, weighted so DDP's mean is the batch mean
                        part = torch.tensor_split(torch.arange(y.shape[0], device=y.device), world)[rank]
                        weight = part.numel() * world / y.shape[0]
                        if part.numel() == 0:  # fewer images than processes: take part with no weight
                            part = torch.arange(1, device=y.device)
                        x, y = x[part], y[part]
                    value, logits = loss_fn(net, x, y)
                    if not torch.isfinite(value):
                        raise FloatingPointError(f"loss became {value.item()} at epoch {epoch + 1}, batch {bi + 1}; "
                                                 "lower the learning rate")
                    opt.zero_grad(set_to_none=True)
                    (value * weight if many else value).backward()
                    opt.step()
                    bs = y.shape[0] if weight else 0
                    tot_loss += float(value.detach()) * bs
                    tot_correct += int((logits.detach().argmax(1) == y).sum()) if bs else 0
                    tot_n += bs
                    state.batch, state.loss = bi + 1, float(value.detach())
                    bar.update(1)
                    bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{state.loss:.4f}", refresh=False)
                    _call(callbacks, "on_batch_end", state)
                    if many:  # one rank's stop request stops them all, at the same batch
                        state.stop_requested = bool(distributed.all_sum(torch.tensor([float(state.stop_requested)])) > 0)
                    if state.stop_requested:
                        raise KeyboardInterrupt
                if many:
                    tot_loss, tot_correct, tot_n = distributed.all_sum(
                        torch.tensor([tot_loss, float(tot_correct), float(tot_n)])).tolist()
                record = {"epoch": epoch + 1, "loss": tot_loss / tot_n, "accuracy": tot_correct / tot_n,
                          "seconds": time.perf_counter() - t0, "lr": cur_lr}
                if val_data is not None:
                    vl, va = _eval_loss_acc(model, val_data, dev, batch_size=max(256, batch_size))
                    record.update(val_loss=vl, val_accuracy=va)
                state.history.append(record)
                last_good = copy.deepcopy(model.state_dict())
                last_good_opt = copy.deepcopy(opt.state_dict())
                if ckpt is not None and rank == 0:
                    _save_checkpoint(ckpt, model, opt, epoch + 1, state.history)
                distributed.barrier()
                _call(callbacks, "on_epoch_end", state)
                if state.stop_requested:
                    break
    except KeyboardInterrupt:
        interrupted = True
        model.load_state_dict(last_good)
        opt.load_state_dict(last_good_opt)
        log.warning("training interrupted; kept the weights of the last complete epoch (%d)", len(state.history))
    finally:
        bar.close()
        model.eval()
    interrupted = interrupted or (state.stop_requested and len(state.history) < epochs)
    _call(callbacks, "on_train_end", state)
    return FitResult(history=state.history, interrupted=interrupted, epochs_completed=len(state.history),
                     checkpoint=ckpt)


def _call(callbacks: Sequence[Any], method: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, method, None)
        if fn is not None:
            fn(state)


def _ckpt_paths(stem: Path) -> tuple[Path, Path]:
    base = stem.with_suffix("") if stem.suffix in (".safetensors", ".json") else stem
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def _save_checkpoint(stem: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                     history: list[dict[str, float]]) -> None:
    from safetensors.torch import save_file

    tensors_path, json_path = _ckpt_paths(stem)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt_state["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = val
    meta = {"epoch": epoch, "history": history, "param_groups": opt_state["param_groups"],
            "optim_scalars": scalars, "format": "advviz-fit-1"}
    tmp_t = tensors_path.with_name(tensors_path.name + ".tmp")
    tmp_j = json_path.with_name(json_path.name + ".tmp")
    save_file(tensors, str(tmp_t))
    tmp_j.write_text(json.dumps(meta, indent=1))
    # tensors first, then the JSON that declares the epoch complete
    os.replace(tmp_t, tensors_path)
    os.replace(tmp_j, json_path)


def _load_checkpoint(stem: Path, model: nn.Module, opt: torch.optim.Optimizer,
                     dev: torch.device) -> tuple[int, list[dict[str, float]]]:
    from safetensors.torch import load_file

    from advviz.models import CheckpointError

    tensors_path, json_path = _ckpt_paths(stem)
    try:
        meta = json.loads(json_path.read_text())
        tensors = load_file(str(tensors_path))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {stem} is unreadable ({exc}); delete {tensors_path.name} and "
                              f"{json_path.name} to start over") from exc
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {stem} does not fit this model: {exc}") from exc
    opt_state: dict[str, Any] = {"state": {}, "param_groups": meta["param_groups"]}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            opt_state["state"].setdefault(int(pid), {})[key] = v.to(dev)
    for pid, vals in meta.get("optim_scalars", {}).items():
        opt_state["state"].setdefault(int(pid), {}).update(vals)
    opt.load_state_dict(opt_state)
    return int(meta["epoch"]), list(meta["history"])


@torch.no_grad()
def _eval_loss_acc(model: nn.Module, data: Dataset | tuple[torch.Tensor, torch.Tensor], dev: torch.device,
                   batch_size: int = 256) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    tot_loss, correct, n = 0.0, 0, 0
    try:
        for x, y in batches(data, batch_size):
            x, y = x.to(dev), y.to(dev)
            logits = model(x)
            tot_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += y.shape[0]
    finally:
        model.train(was_training)
    return tot_loss / max(n, 1), correct / max(n, 1)


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def evaluate(model: nn.Module, data: Dataset | tuple[torch.Tensor, torch.Tensor], *, batch_size: int = 256,
             device: str | torch.device | None = None) -> float:
    """Top-1 accuracy in ``[0, 1]`` of ``model`` on ``data`` (eval mode; the mode is restored).

    Args:
        model: classifier taking ``(B, C, H, W)`` in ``[0, 1]``.
        data: a dataset of ``(image, label)`` or an ``(x, y)`` pair.
        batch_size: batch size.
        device: where the model is (default: where its parameters are).
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    return _eval_loss_acc(model, data, dev, batch_size)[1]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities ``(B, num_classes)`` for ``x`` ``(B, C, H, W)`` in [0, 1] (eval mode, restored)."""
    was_training = model.training
    model.eval()
    try:
        dev = _model_device(model)
        out = [F.softmax(model(x[s:s + batch_size].to(dev)), dim=1).cpu() for s in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# adversarial training
# ---------------------------------------------------------------------------------------------

ADV_ATTACKS = ("fgsm", "pgd", "fast")
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class _InnerMode:
    """Context for the inner attack of adversarial training.

    ``"train"``: the model stays in its training mode (BatchNorm normalises with the batch's
    statistics, the function the training loss differentiates), but every BatchNorm buffer
    (running mean/var, batch counter) is restored afterwards, so only the training forward
    pass updates the running statistics. ``"eval"``: the model runs in eval mode (running
    statistics), restored afterwards.
    """

    def __init__(self, model: nn.Module, bn_mode: str) -> None:
        self.model, self.bn_mode = model, bn_mode
        self.modes: list[tuple[nn.Module, bool]] = []
        self.buffers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        if self.bn_mode == "eval":
            self.model.eval()
        else:
            self.buffers = [(buf, buf.detach().clone())
                            for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                            for buf in m.buffers()]

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for buf, saved in self.buffers:
                buf.copy_(saved)
        for m, mode in self.modes:
            m.training = mode


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
    with _InnerMode(model, bn_mode):
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
