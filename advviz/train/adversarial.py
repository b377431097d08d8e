"""Adversarial training: the inner maximisation (:func:`adversarial_examples`), its loss, and
:func:`adversarial_fit` (:func:`advviz.train.fit` with that loss)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from advviz._modules import model_guard
from advviz.attacks._core import check_budget, input_grad, loss_ce, project_linf
from advviz.train.engine import FitResult
from advviz.train.fit import LossFn, fit

__all__ = ["ADV_ATTACKS", "adversarial_examples", "adversarial_fit", "adversarial_loss"]

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
    fresh: bool = False,
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
        fresh: ignore an existing checkpoint (as in :func:`fit`).

    Returns:
        :class:`FitResult`.
    """
    loss = adversarial_loss(attack=attack, eps=eps, alpha=alpha, steps=steps, bn_mode=bn_mode,
                            clean_weight=clean_weight)
    if not callable(attack):
        check_budget("eps", eps)
        if alpha is not None:
            check_budget("alpha", alpha)
    name = attack if isinstance(attack, str) else getattr(attack, "__name__", "custom")
    return fit(model, train_data, epochs=epochs, lr=lr, batch_size=batch_size, val_data=val_data, device=device,
               seed=seed, checkpoint=checkpoint, callbacks=callbacks, optimizer=optimizer,
               weight_decay=weight_decay, momentum=momentum, schedule=schedule, augment=augment, loss=loss,
               progress=progress, description=description or f"adv-train ({name})", fresh=fresh,
               config={"adversarial": {"attack": name, "eps": eps, "alpha": alpha, "steps": steps, "bn_mode": bn_mode,
                                       "clean_weight": clean_weight}})
