"""Typed training recipes of the artefacts advviz trains itself.

Each recipe is a frozen dataclass (:class:`advviz.artifacts.Recipe`): its fields are the training
settings, and its hash enters the identity of every file trained with it, so a file made with
another recipe is never reused silently (:mod:`advviz.artifacts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advviz.artifacts._core import Recipe

__all__ = ["FitRecipe", "AdvFitRecipe", "LENET5_DIGITS", "HIGHRES_CIFAR10", "HIGHRES_DIGITS", "PROTECTED",
           "PROTECTED_QUICK", "ROBUST_LENET", "SLIM_VGG_DIGITS", "SLIM_VGG_CIFAR10", "TRANSFER_DIGITS",
           "TSGANRecipe", "AdvGANRecipe", "LENET5_MNIST_HOLDOUT"]


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


@dataclass(frozen=True)
class AdvFitRecipe(Recipe):
    """Adversarial fine-tuning of an upstream classifier with :func:`advviz.train.adversarial_fit`.

    Attributes:
        attack, eps, alpha, steps, clean_weight: the training attack (``adversarial_fit``'s arguments;
            ``alpha``/``steps`` ``None``: its defaults for ``attack``).
        epochs, lr, batch_size, optimizer, weight_decay, schedule, seed: ``adversarial_fit``'s arguments.
        images: a seeded random subset of the train split of this size (randperm, seed 0; ``None``: all).
        augment: ``None`` or ``"cifar"`` (:func:`advviz.train.cifar_augment`).
        data: the training split, ``"<dataset>:<split>"``; the clean accuracy recorded after training is
            measured on up to 1,000 images of that dataset's test split (``data.sample``, seed 0).
    """

    attack: str = "pgd"
    eps: float = 8 / 255
    alpha: float | None = None
    steps: int | None = None
    clean_weight: float = 0.0
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str | None = None
    seed: int = 0
    images: int | None = None
    augment: str | None = None
    data: str = "cifar10:train"

    def fit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`advviz.train.adversarial_fit` (the others are the builder's)."""
        return {"attack": self.attack, "eps": self.eps, "alpha": self.alpha, "steps": self.steps,
                "clean_weight": self.clean_weight, "epochs": self.epochs, "lr": self.lr,
                "batch_size": self.batch_size, "optimizer": self.optimizer, "weight_decay": self.weight_decay,
                "schedule": self.schedule, "seed": self.seed}


#: The CFR paper's protected models, made for CIFAR-10 by fine-tuning the published ResNet-20
#: (:mod:`advviz.papers.protected`): Fast-AT (Wong et al. 2020: FGSM from a random start, eps 8/255)
#: and PGD-AT (Madry et al. 2018: 7 steps of 2/255, eps 8/255), SGD with a cosine schedule.
PROTECTED: dict[str, AdvFitRecipe] = {
    "fast_at": AdvFitRecipe(attack="fast", eps=8 / 255, epochs=5, lr=0.02, optimizer="sgd", schedule="cosine",
                            batch_size=128, weight_decay=5e-4, augment="cifar", data="cifar10:train"),
    "pgd_at": AdvFitRecipe(attack="pgd", eps=8 / 255, alpha=2 / 255, steps=7, epochs=3, lr=0.02, optimizer="sgd",
                           schedule="cosine", batch_size=128, weight_decay=5e-4, augment="cifar",
                           data="cifar10:train"),
}
#: The ``_quick`` variants: one epoch on a seeded 2,000-image subset (for CI and notebooks; far weaker).
PROTECTED_QUICK: dict[str, Any] = {"epochs": 1, "images": 2000}

#: The TSGAN paper's Table 7 defenses, quick recipes fine-tuning ``lenet5_digits`` on the digits train
#: split: "adv" = FGSM adversarial training (Goodfellow et al.: half clean, half FGSM loss), "iter" =
#: PGD adversarial training (Madry et al.; eps 0.3 collapsed to a constant prediction, 9.2% clean
#: accuracy measured, hence 0.1).
ROBUST_LENET: dict[str, AdvFitRecipe] = {
    "adv": AdvFitRecipe(attack="fgsm", eps=0.3, clean_weight=0.5, epochs=3, lr=1e-3, batch_size=64,
                        optimizer="adam", seed=0, data="digits:train"),
    "iter": AdvFitRecipe(attack="pgd", eps=0.1, alpha=0.025, steps=5, epochs=3, lr=1e-3, batch_size=64,
                         optimizer="adam", seed=0, data="digits:train"),
}

#: TSGAN's fallback content network on digits: a slim VGG-16 (:class:`advviz.generative.tsgan.SlimVGG16`)
#: on the digits train split padded to 32x32.
SLIM_VGG_DIGITS = FitRecipe(epochs=4, lr=2e-3, batch_size=64, optimizer="adam", seed=0, data="digits:train")
#: The CIFAR-10 fallback: the same slim VGG-16 with 3 input channels on a seeded 5,000-image subset of the
#: CIFAR-10 train split without augmentation -- a quick feature extractor, not a strong classifier.
SLIM_VGG_CIFAR10 = FitRecipe(epochs=6, lr=2e-3, batch_size=64, optimizer="adam", seed=0, images=5000,
                             data="cifar10:train")
#: Table 9's MNIST-column transfer model: a CIFAR-style ResNet-8 with one input channel on the digits
#: train split, its own seed (independent of the target and of the content network).
TRANSFER_DIGITS = FitRecipe(epochs=8, lr=2e-3, batch_size=64, optimizer="adam", seed=7, data="digits:train")


@dataclass(frozen=True)
class TSGANRecipe(Recipe):
    """A TSGAN stage (:class:`advviz.generative.tsgan.TSGAN`) as the TSGAN paper's reproduction trains it.

    Attributes:
        config: the :class:`~advviz.generative.tsgan.TSGANConfig` fields.
        stage: ``"normal"`` (stage 1: G_norm and its critic) or ``"adversarial"`` (stage 2 from a stage 1).
        targets: the stage-2 target classes.
        seed: training seed.
        data: what the training images are; ``data_sha``: sha256 prefix of their float32 bytes.
        image_shape: ``(C, H, W)``.
        target_model, content, stage1: what stage 2 is made from: an artefact name (then also in the
            spec's upstream) or ``"weights sha256 <prefix>"`` for a network built by hand.
        stage2_batchnorm: :data:`advviz.generative.tsgan.STAGE2_BATCHNORM` (a change retrains).
    """

    config: dict[str, Any]
    stage: str = "normal"
    targets: tuple[int, ...] = ()
    seed: int = 0
    data: str = ""
    data_sha: str = ""
    image_shape: tuple[int, ...] = ()
    target_model: str | None = None
    content: str | None = None
    stage1: str | None = None
    stage2_batchnorm: str = ""


@dataclass(frozen=True)
class AdvGANRecipe(Recipe):
    """An AdvGAN generator (:class:`advviz.generative.advgan.AdvGAN`) for one target class.

    Attributes:
        config: the :class:`~advviz.generative.advgan.AdvGANConfig` fields.
        target: the target class.
        seed, data, data_sha, image_shape, target_model: as :class:`TSGANRecipe`.
    """

    config: dict[str, Any]
    target: int | None = 0
    seed: int = 0
    data: str = ""
    data_sha: str = ""
    image_shape: tuple[int, ...] = ()
    target_model: str | None = None


#: The TSGAN paper's full MNIST column: LeNet-5 on the 80% part of MNIST's test split
#: (``holdout_split(0.2, seed=0)``) with the ``lenet5_digits`` settings.
LENET5_MNIST_HOLDOUT = LENET5_DIGITS.replace(data="mnist:holdout")
