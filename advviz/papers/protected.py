"""Adversarially trained ("protected") models used by the CFR and TSGAN papers' tables.

The CFR paper attacks ResNet-18 protected by Fast-AT (Wong et al. 2020, eps = 8/255) and PGD-AT
(Madry et al. 2018: 7 steps, alpha = 2/255, eps = 8/255). advviz makes the CIFAR-10 ResNet-20
analogues by adversarially fine-tuning the published ResNet-20 on the (JPEG) CIFAR-10 train
split with :func:`advviz.train.adversarial_fit`, following the typed recipes :data:`RECIPES`
(:class:`advviz.artifacts.recipes.AdvFitRecipe`). They are the artefacts
``resnet20_cifar10_<kind>[_quick]`` (:mod:`advviz.artifacts`; upstream ``resnet20_cifar10``): a file
is used only when it was made with today's recipe and today's ResNet-20, else it is retrained
(``advviz artifacts build resnet20_cifar10_pgd_at`` makes one ahead of time). Training writes a
checkpoint after every complete epoch and resumes from it, so an interrupted run (Ctrl-C) loses at
most the epoch in progress. The record (recipe, its hash, the clean accuracy on 1,000 test images
measured after training) travels with every result, so a number always says which model it comes
from. ``quick`` recipes (:data:`QUICK`: a 2,000-image subset, one epoch) exist for CI and notebooks
and are labelled as such; they are far weaker defenses than the full ones.
"""

from __future__ import annotations

from typing import Any

import torch

from advviz import artifacts
from advviz.artifacts.recipes import PROTECTED, PROTECTED_QUICK, AdvFitRecipe
from advviz.zoo import protected_name

__all__ = ["RECIPES", "QUICK", "resnet20"]

#: ``fast_at`` and ``pgd_at`` (:data:`advviz.artifacts.recipes.PROTECTED`).
RECIPES: dict[str, AdvFitRecipe] = PROTECTED
#: The changes of the ``_quick`` recipes.
QUICK: dict[str, Any] = PROTECTED_QUICK


def resnet20(kind: str, *, quick: bool = False, device: str | torch.device = "cpu",
             progress: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """ResNet-20 adversarially fine-tuned with ``kind`` (``"fast_at"`` or ``"pgd_at"``).

    Returns:
        ``(model, record)``: the shared, frozen, eval-mode artefact on ``device`` (do not train or
        move it; :func:`advviz.artifacts.fresh` gives a private copy) and a dict of its
        :class:`~advviz.artifacts.Record`: ``name``, ``weights`` (the file), ``sha256``, ``recipe``,
        ``recipe_hash``, ``trained_now``, ``training`` (epochs, final losses) and
        ``clean_accuracy_1000`` (measured on 1,000 test images after training).

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in RECIPES:
        raise ValueError(f"unknown protection {kind!r}; choose one of {', '.join(RECIPES)}")
    model, rec = artifacts.get(protected_name(kind, quick), device=device, progress=progress)
    metrics = rec.training.get("metrics", {})
    return model, {"name": rec.name, "weights": rec.path, "sha256": rec.sha256, "recipe": rec.recipe,
                   "recipe_hash": rec.recipe_hash, "trained_now": rec.source == "trained now",
                   "training": {k: v for k, v in rec.training.items() if k != "metrics"},
                   "clean_accuracy_1000": metrics.get("clean_accuracy_1000")}
