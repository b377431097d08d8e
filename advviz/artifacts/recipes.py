"""Typed training recipes of the artefacts advviz trains itself.

Each recipe is a frozen dataclass (:class:`advviz.artifacts.Recipe`): its fields are the training
settings, and its hash enters the identity of every file trained with it, so a file made with
another recipe is never reused silently (:mod:`advviz.artifacts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advviz.artifacts._core import ADDED, Recipe

__all__ = ["FitRecipe", "VGGFitRecipe", "Pix2PixRecipe", "GNRRecipe", "DenoiserRecipe", "DAERecipe", "DistillRecipe",
           "AdvFitRecipe", "TSGANRecipe", "AdvGANRecipe", "LENET5_DIGITS", "HIGHRES_CIFAR10", "HIGHRES_DIGITS",
           "PERCEPTUAL", "PERCEPTUAL_QUICK", "GNR", "GNR_QUICK", "GNR_PAPER", "DEFENSIVE_QUICK", "PROTECTED",
           "PROTECTED_QUICK", "ROBUST_LENET", "SLIM_VGG_DIGITS", "SLIM_VGG_CIFAR10", "TRANSFER_DIGITS",
           "LENET5_MNIST_HOLDOUT", "pix2pix_recipe", "denoiser_recipe"]


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


# ---------------------------------------------------------------------------------------------
# defenses (advviz.defenses): the purifiers' networks and what they are trained with
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VGGFitRecipe(FitRecipe):
    """:class:`FitRecipe` of a CIFAR VGG at a fraction ``width`` of its channels."""

    width: float = 0.25


#: the cGAN's perceptual network when no ImageNet VGG-19 exists offline: the zoo's CIFAR VGG-19 at
#: a quarter width (the same 16 convolutions and layer names; 1.26 M parameters), trained from
#: scratch on the whole CIFAR-10 train split (20 min on one CPU thread); ships with advviz.
PERCEPTUAL = VGGFitRecipe(epochs=5, lr=0.05, batch_size=128, optimizer="sgd", weight_decay=5e-4, schedule="cosine",
                          seed=0, images=None, augment="cifar", data="cifar10:train", width=0.25)
#: the same on 1,000 images for one epoch (only used when the shipped file is missing and a quick run asks).
PERCEPTUAL_QUICK = PERCEPTUAL.replace(images=1000, epochs=1, batch_size=64)


@dataclass(frozen=True)
class Pix2PixRecipe(Recipe):
    """A purifier generator (pix2pix U-Net) trained on (attacked, clean) CIFAR-10 pairs.

    Attributes:
        kind: ``"cgan"`` (with the perceptual loss, the purifier paper) or ``"pix2pix"``.
        attack: the pairs' attack on the published ResNet-20, ``"fgsm"`` or ``"pgd"`` (PGD-10).
        eps: the attack's L-inf budget.
        subset: train images (``data.sample`` of the train split, seed ``pairs_seed``).
        epochs, batch_size, lr: Adam's training. Deviation for the CPU budget: Adam at 1e-3
            instead of pix2pix's 2e-4 (at 2e-4 a 16-wide U-Net trained 3 epochs on 5,000 pairs left
            a pixel L1 error of 0.07, worse than the FGSM noise, 0.031; measured).
        ngf: the U-Net's base width.
        lambda_l1, lambda_perc: the loss weights (purifier paper: 100 and 1).
        seed: initialisation and batch order.
    """

    kind: str = "cgan"
    attack: str = "fgsm"
    eps: float = 8 / 255
    subset: int = 10000
    pairs_seed: int = 0
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    ngf: int = 16
    lambda_l1: float = 100.0
    lambda_perc: float = 1.0
    seed: int = 0


def pix2pix_recipe(kind: str, attack: str, config: str) -> Pix2PixRecipe:
    """The recipe of ``{kind}_{attack}_cifar10`` (``config="full"``: the shipped files) or its ``_quick``."""
    base = Pix2PixRecipe(kind=kind, attack=attack)
    return base if config == "full" else base.replace(subset=1000, batch_size=32)


@dataclass(frozen=True)
class GNRRecipe(Recipe):
    """The GNR noise generator (UDDN paper, Sec. 3.3): a WGAN-GP on FGSM noise of real pairs.

    Attributes:
        real: CIFAR-10 train images (the first ``real`` of ``data.sample(train, real + gnr, seed=pairs_seed)``)
            attacked with FGSM ``eps`` on the published ResNet-20; their noise trains the GNR.
        gnr: images, the ``gnr`` after those, that get GNR noise instead (the denoisers' extra pairs).
        steps: generator steps (5 critic steps each, Adam 1e-4, gradient penalty 10).
        widths, convs, critic_widths: the networks' sizes (the paper's are 256/128/64, 3 convs, 64/128/256).
        seed: initialisation, batches and generated noise. ``None``: drawn at random and recorded in
            the training summary; the ``full`` weights that ship were made this way, before seeding existed.
        attacks: how the real pairs are attacked. ``"fgsm"``: FGSM at ``eps``. ``"paper"``: the UDDN
            paper's Sec. 4.1 mix, FGSM and I-FGSM with 2, 4 and 8 iterations at a random
            perturbation level. The paper applies all four to every image at a level drawn from
            [0, 1] on its scale; advviz (a choice, recorded here) gives each image one of the four,
            drawn at random, at a level drawn uniformly from {1, ..., 8}/255 (``eps`` in 1/255
            steps), I-FGSM stepping ``level / iterations``; seeded by ``pairs_seed``.
    """

    real: int = 10000
    gnr: int = 5000
    pairs_seed: int = 1
    eps: float = 8 / 255
    steps: int = 300
    widths: tuple[int, ...] = (32, 16, 16)
    convs: int = 1
    critic_widths: tuple[int, ...] = (16, 32, 64)
    seed: int | None = 0
    attacks: str = field(default="fgsm", metadata=ADDED)


#: the GNR behind the shipped UDDN and DAE (unseeded then; see :class:`GNRRecipe`).
GNR = GNRRecipe(real=10000, gnr=5000, steps=300, seed=None)
#: quick: the paper's attack mix, small
GNR_QUICK = GNRRecipe(real=1000, gnr=1000, steps=100, seed=0, attacks="paper")
#: the paper's proportions (10 k real images, twice as many GNR ones) and attack mix: a GPU job
GNR_PAPER = GNRRecipe(real=10000, gnr=20000, steps=1000, seed=0, attacks="paper")


@dataclass(frozen=True)
class DenoiserRecipe(Recipe):
    """A UDDN-paper denoiser trained on the real FGSM + GNR pairs of its upstream GNR.

    Attributes:
        kind: ``"uddn"`` (laterals, x_hat = x* - dx, logit-guided loss, eq. 5 with l = -1),
            ``"dae"`` (no laterals, reconstructs the image, pixel L1) or ``"pgd"`` (Liao et al.'s
            pixel-guided denoiser: the UDDN network with the pixel loss).
        epochs, batch_size, lr: Adam's training.
        width: the network's base width.
        seed: initialisation and batch order.
        schedule, lr_final: ``None`` (constant ``lr``) or ``"plateau"``: ``lr`` decayed to
            ``lr_final`` once the training loss converges (the UDDN paper: 1e-3, then 1e-4;
            :func:`advviz.train.fit`).
    """

    kind: str = "uddn"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 16
    seed: int = 0
    schedule: str | None = field(default=None, metadata=ADDED)
    lr_final: float | None = field(default=None, metadata=ADDED)


@dataclass(frozen=True)
class DAERecipe(DenoiserRecipe):
    """The DAE baseline's recipe: :class:`DenoiserRecipe` plus the encoder's depth.

    Attributes:
        levels: stride-2 encoder units. The paper's UDDN has 4 (32 -> 2 pixels on CIFAR-10); its
            DAE is "UDDN without the horizontal connections", but through a 2x2x64 bottleneck (256
            numbers for a 3,072-number image) no decoder can rebuild a CIFAR image: that DAE left
            ResNet-20 at .195 clean accuracy (shipped before; 256 test images). advviz's DAE stops
            at 16x16 (``levels=1``), the bottleneck at which it reconstructs the image well enough to
            be a fair baseline (measured: 5,000 FGSM pairs, 4 epochs: ResNet-20 .691 clean behind it
            with levels 1, .309 with levels 2; 256 JPEG CIFAR-10 test images, seed 0). Recorded in
            the DAE's config as a deviation.
    """

    kind: str = "dae"
    levels: int = 1


def denoiser_recipe(kind: str, config: str) -> DenoiserRecipe:
    """The recipe of ``{kind}_resnet20_cifar10`` for ``config``:

    * ``"full"``: the shipped files (constant lr 1e-3 on FGSM + GNR pairs): UDDN 10 epochs, DAE 3, ``pgd`` 10;
    * ``"quick"``: the paper's schedule (1e-3 decayed to 1e-4 at the plateau), 2 epochs;
    * ``"paper"``: the paper's schedule for 30 epochs (the paper's 30-40) on :data:`GNR_PAPER`'s
      pairs: a GPU job (``advviz artifacts build uddn_resnet20_cifar10_paper --device cuda``).

    The DAE is :class:`DAERecipe`.
    """
    if config not in ("full", "quick", "paper"):
        raise ValueError(f"config must be full, quick or paper, got {config!r}")
    cls = DAERecipe if kind == "dae" else DenoiserRecipe
    if config == "full":
        return cls(kind=kind, epochs=3 if kind == "dae" else 10)
    return cls(kind=kind, epochs=2 if config == "quick" else 30, schedule="plateau", lr_final=1e-4)


@dataclass(frozen=True)
class DistillRecipe(Recipe):
    """Papernot et al.'s defensive distillation, advviz's CPU recipe (:mod:`advviz.defenses.distillation`).

    Teacher and student fine-tuned from the published ResNet-20 for ``epochs`` on ``images`` clean
    CIFAR-10 train images (``data.sample``, seed ``seed``) at temperature ``T``, both starting with
    the last linear layer multiplied by T (``init="scale_head"``); the student is deployed at T = 1.
    """

    images: int = 4000
    T: float = 100.0
    epochs: int = 2
    lr: float = 0.01
    optimizer: str = "sgd"
    batch_size: int = 64
    seed: int = 2
    init: str = "scale_head"


DEFENSIVE_QUICK = DistillRecipe()

@dataclass(frozen=True)
class AdvFitRecipe(FitRecipe):
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

    batch_size: int = 128
    data: str = "cifar10:train"
    attack: str = "pgd"
    eps: float = 8 / 255
    alpha: float | None = None
    steps: int | None = None
    clean_weight: float = 0.0

    def fit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`advviz.train.adversarial_fit` (the others are the builder's)."""
        return {**super().fit_kwargs(), "attack": self.attack, "eps": self.eps, "alpha": self.alpha,
                "steps": self.steps, "clean_weight": self.clean_weight}


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
