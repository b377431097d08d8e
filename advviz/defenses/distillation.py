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
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["distillation_loss", "softmax_t", "student_loss", "train_student", "train_teacher"]


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
    from advviz import train

    return train.fit(model, (images, labels), **fit_kw)


def train_student(student: nn.Module, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                  T: float = 10.0, lam: float = 1.0, **fit_kw: Any) -> Any:
    """Train the student in place on the teacher's softened outputs (eq. 6), via ``fit``.

    ``labels`` only feed the history's accuracy column. The teacher is frozen and in eval
    mode during training; its mode and ``requires_grad`` flags are restored afterwards.
    """
    from advviz import train
    from advviz.defenses.uddn import _Frozen

    with _Frozen(teacher):
        dev = fit_kw.get("device")
        if dev is not None:
            teacher.to(dev)
        return train.fit(student, (images, labels), loss=student_loss(teacher, T=T, lam=lam), **fit_kw)
