"""Every registered artefact: the model zoo's weights, then the networks advviz trains itself.

Imported by :mod:`advviz.artifacts` on first use. Builders import the training code lazily, so
registering costs nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advviz.artifacts import recipes as R
from advviz.artifacts._core import ArtifactSpec, BuildContext, Built, register

__all__ = ["fit_summary", "interrupted"]


def fit_summary(result: Any, **metrics: Any) -> dict[str, Any]:
    """The training summary recorded for a :class:`~advviz.train.FitResult`: epochs, final losses, metrics."""
    last = result.history[-1] if result.history else {}
    return {"epochs": result.epochs_completed, "final": {k: v for k, v in last.items() if k != "seconds"},
            **({"metrics": metrics} if metrics else {})}


def interrupted(name: str) -> KeyboardInterrupt:
    """The error raised when training of ``name`` was stopped: its checkpoint resumes next time."""
    return KeyboardInterrupt(f"training of {name} was interrupted; the checkpoint of its last complete epoch "
                             "resumes next time")


def _build_fit(ctx: BuildContext) -> Built:
    """Train ``ctx.spec.make()`` with a :class:`~advviz.artifacts.recipes.FitRecipe`."""
    from advviz import data, train
    from advviz.models.highres import upsample

    r: R.FitRecipe = ctx.recipe
    model = ctx.spec.make()
    ds_name, split = r.data.split(":")
    train_set = data.load(ds_name, split)
    if r.images is not None and r.images < len(train_set):
        idx = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(r.seed))[:r.images]
        train_set = train_set.subset(idx)
    size = tuple(model.input_size[1:]) if hasattr(model, "input_size") else None
    augment = None
    if r.augment == "cifar":
        augment = train.cifar_augment
    elif r.augment == "cifar+upsample":
        def augment(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
            return upsample(train.cifar_augment(x, gen), size)
    elif r.augment == "upsample":
        def augment(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:  # noqa: ARG001
            return upsample(x, size)
    elif r.augment is not None:
        raise ValueError(f"unknown augmentation {r.augment!r} in {ctx.spec.name}'s recipe")
    res = train.fit(model, train_set, augment=augment, device=ctx.device, checkpoint=ctx.checkpoint,
                    progress=ctx.progress, description=ctx.spec.name, **r.fit_kwargs())
    if res.interrupted:
        raise interrupted(ctx.spec.name)
    return Built(model, fit_summary(res))


# ---------------------------------------------------------------------------------------------
# the model zoo (advviz.models' pretrained entries)
# ---------------------------------------------------------------------------------------------

_ZOO_RECIPES: dict[str, R.Recipe] = {
    "lenet5_digits": R.LENET5_DIGITS,
    "highres_resnet8_cifar10": R.HIGHRES_CIFAR10,
    "highres_resnet8_digits": R.HIGHRES_DIGITS,
}


def _zoo() -> None:
    from advviz import models

    for name in models.list_models(pretrained=True):
        spec = models.get_weights_spec(name)
        recipe = _ZOO_RECIPES.get(name)

        def make(_s: Any = spec) -> nn.Module:
            return models.create(_s.arch, **_s.arch_kwargs)

        register(ArtifactSpec(name=name, make=make, filename=spec.filename, kind="classifier", dataset=spec.dataset,
                              recipe=recipe, build=_build_fit if recipe is not None else None, url=spec.url,
                              sha256=spec.sha256, description=spec.description))


_zoo()

from advviz.artifacts import catalog_papers  # noqa: E402,F401  (the paper reproductions' entries)
