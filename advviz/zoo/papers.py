"""The artefacts of the paper reproductions: protected ResNet-20s, robust LeNets, TSGAN's content
and transfer networks. (TSGAN's and AdvGAN's generators: :mod:`advviz.zoo.generators`.)"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advviz import data, models, train
from advviz.artifacts import ArtifactSpec, BuildContext, Built, get_spec, register
from advviz.artifacts import recipes as R
from advviz.models.resnet_cifar import CifarResNet
from advviz.models.slim_vgg import SlimVGG16
from advviz.zoo._common import build_fit_measured, fit_summary, interrupted, make_seeded, test_accuracy

__all__ = ["protected_name", "robust_lenet_name"]


def protected_name(kind: str, quick: bool) -> str:
    """``resnet20_cifar10_<kind>[_quick]``: the artefact of a protected ResNet-20."""
    return f"resnet20_cifar10_{kind}" + ("_quick" if quick else "")


def robust_lenet_name(kind: str) -> str:
    """``lenet5_digits_<kind>_quick``: a robust LeNet-5 of the TSGAN paper's Table 7."""
    return f"lenet5_digits_{kind}_quick"


def _build_adv_fit(ctx: BuildContext) -> Built:
    """Fine-tune the (single) upstream classifier with an :class:`~advviz.artifacts.recipes.AdvFitRecipe`."""
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
                                description=ctx.spec.name, augment=data.cifar_augment if r.augment else None,
                                **r.fit_kwargs())
    if res.interrupted:
        raise interrupted(ctx.spec.name)
    model.eval()
    key, acc = test_accuracy(model, ds_name, ctx.device)
    return Built(model, fit_summary(res, **{key: acc}))


def _build_holdout_fit(ctx: BuildContext) -> Built:
    """Train on the 80% part of ``<dataset>``'s test split (:func:`advviz.data.holdout_split`, 0.2, seed 0);
    the recipe's ``data`` is ``"<dataset>:holdout"``."""
    r: R.FitRecipe = ctx.recipe
    ds_name, split = r.data.split(":")
    if split != "holdout":
        raise ValueError(f"{ctx.spec.name}: expected data '<dataset>:holdout', got {r.data!r}")
    part, held = data.holdout_split(data.load(ds_name, "test"), 0.2, seed=0)
    model = make_seeded(ctx)
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
        return SlimVGG16(in_channels=in_channels)

    return make


def _transfer_resnet8() -> nn.Module:
    return CifarResNet(depth=8, in_channels=1, mean=(0.1307,), std=(0.3081,))


def _lenet5() -> nn.Module:
    return models.create("lenet5")


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
        dataset="digits", recipe=R.SLIM_VGG_DIGITS, build=build_fit_measured,
        description="slim VGG-16 on digits: TSGAN's content network (and the digits perceptual network) "
                    "without ImageNet VGG-16"))
    register(ArtifactSpec(
        name="vgg16slim_cifar10", make=_slim_vgg(3), filename="vgg16slim_cifar10.safetensors",
        kind="feature network", dataset="cifar10", recipe=R.SLIM_VGG_CIFAR10, build=build_fit_measured,
        description="slim VGG-16 on 5,000 CIFAR-10 images: TSGAN's CIFAR-10 content network without ImageNet "
                    "VGG-16 or zoo vgg16_cifar10 weights"))
    register(ArtifactSpec(
        name="resnet8_digits_transfer", make=_transfer_resnet8, filename="resnet8_digits_transfer.safetensors",
        kind="classifier", dataset="digits", recipe=R.TRANSFER_DIGITS, build=build_fit_measured,
        description="ResNet-8 on digits, independent of lenet5_digits and of the content network: the TSGAN "
                    "paper's Table 9 transfer model (MNIST column) and FID features"))
    register(ArtifactSpec(
        name="lenet5_mnist_holdout", make=_lenet5, filename="lenet5_mnist_holdout.safetensors",
        kind="classifier", dataset="mnist", recipe=R.LENET5_MNIST_HOLDOUT, build=_build_holdout_fit,
        description="LeNet-5 on the 80% part of MNIST's test split (holdout_split 0.2, seed 0): the TSGAN "
                    "paper's full MNIST target"))



_register()
