"""Model zoo and registry.

* ``create(name, **kw)``: a freshly initialised architecture (``list_models()``).
* ``load(name, weights=None)``: an eval-mode model with weights: ``name`` is a pretrained entry
  (``list_models(pretrained=True)``, e.g. ``"resnet20_cifar10"``) or an architecture with
  ``weights`` a file path (``.safetensors`` or a PyTorch checkpoint) or a pretrained name.
* ``wrap(module, mean=, std=, input_size=, classes=, name=)``: a user's own ``nn.Module`` as one
  object the library understands (normalisation inside, input size, classes, Grad-CAM layer);
  ``from_factory("pkg.module:build")`` builds one from a factory function.
* Pretrained entries are entries of the artefact store (:mod:`advviz.artifacts`, the one path
  for every network): :func:`register_weights` declares one there, and :func:`load` obtains it
  there: ``$ADVVIZ_WEIGHTS``, the weights advviz ships, the user cache, then a download with a
  sha256 check (unless ``$ADVVIZ_OFFLINE``). Weights advviz trains itself (``*_digits``, the high
  stream) are trained on first use with their typed recipe (:mod:`advviz.artifacts.recipes`, by
  the builder ``"fit"`` of :mod:`advviz.zoo`) and cached with their provenance record.

Loading never unpickles arbitrary objects: PyTorch files go through
``torch.load(..., weights_only=True)``, advviz's own through safetensors (:mod:`advviz._weights`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advviz import artifacts
from advviz._registry import Registry
from advviz._weights import CheckpointError, load_state_file, save_weights
from advviz.artifacts import recipes as R
from advviz.models._base import Classifier, Normalize
from advviz.models._wrap import Wrapped, from_factory, wrap
from advviz.models.highres import HighResResNet
from advviz.models.lenet import LeNet5
from advviz.models.mobilenet import CifarMobileNetV2
from advviz.models.resnet_cifar import CifarResNet
from advviz.models.slim_vgg import SlimVGG16
from advviz.models.vgg_cifar import CifarVGG

__all__ = [
    "Classifier",
    "Normalize",
    "SlimVGG16",
    "WeightsSpec",
    "CheckpointError",
    "register_model",
    "register_weights",
    "create",
    "load",
    "list_models",
    "get_weights_spec",
    "save_weights",
    "load_state_file",
    "wrap",
    "Wrapped",
    "from_factory",
]

log = logging.getLogger(__name__)

_MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


@dataclass(frozen=True)
class WeightsSpec:
    """A named set of weights for an architecture (declared in the artefact store by :func:`register_weights`).

    Attributes:
        name: registry name, e.g. ``"resnet20_cifar10"``.
        arch: architecture name in the model registry.
        filename: file name looked up in the weight folders.
        dataset: the dataset the weights were trained on.
        arch_kwargs: keyword arguments for ``create(arch, ...)``.
        url: where to download the file (``None``: not downloadable).
        sha256: expected sha256 of the file (checked on download and on load).
        description: one line for listings (provenance, reported accuracy).
        input_size: ``(C, H, W)`` the model takes when it differs from the dataset's native
            image size (e.g. a network on upsampled images); ``None``: the native size.
        recipe: the typed recipe advviz trains them with (``None``: downloaded or user-made).
        build: the store's builder for ``recipe`` (``"fit"``: :func:`advviz.train.fit`).
    """

    name: str
    arch: str
    filename: str
    dataset: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    url: str | None = None
    sha256: str | None = None
    description: str = ""
    input_size: tuple[int, int, int] | None = None
    recipe: artifacts.Recipe | None = None
    build: str | None = None


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering an architecture factory under ``name`` (duplicates raise)."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        return _MODELS.add(name, factory)

    return deco


def register_weights(spec: WeightsSpec) -> WeightsSpec:
    """Declare a pretrained entry in the artefact store (duplicates raise)."""
    if spec.name in _MODELS:
        raise ValueError(f"weights {spec.name!r} are already registered (an architecture has that name)")
    if spec.arch not in _MODELS:
        raise ValueError(f"weights {spec.name!r} refer to unknown architecture {spec.arch!r}")

    def make(_s: WeightsSpec = spec) -> nn.Module:
        return create(_s.arch, **_s.arch_kwargs)

    artifacts.register(artifacts.ArtifactSpec(
        name=spec.name, make=make, filename=spec.filename, kind="classifier", dataset=spec.dataset,
        recipe=spec.recipe, build=spec.build if spec.recipe is not None else None, url=spec.url, sha256=spec.sha256,
        description=spec.description, arch=spec.arch, arch_kwargs=dict(spec.arch_kwargs), input_size=spec.input_size))
    return spec


def list_models(pretrained: bool = False) -> list[str]:
    """Names of registered architectures, or of pretrained entries with ``pretrained=True``."""
    if not pretrained:
        return _MODELS.names()
    return [n for n in artifacts.list_artifacts() if artifacts.get_spec(n).arch is not None]


def get_weights_spec(name: str) -> WeightsSpec:
    """The :class:`WeightsSpec` of pretrained entry ``name`` (read from the artefact store)."""
    try:
        a = artifacts.get_spec(name)
    except KeyError:
        a = None
    if a is None or a.arch is None:
        raise KeyError(f"no pretrained weights named {name!r}; available: {', '.join(list_models(True))}")
    return WeightsSpec(name=a.name, arch=a.arch, filename=a.filename, dataset=a.dataset, arch_kwargs=dict(a.arch_kwargs),
                       url=a.url, sha256=a.sha256, description=a.description, input_size=a.input_size,
                       recipe=a.recipe, build=a.build if isinstance(a.build, str) else None)


def _is_pretrained(name: str) -> bool:
    try:
        return artifacts.get_spec(name).arch is not None
    except KeyError:
        return False


def create(name: str, **kwargs: Any) -> nn.Module:
    """Create architecture ``name`` with fresh weights (train mode, as PyTorch modules start).

    Args:
        name: one of :func:`list_models`.
        **kwargs: forwarded to the architecture (e.g. ``num_classes``, ``in_channels``).
    """
    if name not in _MODELS:
        hint = f" (did you mean advviz.models.load({name!r})?)" if _is_pretrained(name) else ""
        raise KeyError(f"unknown model {name!r}{hint}; available: {', '.join(list_models())}")
    return _MODELS.get(name)(**kwargs)


def load(name: str, weights: str | os.PathLike[str] | None = None, *,
         device: str | torch.device | None = None, **kwargs: Any) -> nn.Module:
    """Load a model with weights, in eval mode, taking ``[0, 1]`` input.

    A pretrained entry is a private copy of the store's artefact (:func:`advviz.artifacts.fresh`):
    the caller may train or move it.

    Args:
        name: a pretrained entry (``"resnet20_cifar10"``) or an architecture (``"lenet5"``).
        weights: for an architecture, a weight file path or a pretrained entry name.
        device: where to put the model (default CPU).
        **kwargs: architecture keyword arguments (override the entry's).

    Raises:
        KeyError: unknown name.
        CheckpointError: missing, corrupt or mismatching weights (the message says what to do).
    """
    entry: str | None = None
    if _is_pretrained(name):
        if weights is not None:
            raise ValueError(f"{name!r} already names its weights; pass weights= only with an architecture name")
        entry = name
    elif name in _MODELS:
        if weights is None:
            raise ValueError(f"load({name!r}) needs weights=: a file path or one of "
                             f"{[w for w in list_models(True) if artifacts.get_spec(w).arch == name] or list_models(True)}; "
                             f"use create({name!r}) for a fresh model")
        if _is_pretrained(str(weights)):
            entry = str(weights)
            if artifacts.get_spec(entry).arch != name:
                raise ValueError(f"weights {entry!r} are for {artifacts.get_spec(entry).arch!r}, not {name!r}")
    else:
        raise KeyError(f"unknown model {name!r}; architectures: {', '.join(list_models())}; "
                       f"pretrained: {', '.join(list_models(True))}")
    if entry is not None:
        spec = artifacts.get_spec(entry)
        if not kwargs or kwargs == {k: spec.arch_kwargs.get(k) for k in kwargs}:
            model = artifacts.fresh(entry)
        else:  # other architecture options: the entry's file into that architecture
            path, _ = artifacts.resolve(entry)
            model = _load_file(create(spec.arch, **{**spec.arch_kwargs, **kwargs}), path, spec.arch)
    else:
        model = _load_file(create(name, **kwargs), Path(weights), name)  # type: ignore[arg-type]
    model.eval()
    if device is not None:
        model.to(device)
    return model


def _load_file(model: nn.Module, path: Path, arch: str) -> nn.Module:
    state = load_state_file(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit architecture {arch!r}: {exc}") from exc
    return model


# ---------------------------------------------------------------------------------------------
# the zoo
# ---------------------------------------------------------------------------------------------

register_model("lenet5")(LeNet5)
for _depth in (20, 32, 44, 56):
    register_model(f"resnet{_depth}")(lambda _d=_depth, **kw: CifarResNet(depth=_d, **kw))
for _depth in (11, 13, 16, 19):
    register_model(f"vgg{_depth}")(lambda _d=_depth, **kw: CifarVGG(depth=_d, **kw))
register_model("mobilenet_v2")(CifarMobileNetV2)

_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
register_weights(WeightsSpec(
    name="resnet20_cifar10", arch="resnet20", filename="resnet20-12fca82f.th", dataset="cifar10",
    url=_AKAMASTER + "resnet20-12fca82f.th",
    sha256="12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
    description="akamaster/pytorch_resnet_cifar10, 91.73% on original CIFAR-10 (81.0% on the JPEG copy)",
))
register_weights(WeightsSpec(
    name="resnet32_cifar10", arch="resnet32", filename="resnet32-d509ac18.th", dataset="cifar10",
    url=_AKAMASTER + "resnet32-d509ac18.th",
    sha256="d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850",
    description="akamaster/pytorch_resnet_cifar10, 92.63% on original CIFAR-10 (82.6% on the JPEG copy)",
))


register_weights(WeightsSpec(
    name="lenet5_digits", arch="lenet5", filename="lenet5_digits.safetensors", dataset="digits",
    description="LeNet-5 trained by advviz on the digits train split (advviz.artifacts.recipes.LENET5_DIGITS)",
    recipe=R.LENET5_DIGITS, build="fit",
))


# CIFAR VGGs trained by advviz (CFR paper Figs. 3 and 7). Not shipped: make them with the
# command in the description (a GPU makes this minutes; a 2-core CPU, hours).
for _depth in (11, 13, 16, 19):
    register_weights(WeightsSpec(
        name=f"vgg{_depth}_cifar10", arch=f"vgg{_depth}", filename=f"vgg{_depth}_cifar10.safetensors",
        dataset="cifar10",
        description=(f"Make them with: advviz train vgg{_depth} --data cifar10 --epochs 30 --optimizer sgd "
                     f"--lr 0.05 --schedule cosine --augment --out $ADVVIZ_WEIGHTS/vgg{_depth}_cifar10.safetensors"),
    ))


# Two-stream detector (paper 003): the high-resolution CIFAR-10 stream, trained by advviz on
# 2x-upsampled images (advviz/models/highres.py records the recipe and the measured accuracy).
def _highres_resnet8(**kw: Any) -> nn.Module:
    return HighResResNet(depth=8, **kw)


register_model("highres_resnet8")(_highres_resnet8)
register_weights(WeightsSpec(
    name="highres_resnet8_cifar10", arch="highres_resnet8", filename="highres_resnet8_cifar10.safetensors",
    dataset="cifar10", input_size=(3, 64, 64),
    description=("HighResResNet-8 on 64x64 (2x bilinear) CIFAR-10, trained by advviz on first use "
                 "(advviz.artifacts.recipes.HIGHRES_CIFAR10: 1 epoch SGD on 20,000 images); 44.8% top-1, 92.4% top-5 on the JPEG CIFAR-10 test split"),
    recipe=R.HIGHRES_CIFAR10, build="fit",
))
register_weights(WeightsSpec(
    name="highres_resnet8_digits", arch="highres_resnet8", filename="highres_resnet8_digits.safetensors",
    dataset="digits", arch_kwargs={"in_channels": 1, "mean": (0.5,), "std": (0.5,)},
    input_size=(1, 64, 64),
    description=("HighResResNet-8 on 64x64 (bilinear) digits, the two-stream detector's offline high stream, "
                 "trained by advviz on first use (advviz.artifacts.recipes.HIGHRES_DIGITS)"),
    recipe=R.HIGHRES_DIGITS, build="fit",
))
