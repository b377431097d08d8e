"""The artefacts of the paper reproductions: protected ResNet-20s, robust LeNets, TSGAN's content
and transfer networks.

Imported by :mod:`advviz.artifacts.catalog` after the zoo (their upstream). Builders import the
training code lazily. The TSGAN and AdvGAN generators are registered on demand by
:mod:`advviz.papers.tsgan` (their names carry the data, target and content network they are made from).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advviz.artifacts import recipes as R
from advviz.artifacts._core import ArtifactSpec, BuildContext, Built, get_spec, register
from advviz.artifacts.catalog import _build_fit, fit_summary, interrupted

__all__ = ["protected_name", "robust_lenet_name", "test_accuracy", "IMAGENET_VGG16"]

#: torchvision's ImageNet VGG-16 (TSGAN's content network when available).
IMAGENET_VGG16 = "vgg16_imagenet"


def protected_name(kind: str, quick: bool) -> str:
    """``resnet20_cifar10_<kind>[_quick]``: the artefact of a protected ResNet-20."""
    return f"resnet20_cifar10_{kind}" + ("_quick" if quick else "")


def robust_lenet_name(kind: str) -> str:
    """``lenet5_digits_<kind>_quick``: a robust LeNet-5 of the TSGAN paper's Table 7."""
    return f"lenet5_digits_{kind}_quick"


def test_accuracy(model: nn.Module, dataset: str, device: torch.device | str = "cpu") -> tuple[str, float]:
    """``("clean_accuracy_<n>", accuracy)`` on ``n = min(1000, size)`` test images of ``dataset``
    (:func:`advviz.data.sample`, seed 0), the metric recorded after training."""
    from advviz import data, train

    test = data.load(dataset, "test")
    n = min(1000, len(test))
    x, y = data.sample(test, n, seed=0)
    return f"clean_accuracy_{n}", round(train.evaluate(model, (x.to(device), y.to(device))), 4)


def _build_adv_fit(ctx: BuildContext) -> Built:
    """Fine-tune the (single) upstream classifier with an :class:`~advviz.artifacts.recipes.AdvFitRecipe`."""
    from advviz import data, train

    r: R.AdvFitRecipe = ctx.recipe
    model = ctx.upstream(ctx.spec.upstream[0])
    ds_name, split = r.data.split(":")
    train_set = data.load(ds_name, split)
    if r.images is not None and r.images < len(train_set):
        idx = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))[:r.images]
        train_set = train_set.subset(idx)
    if r.augment not in (None, "cifar"):
        raise ValueError(f"unknown augmentation {r.augment!r} in {ctx.spec.name}'s recipe")
    res = train.adversarial_fit(model, train_set, device=ctx.device, checkpoint=ctx.checkpoint, progress=ctx.progress,
                                description=ctx.spec.name, augment=train.cifar_augment if r.augment else None,
                                **r.fit_kwargs())
    if res.interrupted:
        raise interrupted(ctx.spec.name)
    model.eval()
    key, acc = test_accuracy(model, ds_name, ctx.device)
    return Built(model, fit_summary(res, **{key: acc}))


def _build_fit_measured(ctx: BuildContext) -> Built:
    """:func:`advviz.artifacts.catalog._build_fit`, then the clean test accuracy (:func:`test_accuracy`)."""
    built = _build_fit(ctx)
    model = built.module.eval()
    key, acc = test_accuracy(model, ctx.recipe.data.split(":")[0], ctx.device)
    training = dict(built.training)
    training["metrics"] = {**training.get("metrics", {}), key: acc}
    return Built(model, training)


def _build_holdout_fit(ctx: BuildContext) -> Built:
    """Train on the 80% part of ``<dataset>``'s test split (:func:`advviz.data.holdout_split`, 0.2, seed 0);
    the recipe's ``data`` is ``"<dataset>:holdout"``."""
    from advviz import data, train

    r: R.FitRecipe = ctx.recipe
    ds_name, split = r.data.split(":")
    if split != "holdout":
        raise ValueError(f"{ctx.spec.name}: expected data '<dataset>:holdout', got {r.data!r}")
    part, held = data.holdout_split(data.load(ds_name, "test"), 0.2, seed=0)
    model = ctx.spec.make()
    res = train.fit(model, part, device=ctx.device, checkpoint=ctx.checkpoint, progress=ctx.progress,
                    description=ctx.spec.name, **r.fit_kwargs())
    if res.interrupted:
        raise interrupted(ctx.spec.name)
    model.eval()
    x, y = held.tensors()
    acc = round(train.evaluate(model, (x.to(ctx.device), y.to(ctx.device))), 4)
    return Built(model, fit_summary(res, **{f"held_out_accuracy_{len(y)}": acc}))


def _upstream_make(base: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return get_spec(base).make()

    return make


def _slim_vgg(in_channels: int) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from advviz.generative.tsgan import SlimVGG16

        return SlimVGG16(in_channels=in_channels)

    return make


def _transfer_resnet8() -> nn.Module:
    from advviz.models.resnet_cifar import CifarResNet

    return CifarResNet(depth=8, in_channels=1, mean=(0.1307,), std=(0.3081,))


def _lenet5() -> nn.Module:
    from advviz import models

    return models.create("lenet5")


def _tv_vgg16() -> nn.Module:
    import torchvision

    return torchvision.models.vgg16(weights=None)


def _load_pth(module: nn.Module, path: Any) -> None:
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def _register() -> None:
    for kind, recipe in R.PROTECTED.items():
        for quick in (False, True):
            rec = recipe.replace(**R.PROTECTED_QUICK) if quick else recipe
            name = protected_name(kind, quick)
            register(ArtifactSpec(
                name=name, make=_upstream_make("resnet20_cifar10"), filename=f"{name}.safetensors",
                kind="classifier", dataset="cifar10", recipe=rec, build=_build_adv_fit, upstream=("resnet20_cifar10",),
                description=(f"ResNet-20 adversarially fine-tuned ({kind}"
                             + (", quick: one epoch on 2,000 images" if quick else "") + "); advviz.papers.protected")))
    for kind, recipe in R.ROBUST_LENET.items():
        name = robust_lenet_name(kind)
        register(ArtifactSpec(
            name=name, make=_upstream_make("lenet5_digits"), filename=f"{name}.safetensors", kind="classifier",
            dataset="digits", recipe=recipe, build=_build_adv_fit, upstream=("lenet5_digits",),
            description=f"lenet5_digits adversarially fine-tuned ({kind}); the TSGAN paper's Table 7"))
    register(ArtifactSpec(
        name="vgg16slim_digits", make=_slim_vgg(1), filename="vgg16slim_digits.safetensors", kind="feature network",
        dataset="digits", recipe=R.SLIM_VGG_DIGITS, build=_build_fit_measured,
        description="slim VGG-16 on digits: TSGAN's content network (and the digits perceptual network) "
                    "without ImageNet VGG-16"))
    register(ArtifactSpec(
        name="vgg16slim_cifar10", make=_slim_vgg(3), filename="vgg16slim_cifar10.safetensors",
        kind="feature network", dataset="cifar10", recipe=R.SLIM_VGG_CIFAR10, build=_build_fit_measured,
        description="slim VGG-16 on 5,000 CIFAR-10 images: TSGAN's CIFAR-10 content network without ImageNet "
                    "VGG-16 or zoo vgg16_cifar10 weights"))
    register(ArtifactSpec(
        name="resnet8_digits_transfer", make=_transfer_resnet8, filename="resnet8_digits_transfer.safetensors",
        kind="classifier", dataset="digits", recipe=R.TRANSFER_DIGITS, build=_build_fit_measured,
        description="ResNet-8 on digits, independent of lenet5_digits and of the content network: the TSGAN "
                    "paper's Table 9 transfer model (MNIST column) and FID features"))
    register(ArtifactSpec(
        name="lenet5_mnist_holdout", make=_lenet5, filename="lenet5_mnist_holdout.safetensors",
        kind="classifier", dataset="mnist", recipe=R.LENET5_MNIST_HOLDOUT, build=_build_holdout_fit,
        description="LeNet-5 on the 80% part of MNIST's test split (holdout_split 0.2, seed 0): the TSGAN "
                    "paper's full MNIST target"))
    register(ArtifactSpec(
        name=IMAGENET_VGG16, make=_tv_vgg16, filename="vgg16-397923af.pth", kind="feature network",
        dataset="imagenet", url="https://download.pytorch.org/models/vgg16-397923af.pth", loads=_load_pth,
        description="torchvision's ImageNet VGG-16 (TSGAN's content network, relu3_3)"))


_register()
