"""The defenses' networks: the perceptual network, the purifier generators, GNR, the denoisers and
defensive distillation's student (their specs and builders)."""

from __future__ import annotations

import random
import time
from typing import Any

from torch import nn

from advviz import artifacts, data, models
from advviz.artifacts import ArtifactSpec, BuildContext, Built, register
from advviz.artifacts import recipes as R
from advviz.defenses import distillation as D
from advviz.defenses import gnr
from advviz.defenses import pix2pix as P
from advviz.defenses import uddn as U
from advviz.explain.features import vgg19_layers
from advviz.zoo._common import build_fit, fit_summary, interrupted, make_seeded, seeded

__all__: list[str] = []


def _vgg_make(recipe: R.VGGFitRecipe) -> Any:
    def make() -> nn.Module:
        return models.create("vgg19", width=recipe.width)

    return make


def _unet_make(ngf: int) -> Any:
    def make() -> nn.Module:
        return P.UNetGenerator(3, ngf=ngf)

    return make


def _build_pix2pix(ctx: BuildContext) -> Built:
    """A purifier generator on attacked/clean pairs of the published ResNet-20 (:class:`~R.Pix2PixRecipe`)."""
    r: R.Pix2PixRecipe = ctx.recipe
    target, _ = artifacts.get("resnet20_cifar10", device=ctx.device)
    x, y = data.sample(data.load("cifar10", "train"), r.subset, seed=r.pairs_seed)
    pairs = P.make_pairs(target, x.to(ctx.device), y.to(ctx.device), attack=r.attack, eps=r.eps, progress=ctx.progress)
    perc = None
    if r.kind == "cgan":
        net, _ = artifacts.get("vgg19_slim_cifar10_perceptual", device=ctx.device)
        perc = P.PerceptualLoss(net, vgg19_layers(net)[:-1])
    gen = make_seeded(ctx)
    with seeded(r.seed):
        disc = P.PatchDiscriminator(3)
    res = P.train_pix2pix(gen, disc, pairs, perceptual=perc, epochs=r.epochs, lr=r.lr,
                          batch_size=r.batch_size, lambda_l1=r.lambda_l1, lambda_perc=r.lambda_perc, device=ctx.device,
                          seed=r.seed, checkpoint=ctx.checkpoint, progress=ctx.progress, description=ctx.spec.name)
    if res.interrupted:
        raise interrupted(ctx.spec.name)
    return Built(gen, {"epochs": res.epochs_completed, "history": res.history,
                       "final": {k: v for k, v in (res.history[-1] if res.history else {}).items() if k != "seconds"}})


def _gnr_make(recipe: R.GNRRecipe) -> Any:
    def make() -> nn.Module:
        return gnr.NoiseGenerator(3, widths=recipe.widths, convs_per_unit=recipe.convs, eps=recipe.eps)

    return make


def _build_gnr(ctx: BuildContext) -> Built:
    """The GNR noise WGAN-GP on the FGSM noise of the recipe's real pairs (:class:`~R.GNRRecipe`)."""
    r: R.GNRRecipe = ctx.recipe
    target, _ = artifacts.get("resnet20_cifar10", device=ctx.device)
    x, y = data.sample(data.load("cifar10", "train"), r.real + r.gnr, seed=r.pairs_seed)
    xr, yr = x[:r.real].to(ctx.device), y[:r.real].to(ctx.device)
    xa = U.attacked(target, xr, yr, attacks=r.attacks, eps=r.eps, seed=r.pairs_seed, progress=ctx.progress)
    seed = r.seed if r.seed is not None else random.SystemRandom().randrange(2**31)
    gen, critic = gnr.seeded_networks(3, seed=seed, widths=r.widths, convs_per_unit=r.convs,
                                      critic_widths=r.critic_widths, eps=r.eps)
    hist = gnr.train_gnr(gen, critic, (xa - xr).detach(), steps=r.steps, eps=r.eps, device=ctx.device,
                         progress=ctx.progress, seed=seed)
    return Built(gen, {"steps": r.steps, "seed": seed, "final": hist[-1] if hist else {}})


def _denoiser_make(recipe: R.DenoiserRecipe) -> Any:
    def make() -> nn.Module:
        if recipe.kind == "dae":
            return U.dae_network(3, recipe.width, levels=getattr(recipe, "levels", 4))
        return U.UDDN(3, recipe.width)

    return make


def _build_denoiser(ctx: BuildContext) -> Built:
    """A UDDN-paper denoiser on its upstream GNR's pairs (:class:`~R.DenoiserRecipe`)."""
    r: R.DenoiserRecipe = ctx.recipe
    gnr_name = next(u for u in ctx.spec.upstream if u.startswith("gnr_"))
    xa, xc, y, pairs = U.pairs_from(gnr_name, device=ctx.device, progress=ctx.progress)
    target, _ = artifacts.get("resnet20_cifar10", device=ctx.device)
    net = make_seeded(ctx)
    res = U.train_denoiser(net, target, (xa, xc), y, guidance=U.GUIDANCE[r.kind], epochs=r.epochs, lr=r.lr,
                           batch_size=r.batch_size, device=ctx.device, seed=r.seed, checkpoint=ctx.checkpoint,
                           progress=ctx.progress, description=ctx.spec.name, schedule=r.schedule,
                           lr_final=r.lr_final)
    if res.interrupted:
        raise interrupted(ctx.spec.name)
    return Built(net, {**fit_summary(res), "history": res.history, "pairs": pairs})


def _build_distilled(ctx: BuildContext) -> Built:
    """Defensive distillation's student (:class:`~R.DistillRecipe`)."""
    r: R.DistillRecipe = ctx.recipe
    x, y = data.sample(data.load("cifar10", "train"), r.images, seed=r.seed)
    teacher = D.scale_head(ctx.upstream("resnet20_cifar10"), r.T).train()
    student = D.scale_head(ctx.upstream("resnet20_cifar10"), r.T).train()
    t0 = time.perf_counter()
    _, res = D.defensive_distillation(teacher, student, x, y, T=r.T, device=ctx.device, seed=r.seed,
                                      progress=ctx.progress, epochs=r.epochs, lr=r.lr, optimizer=r.optimizer,
                                      batch_size=r.batch_size)
    if res.interrupted:
        raise interrupted(ctx.spec.name)
    return Built(student, {**fit_summary(res), "seconds": time.perf_counter() - t0, "history": res.history})


def _defenses() -> None:
    for suffix, recipe in (("", R.PERCEPTUAL), ("_quick", R.PERCEPTUAL_QUICK)):
        register(ArtifactSpec(
            name=f"vgg19_slim_cifar10_perceptual{suffix}", make=_vgg_make(recipe),
            filename=f"vgg19_slim_cifar10_perceptual{suffix}.safetensors", kind="feature network", dataset="cifar10",
            recipe=recipe, build=build_fit,
            description="slim CIFAR VGG-19 (width 0.25), the cGAN's perceptual network when no ImageNet VGG-19 exists"))
    for config, suffix in (("full", ""), ("quick", "_quick"), ("paper", "_paper")):
        for kind in ("pix2pix", "cgan"):
            if config == "paper":
                continue
            for attack in ("fgsm", "pgd"):
                recipe = R.pix2pix_recipe(kind, attack, config)
                up = ("resnet20_cifar10",) + (("vgg19_slim_cifar10_perceptual",) if kind == "cgan" else ())
                register(ArtifactSpec(
                    name=f"{kind}_{attack}_cifar10{suffix}", make=_unet_make(recipe.ngf),
                    filename=f"{kind}_{attack}_cifar10{suffix}.safetensors", kind="purifier", dataset="cifar10",
                    recipe=recipe, build=_build_pix2pix, upstream=up,
                    description=f"{kind} purifier generator on {attack.upper()} pairs of ResNet-20"))
        gnr_recipe = {"full": R.GNR, "quick": R.GNR_QUICK, "paper": R.GNR_PAPER}[config]
        register(ArtifactSpec(
            name=f"gnr_cifar10{suffix}", make=_gnr_make(gnr_recipe), filename=f"gnr_cifar10{suffix}.safetensors",
            kind="generator", dataset="cifar10", recipe=gnr_recipe, build=_build_gnr, upstream=("resnet20_cifar10",),
            description="GNR noise generator (WGAN-GP on FGSM noise), the UDDN paper's extra training pairs"))
        for kind in ("uddn", "dae", "pgd"):
            recipe = R.denoiser_recipe(kind, config)
            register(ArtifactSpec(
                name=f"{kind}_resnet20_cifar10{suffix}", make=_denoiser_make(recipe),
                filename=f"{kind}_resnet20_cifar10{suffix}.safetensors", kind="purifier", dataset="cifar10",
                recipe=recipe, build=_build_denoiser, upstream=("resnet20_cifar10", f"gnr_cifar10{suffix}"),
                description={"uddn": "UDDN, logit-guided U-Net denoiser (UDDN paper)",
                             "dae": "DAE baseline: no laterals, reconstructs the image, pixel loss",
                             "pgd": "Liao et al.'s pixel-guided denoiser (the UDDN network, pixel loss)"}[kind]))
    register(ArtifactSpec(
        name="resnet20_cifar10_defensive_distillation_quick",
        make=lambda: models.create("resnet20"), filename="resnet20_cifar10_defensive_distillation_quick.safetensors",
        kind="classifier", dataset="cifar10", recipe=R.DEFENSIVE_QUICK, build=_build_distilled,
        upstream=("resnet20_cifar10",),
        description="ResNet-20 after Papernot's defensive distillation at T = 100 (deployed at T = 1)"))


_defenses()
