"""Distillation defense of the UDDN paper (paper 004, Sec. 4, eqs. 6-7).

A teacher is trained on *denoised* images with one-hot labels; a student of the same
architecture is trained on the teacher's softened outputs; the student serves (behind the
denoiser). Loss of the student (eq. 6)::

    L = KL(P_t || P_s) + lambda * KL(P_t^T || P_s^T),    P^T(x) = softmax(Z(x) / T)   (eq. 7)

``KL`` is averaged over the batch. The paper's text calls it "the cross-entropy loss"; the two
differ by the teacher's entropy, a constant for the student, so the gradients are the same.
Hinton et al. multiply the soft term by ``T**2``; the paper does not, and neither does advviz
(pass a larger ``lam`` for the same effect). Defaults ``T = 10``, ``lam = 1`` (the paper gives
no values).

On the CPU advviz *fine-tunes* both networks from the published CIFAR-10 ResNet-20 instead
of training them from scratch (recorded in every result).

**Defensive distillation** (Papernot et al., S&P 2016; the UDDN paper's baseline "Distillation
[29]"), :func:`defensive_distillation`: a teacher is trained on *clean* images with the softmax
at temperature ``T`` (cross-entropy of ``softmax(Z / T)`` against the labels); a student of the
same architecture is trained at the same ``T`` on the teacher's soft labels
``softmax(Z_t / T)`` (cross-entropy against ``softmax(Z_s / T)``); the student is deployed at
``T = 1`` (its logits unchanged). :data:`DEFENSIVE_RECIPES` holds advviz's CPU recipe (a short
fine-tune of both from the published ResNet-20); :func:`load_defensive_student` trains it once
and caches it in ``<cache>/weights``.

**Attacking it.** Deployed at ``T = 1`` the student's logits are about ``T`` times a normal
network's (top logit ~1,400), its softmax saturates and the cross-entropy's input gradient
underflows to zero: a cross-entropy attack end to end fails (FGSM and I-FGSM-4 left .820 of 128
CIFAR-10 test images, where the same attacks made on the undefended ResNet-20 left .039), which is
gradient masking, not robustness (Carlini & Wagner 2016). Attack it with a loss invariant to the
logits' scale: :func:`advviz.evaluate.adaptive_attack`'s APGD-T (targeted DLR) leaves .000 of the
same images (``advviz reproduce uddn --quick``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advviz import artifacts, train
from advviz._modules import model_guard
from advviz.artifacts import recipes as _recipes

__all__ = ["DEFENSIVE_RECIPES", "defensive_distillation", "defensive_student_loss", "defensive_teacher_loss",
           "distillation_loss", "load_defensive_student", "scale_head", "softmax_t", "student_loss", "train_student",
           "train_teacher"]


def softmax_t(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Eq. 7: ``softmax(logits / T)`` along the last dimension (``T >= 1``; ``T = 1``: softmax)."""
    if T < 1:
        raise ValueError(f"the temperature T must be >= 1, got {T}")
    return F.softmax(logits / T, dim=-1)


def _kl(p_log_teacher: torch.Tensor, p_log_student: torch.Tensor) -> torch.Tensor:
    # KL(P_t || P_s) = sum P_t (log P_t - log P_s), mean over the batch
    return (p_log_teacher.exp() * (p_log_teacher - p_log_student)).sum(-1).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, T: float = 10.0,
                      lam: float = 1.0) -> torch.Tensor:
    """Eq. 6: ``KL(P_t || P_s) + lam * KL(P_t^T || P_s^T)`` (teacher logits detached).

    Args:
        student_logits, teacher_logits: ``(B, K)``.
        T: temperature (>= 1).
        lam: weight of the softened term.
    """
    if T < 1:
        raise ValueError(f"the temperature T must be >= 1, got {T}")
    t = teacher_logits.detach()
    hard = _kl(F.log_softmax(t, -1), F.log_softmax(student_logits, -1))
    soft = _kl(F.log_softmax(t / T, -1), F.log_softmax(student_logits / T, -1))
    return hard + lam * soft


def student_loss(teacher: nn.Module, *, T: float = 10.0, lam: float = 1.0):
    """A ``loss`` for :func:`advviz.train.fit`: eq. 6 against the (frozen, eval-mode) teacher's outputs."""

    def loss(model: nn.Module, x: torch.Tensor, _y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            t_logits = teacher(x)
        logits = model(x)
        return distillation_loss(logits, t_logits, T=T, lam=lam), logits

    return loss


def train_teacher(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **fit_kw: Any) -> Any:
    """Train the teacher in place on (denoised) images with one-hot labels (cross-entropy), via ``fit``."""
    return train.fit(model, (images, labels), **fit_kw)


def train_student(student: nn.Module, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                  T: float = 10.0, lam: float = 1.0, **fit_kw: Any) -> Any:
    """Train the student in place on the teacher's softened outputs (eq. 6), via ``fit``.

    ``labels`` only feed the history's accuracy column. The teacher is frozen and in eval
    mode during training; its mode and ``requires_grad`` flags are restored afterwards.
    """
    with model_guard(teacher):
        dev = fit_kw.get("device")
        if dev is not None:
            teacher.to(dev)
        return train.fit(student, (images, labels), loss=student_loss(teacher, T=T, lam=lam), **fit_kw)


# ---------------------------------------------------------------------------------------------
# defensive distillation (Papernot et al. 2016)
# ---------------------------------------------------------------------------------------------

# The recipes (advviz.artifacts.recipes.DistillRecipe):
# CPU recipe: teacher and student each fine-tuned from resnet20_cifar10 for `epochs` on
# `images` clean CIFAR-10 *train* images (data.sample, seed `seed`) at temperature T. Both
# start from the published weights with the last linear layer multiplied by T
# (:func:`scale_head`), so that at temperature T they compute the published network's
# softmax: trained from scratch at T, a network's logits grow to about T times a T = 1
# network's, which a short fine-tune from unscaled weights cannot reach (measured, 4,000
# images, 2 epochs, T = 100, no scaling: mean top logit 13.9 against 14.7 before, FGSM
# 8/255 accuracy .070 against .072: nothing of the defence). With scale_head (500 JPEG
# CIFAR-10 test images, seed 0): clean .828, white-box FGSM 8/255 .800 -- the vanishing
# gradients of a saturated softmax (Carlini & Wagner 2016), not robustness: FGSM made on the
# undefended ResNet-20 leaves .104; mean top logit 1,392. Training took 110 s on one thread
# of a loaded 2-core CPU.
# T = 100 is Papernot et al.'s choice for CIFAR-10 (their Fig. 8: the largest T, the most
# robust); the UDDN paper gives no T. The paper trains both networks from scratch for 50 epochs.
DEFENSIVE_RECIPES: dict[str, Any] = {"quick": _recipes.DEFENSIVE_QUICK}


def defensive_teacher_loss(T: float):
    """A ``loss`` for :func:`advviz.train.fit`: cross-entropy of ``softmax(Z / T)`` against the labels."""
    if T < 1:
        raise ValueError(f"the temperature T must be >= 1, got {T}")

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits / T, y), logits

    return loss


def defensive_student_loss(teacher: nn.Module, T: float):
    """A ``loss`` for :func:`advviz.train.fit`: ``-sum softmax(Z_t/T) log softmax(Z_s/T)``, batch mean
    (the teacher frozen, in eval mode)."""
    if T < 1:
        raise ValueError(f"the temperature T must be >= 1, got {T}")

    def loss(model: nn.Module, x: torch.Tensor, _y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            soft = F.softmax(teacher(x) / T, dim=-1)
        logits = model(x)
        return -(soft * F.log_softmax(logits / T, dim=-1)).sum(-1).mean(), logits

    return loss


def defensive_distillation(teacher: nn.Module, student: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                           T: float = 100.0, **fit_kw: Any) -> tuple[Any, Any]:
    """Papernot et al.'s defensive distillation, in place: train ``teacher`` at temperature ``T`` on
    clean ``(images, labels)``, then ``student`` at ``T`` on the teacher's soft labels.

    Deploy the student at ``T = 1``: use its logits as they are (``student(x)``).

    Args:
        teacher, student: classifiers of the same architecture (e.g. both from ``resnet20_cifar10``).
        images: clean ``(N, C, H, W)`` in [0, 1]; labels ``(N,)``.
        T: the training temperature (>= 1).
        **fit_kw: :func:`advviz.train.fit` options (epochs, lr, optimizer, batch_size, device, ...).

    Returns:
        the teacher's and the student's :class:`advviz.train.FitResult`.
    """
    res_t = train.fit(teacher, (images, labels), loss=defensive_teacher_loss(T), **fit_kw)
    with model_guard(teacher):
        dev = fit_kw.get("device")
        if dev is not None:
            teacher.to(dev)
        res_s = train.fit(student, (images, labels), loss=defensive_student_loss(teacher, T), **fit_kw)
    return res_t, res_s


def scale_head(model: nn.Module, factor: float) -> nn.Module:
    """Multiply the last ``nn.Linear``'s weight and bias by ``factor`` in place (logits scale by it)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError(f"{type(model).__name__} has no linear layer to scale")
    with torch.no_grad():
        last[-1].weight.mul_(factor)
        if last[-1].bias is not None:
            last[-1].bias.mul_(factor)
    return model


def load_defensive_student(config: str = "quick", *, device: str | torch.device = "cpu",
                           progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The defensively distilled ResNet-20 (shared: eval mode, frozen) and its record.

    Resolved by :func:`advviz.artifacts.get` (artefact
    ``resnet20_cifar10_defensive_distillation_quick``, recipe
    :data:`advviz.artifacts.recipes.DEFENSIVE_QUICK`): trained on first use (the record's
    ``seconds`` says how long it took) and cached.
    """
    if config not in DEFENSIVE_RECIPES:
        raise ValueError(f"config must be one of {', '.join(DEFENSIVE_RECIPES)}, got {config!r}")
    student, rec = artifacts.get(f"resnet20_cifar10_defensive_distillation_{config}", device=device, progress=progress)
    r = DEFENSIVE_RECIPES[config]
    record: dict[str, Any] = {"name": rec.name, "recipe": rec.recipe, "recipe_hash": rec.recipe_hash,
                              "sha256": rec.sha256, "weights": rec.path, "artifact": rec,
                              "init": "resnet20_cifar10, last linear layer x T (scale_head), fine-tuned at T",
                              "deployed_temperature": 1.0,
                              "data": f"{r.images} clean CIFAR-10 train images (data.sample, seed {r.seed})"}
    if "seconds" in rec.training:
        record["seconds"] = float(rec.training["seconds"])
    return student, record
