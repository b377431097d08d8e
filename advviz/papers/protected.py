"""Adversarially trained ("protected") models used by the CFR and TSGAN papers' tables.

The CFR paper attacks ResNet-18 protected by Fast-AT (Wong et al. 2020, eps = 8/255) and PGD-AT
(Madry et al. 2018: 7 steps, alpha = 2/255, eps = 8/255). advviz makes the CIFAR-10 ResNet-20
analogues by adversarially fine-tuning the published ResNet-20 on the (JPEG) CIFAR-10 train
split with :func:`advviz.train.adversarial_fit`, following the recipes below, and caches the
weights (``<cache>/weights/<name>.safetensors``; a file of that name in ``$ADVVIZ_WEIGHTS`` is
used instead). Training writes a checkpoint after every complete epoch
(``<cache>/checkpoints/<name>``) and resumes from it, so an interrupted run (Ctrl-C) loses at most
the epoch in progress. The recipe travels with every result, so a number always says which model it
comes from. ``quick`` recipes (a 2,000-image subset, one epoch) exist for CI and notebooks and
are labelled as such; they are far weaker defenses than the full ones.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = ["RECIPES", "resnet20"]

log = logging.getLogger(__name__)

RECIPES: dict[str, dict[str, Any]] = {
    "fast_at": {"attack": "fast", "eps": 8 / 255, "epochs": 5, "lr": 0.02, "optimizer": "sgd",
                "schedule": "cosine", "batch_size": 128, "weight_decay": 5e-4, "augment": True, "subset": None},
    "pgd_at": {"attack": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 7, "epochs": 3, "lr": 0.02,
               "optimizer": "sgd", "schedule": "cosine", "batch_size": 128, "weight_decay": 5e-4,
               "augment": True, "subset": None},
}
QUICK = {"epochs": 1, "subset": 2000}


def _recipe(kind: str, quick: bool) -> dict[str, Any]:
    if kind not in RECIPES:
        raise ValueError(f"unknown protection {kind!r}; choose one of {', '.join(RECIPES)}")
    return {**RECIPES[kind], **(QUICK if quick else {})}


def resnet20(kind: str, *, quick: bool = False, device: str | torch.device = "cpu",
             progress: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """ResNet-20 adversarially fine-tuned with ``kind`` (``"fast_at"`` or ``"pgd_at"``).

    Returns:
        ``(model in eval mode on device, record)`` where ``record`` holds the weights' name, the
        recipe, whether it was trained now, and its clean accuracy on 1,000 test images.
    """
    from advviz import data, models, train
    from advviz._paths import cache_dir, find_weights

    recipe = _recipe(kind, quick)
    name = f"resnet20_cifar10_{kind}" + ("_quick" if quick else "")
    filename = f"{name}.safetensors"
    found = find_weights(filename)
    trained_now = found is None
    if found is not None:
        model = models.load("resnet20", weights=found)
    else:
        log.info("adversarially fine-tuning %s (%s); cached afterwards", name, recipe)
        model = models.load("resnet20_cifar10")
        train_set = data.load("cifar10", "train")
        if recipe["subset"]:
            idx = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))[:recipe["subset"]]
            train_set = train_set.subset(idx)
        fit_kw = {k: v for k, v in recipe.items() if k not in ("attack", "eps", "alpha", "steps", "subset", "augment")}
        res = train.adversarial_fit(model, train_set, attack=recipe["attack"], eps=recipe["eps"],
                                    alpha=recipe.get("alpha"), steps=recipe.get("steps"), device=device, seed=0,
                                    augment=train.cifar_augment if recipe["augment"] else None,
                                    progress=progress, description=name,
                                    checkpoint=cache_dir() / "checkpoints" / name, **fit_kw)
        if res.interrupted:
            raise KeyboardInterrupt(f"adversarial training of {name} was interrupted; the checkpoint of its last "
                                    f"complete epoch resumes next time")
        found = models.save_weights(model, cache_dir() / "weights" / filename,
                                    metadata={"name": name, "arch": "resnet20", "recipe": recipe})
    model.to(device).eval()
    x, y = data.sample(data.load("cifar10", "test"), 1000, seed=0)
    record = {"name": name, "weights": str(found), "recipe": recipe, "trained_now": trained_now,
              "clean_accuracy_1000": train.evaluate(model, (x.to(device), y.to(device)))}
    return model, record
