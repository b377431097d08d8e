"""Typed training recipes of the artefacts advviz trains itself.

Each recipe is a frozen dataclass (:class:`advviz.artifacts.Recipe`): its fields are the training
settings, and its hash enters the identity of every file trained with it, so a file made with
another recipe is never reused silently (:mod:`advviz.artifacts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advviz.artifacts._core import Recipe

__all__ = ["FitRecipe", "LENET5_DIGITS", "HIGHRES_CIFAR10", "HIGHRES_DIGITS"]


@dataclass(frozen=True)
class FitRecipe(Recipe):
    """Supervised training with :func:`advviz.train.fit`.

    Attributes:
        epochs, lr, batch_size, optimizer, weight_decay, schedule, seed: ``fit``'s arguments.
        images: a seeded random subset of the train split of this size (``None``: all of it).
        augment: ``None``, ``"cifar"`` (:func:`advviz.train.cifar_augment`) or ``"cifar+upsample"``
            / ``"upsample"`` (then bilinear upsampling to the model's input size).
        data: the training split, ``"<dataset>:<split>"``.
    """

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str | None = None
    seed: int = 0
    images: int | None = None
    augment: str | None = None
    data: str = "digits:train"

    def fit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`advviz.train.fit` (the others are applied by the builder)."""
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "optimizer": self.optimizer,
                "weight_decay": self.weight_decay, "schedule": self.schedule, "seed": self.seed}


#: LeNet-5 on the digits train split (1,437 images): ~0.98 test accuracy in seconds on a CPU.
LENET5_DIGITS = FitRecipe(epochs=10, lr=1e-3, batch_size=64, optimizer="adam", seed=0, data="digits:train")

#: the two-stream detector's high stream: CIFAR-10 train split, a seeded 20,000-image subset,
#: augmented at 32x32 then upsampled to 64x64; 1 epoch SGD (5.5 minutes on a CPU).
HIGHRES_CIFAR10 = FitRecipe(epochs=1, lr=0.05, batch_size=64, optimizer="sgd", weight_decay=5e-4,
                            schedule="cosine", seed=0, images=20_000, augment="cifar+upsample", data="cifar10:train")

#: the offline high stream: the digits train split (1,437 images) upsampled from 28x28 to 64x64.
HIGHRES_DIGITS = FitRecipe(epochs=8, lr=1e-3, batch_size=64, optimizer="adam", seed=0, augment="upsample",
                           data="digits:train")
