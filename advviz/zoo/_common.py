"""What the catalogue's builders share: the supervised-fit builder, training summaries, seeding.

A builder is ``(BuildContext) -> Built`` (:mod:`advviz.artifacts`). :func:`build_fit` is
registered with the store as the builder ``"fit"``, which the pretrained entries of
:mod:`advviz.models` name (a low layer declares them, this layer trains them).

**Seeding.** Every builder makes its network inside :func:`seeded` with the recipe's seed, so the
initialisation is covered by the seed as well as the data order and augmentation
(:func:`advviz.train.fit` seeds those): the same recipe built twice gives the same weights on the
same device and software (CPU: bit-identical, checked by ``tests/probes/test_artifact_probes.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from advviz import artifacts, data, train
from advviz.artifacts import BuildContext, Built
from advviz.artifacts import recipes as R
from advviz.models.highres import upsample

__all__ = ["fit_summary", "interrupted", "build_fit", "build_fit_measured", "test_accuracy", "seeded", "make_seeded"]


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's global generators seeded by ``seed`` (``None``: unseeded), then
    restore their state, so that a builder's initialisation is reproducible without changing the
    caller's random stream."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def make_seeded(ctx: BuildContext) -> nn.Module:
    """``ctx.spec.make()`` with the initialisation seeded by the recipe's ``seed`` (when it has one)."""
    with seeded(getattr(ctx.recipe, "seed", None)):
        return ctx.spec.make()


def fit_summary(result: Any, **metrics: Any) -> dict[str, Any]:
    """The training summary recorded for a :class:`~advviz.train.FitResult`: epochs, final losses, metrics."""
    last = result.history[-1] if result.history else {}
    return {"epochs": result.epochs_completed, "final": {k: v for k, v in last.items() if k != "seconds"},
            **({"metrics": metrics} if metrics else {})}


def interrupted(name: str) -> KeyboardInterrupt:
    """The error raised when training of ``name`` was stopped: its checkpoint resumes next time."""
    return KeyboardInterrupt(f"training of {name} was interrupted; the checkpoint of its last complete epoch "
                             "resumes next time")


def _augmentation(r: R.FitRecipe, size: tuple[int, ...] | None, name: str) -> Callable[..., torch.Tensor] | None:
    if r.augment is None:
        return None
    if r.augment == "cifar":
        return data.cifar_augment
    if r.augment == "cifar+upsample":
        def cifar_upsample(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
            return upsample(data.cifar_augment(x, gen), size)

        return cifar_upsample
    if r.augment == "upsample":
        def only_upsample(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:  # noqa: ARG001
            return upsample(x, size)

        return only_upsample
    raise ValueError(f"unknown augmentation {r.augment!r} in {name}'s recipe")


def build_fit(ctx: BuildContext) -> Built:
    """Train ``ctx.spec.make()`` with a :class:`~advviz.artifacts.recipes.FitRecipe` (the builder ``"fit"``)."""
    r: R.FitRecipe = ctx.recipe
    model = make_seeded(ctx)
    ds_name, split = r.data.split(":")
    train_set = data.load(ds_name, split)
    if r.images is not None and r.images < len(train_set):
        idx = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(r.seed))[:r.images]
        train_set = train_set.subset(idx)
    size = tuple(model.input_size[1:]) if hasattr(model, "input_size") else None
    res = train.fit(model, train_set, augment=_augmentation(r, size, ctx.spec.name), device=ctx.device,
                    checkpoint=ctx.checkpoint, progress=ctx.progress, description=ctx.spec.name, **r.fit_kwargs())
    if res.interrupted:
        raise interrupted(ctx.spec.name)
    return Built(model, fit_summary(res))


def test_accuracy(model: nn.Module, dataset: str, device: torch.device | str = "cpu") -> tuple[str, float]:
    """``("clean_accuracy_<n>", accuracy)`` on ``n = min(1000, size)`` test images of ``dataset``
    (:func:`advviz.data.sample`, seed 0), the metric recorded after training."""
    test = data.load(dataset, "test")
    n = min(1000, len(test))
    x, y = data.sample(test, n, seed=0)
    return f"clean_accuracy_{n}", round(train.evaluate(model, (x.to(device), y.to(device))), 4)


def build_fit_measured(ctx: BuildContext) -> Built:
    """:func:`build_fit`, then the clean test accuracy (:func:`test_accuracy`)."""
    built = build_fit(ctx)
    model = built.module.eval()
    key, acc = test_accuracy(model, ctx.recipe.data.split(":")[0], ctx.device)
    training = dict(built.training)
    training["metrics"] = {**training.get("metrics", {}), key: acc}
    return Built(model, training)


artifacts.register_builder("fit", build_fit)
