"""Model zoo and registry.

* ``create(name, **kw)``: a freshly initialised architecture (``list_models()``).
* ``load(name, weights=None)``: an eval-mode model with weights: ``name`` is a pretrained entry
  (``list_models(pretrained=True)``, e.g. ``"resnet20_cifar10"``) or an architecture with
  ``weights`` a file path (``.safetensors`` or a PyTorch checkpoint) or a pretrained name.
* Weight files are resolved by :mod:`advviz.artifacts` (the one path for every network):
  ``$ADVVIZ_WEIGHTS``, the weights advviz ships, the user cache, then a download with a sha256
  check (unless ``$ADVVIZ_OFFLINE``). Weights advviz trains itself (``*_digits``, the high
  stream) are trained on first use with their typed recipe (:mod:`advviz.artifacts.recipes`)
  and cached with their provenance record.

Loading never unpickles arbitrary objects: PyTorch files go through
``torch.load(..., weights_only=True)``, advviz's own through safetensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advviz._paths import cache_dir, offline, weights_dirs
from advviz.models._base import Classifier, Normalize
from advviz.models.lenet import LeNet5
from advviz.models.mobilenet import CifarMobileNetV2
from advviz.models.resnet_cifar import CifarResNet
from advviz.models.vgg_cifar import CifarVGG

__all__ = [
    "Classifier",
    "Normalize",
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
]

log = logging.getLogger(__name__)

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_WEIGHTS: dict[str, WeightsSpec] = {}


class CheckpointError(ValueError):
    """A weight file is missing, corrupt, or does not fit the architecture."""


@dataclass(frozen=True)
class WeightsSpec:
    """A named set of weights for an architecture.

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


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering an architecture factory under ``name`` (duplicates raise)."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS or name in _WEIGHTS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        return factory

    return deco


def register_weights(spec: WeightsSpec) -> WeightsSpec:
    """Register a pretrained entry (duplicates raise)."""
    if spec.name in _WEIGHTS or spec.name in _MODELS:
        raise ValueError(f"weights {spec.name!r} are already registered")
    if spec.arch not in _MODELS:
        raise ValueError(f"weights {spec.name!r} refer to unknown architecture {spec.arch!r}")
    _WEIGHTS[spec.name] = spec
    return spec


def list_models(pretrained: bool = False) -> list[str]:
    """Names of registered architectures, or of pretrained entries with ``pretrained=True``."""
    return sorted(_WEIGHTS if pretrained else _MODELS)


def get_weights_spec(name: str) -> WeightsSpec:
    """The :class:`WeightsSpec` registered as ``name``."""
    try:
        return _WEIGHTS[name]
    except KeyError:
        raise KeyError(f"no pretrained weights named {name!r}; available: {', '.join(list_models(True))}") from None


def create(name: str, **kwargs: Any) -> nn.Module:
    """Create architecture ``name`` with fresh weights (train mode, as PyTorch modules start).

    Args:
        name: one of :func:`list_models`.
        **kwargs: forwarded to the architecture (e.g. ``num_classes``, ``in_channels``).
    """
    if name not in _MODELS:
        hint = f" (did you mean advviz.models.load({name!r})?)" if name in _WEIGHTS else ""
        raise KeyError(f"unknown model {name!r}{hint}; available: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)


def load(name: str, weights: str | os.PathLike[str] | None = None, *,
         device: str | torch.device | None = None, **kwargs: Any) -> nn.Module:
    """Load a model with weights, in eval mode, taking ``[0, 1]`` input.

    Args:
        name: a pretrained entry (``"resnet20_cifar10"``) or an architecture (``"lenet5"``).
        weights: for an architecture, a weight file path or a pretrained entry name.
        device: where to put the model (default CPU).
        **kwargs: architecture keyword arguments (override the entry's).

    Raises:
        KeyError: unknown name.
        CheckpointError: missing, corrupt or mismatching weights (the message says what to do).
    """
    spec: WeightsSpec | None = None
    path: Path | None = None
    if name in _WEIGHTS:
        if weights is not None:
            raise ValueError(f"{name!r} already names its weights; pass weights= only with an architecture name")
        spec = _WEIGHTS[name]
    elif name in _MODELS:
        if weights is None:
            raise ValueError(f"load({name!r}) needs weights=: a file path or one of "
                             f"{[w for w, s in _WEIGHTS.items() if s.arch == name] or list_models(True)}; "
                             f"use create({name!r}) for a fresh model")
        if str(weights) in _WEIGHTS:
            spec = _WEIGHTS[str(weights)]
            if spec.arch != name:
                raise ValueError(f"weights {spec.name!r} are for {spec.arch!r}, not {name!r}")
        else:
            path = Path(weights)
    else:
        raise KeyError(f"unknown model {name!r}; architectures: {', '.join(list_models())}; "
                       f"pretrained: {', '.join(list_models(True))}")
    arch = spec.arch if spec is not None else name
    arch_kwargs = {**(spec.arch_kwargs if spec is not None else {}), **kwargs}
    model = create(arch, **arch_kwargs)
    if spec is not None:
        from advviz import artifacts

        path, _ = artifacts.resolve(spec.name)
    assert path is not None
    state = load_state_file(path, expected_sha256=spec.sha256 if spec is not None else None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit architecture {arch!r}: {exc}") from exc
    model.eval()
    if device is not None:
        model.to(device)
    return model


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_state_file(path: str | os.PathLike[str], *, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a PyTorch checkpoint, safely.

    PyTorch files are read with ``weights_only=True``; a ``{"state_dict": ...}`` wrapper and a
    ``module.`` prefix (``DataParallel``) are removed.

    Raises:
        CheckpointError: missing file, sha256 mismatch, or unreadable/corrupt content.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    if expected_sha256 is not None and _sha256(path) != expected_sha256:
        raise CheckpointError(f"{path} is corrupt (sha256 differs from the published {expected_sha256[:12]}…); "
                              "delete it and download it again")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zips, pickles with code, garbage bytes ...
        raise CheckpointError(f"cannot read {path} as weights ({type(exc).__name__}: {exc}); the file is corrupt "
                              "or not a weight file; delete it and download or retrain it") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def save_weights(model: nn.Module, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None,
                 half: bool = False) -> Path:
    """Save ``model.state_dict()`` as safetensors (atomically), with string metadata.

    ``half=True`` stores floating-point tensors as float16 (half the size, for weights that ship
    with advviz); ``load_state_dict`` casts them back to the model's dtype.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


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
    from advviz.models.highres import HighResResNet

    return HighResResNet(depth=8, **kw)


register_model("highres_resnet8")(_highres_resnet8)
register_weights(WeightsSpec(
    name="highres_resnet8_cifar10", arch="highres_resnet8", filename="highres_resnet8_cifar10.safetensors",
    dataset="cifar10", input_size=(3, 64, 64),
    description=("HighResResNet-8 on 64x64 (2x bilinear) CIFAR-10, trained by advviz on first use "
                 "(advviz.artifacts.recipes.HIGHRES_CIFAR10: 1 epoch SGD on 20,000 images); 44.8% top-1, 92.4% top-5 on the JPEG CIFAR-10 test split"),
))
register_weights(WeightsSpec(
    name="highres_resnet8_digits", arch="highres_resnet8", filename="highres_resnet8_digits.safetensors",
    dataset="digits", arch_kwargs={"in_channels": 1, "mean": (0.5,), "std": (0.5,)},
    input_size=(1, 64, 64),
    description=("HighResResNet-8 on 64x64 (bilinear) digits, the two-stream detector's offline high stream, "
                 "trained by advviz on first use (advviz.artifacts.recipes.HIGHRES_DIGITS)"),
))
