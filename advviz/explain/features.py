"""Feature maps by module name, with presets for the papers' figures.

* :func:`feature_maps` runs one forward pass with forward hooks on the named modules
  (:func:`~advviz.explain._capture.capture_layers`, the one hook capture of advviz) and
  returns ``{name: (B, K, h, w)}`` (detached copies); every hook is removed afterwards.
* Default layers (:func:`stage_layers`): the end of each stage of the zoo models
  (LeNet-5: ``relu1``, ``relu2``; CIFAR ResNets: ``relu``, ``layer1..3``; CIFAR VGGs: the last
  ReLU of each block; MobileNetV2: the stem and the last block of each width, ``features.18``
  last), ending with ``last_conv``. For other models: for each spatial resolution, the last
  leaf module that outputs it (for a plain sequential CNN these are the block ends).
* Presets (``preset=`` or the helpers):

  - ``"vgg16_blocks"`` (:data:`VGG16_BLOCKS`, :func:`vgg_block_layers`): VGG-16's five conv
    blocks after their ReLU (TSGAN paper, Fig. 1): ``features.relu1_2 .. relu5_3`` for the
    zoo's CIFAR VGG-16, ``features.3, 8, 15, 22, 29`` for torchvision's VGG-16;
  - ``"vgg19_layers"`` (:func:`vgg19_layers`): VGG-19's 36 feature layers (purifier paper,
    Fig. 5: conv, ReLU and pooling layers). torchvision's ``vgg19``: ``features.0 .. 35``
    (every layer of ``features`` but the final pooling). The zoo's CIFAR VGG-19 (with batch
    norm) has the same 16 convolutions and 16 ReLUs but, adapted to 32x32 inputs, pools after
    blocks 1, 2, 3 and 5 instead of 1, 2, 3, 4 (the last one is ``pool5`` in the head): its
    36 conv/ReLU/pool layers in execution order are ``conv1_1, relu1_1, conv1_2, relu1_2,
    pool1, ..., relu4_4, conv5_1, ..., relu5_4, pool5`` (batch-norm layers skipped; a conv
    entry is the convolution's output, before BN). Positions 0-26 correspond one to one with
    torchvision's; from position 27 on the CIFAR list is shifted by the moved pooling.
  - ``"stages"``: :func:`stage_layers`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import VGG

from advviz._checks import check_batch
from advviz._modules import check_model, model_guard
from advviz.explain._capture import capture_layers
from advviz.models.lenet import LeNet5
from advviz.models.mobilenet import CifarMobileNetV2
from advviz.models.resnet_cifar import CifarResNet
from advviz.models.vgg_cifar import VGG_CONFIGS, CifarVGG

__all__ = [
    "PRESETS",
    "VGG16_BLOCKS",
    "feature_maps",
    "preset_layers",
    "stage_layers",
    "vgg19_layers",
    "vgg_block_layers",
]

#: VGG-16's five conv blocks after ReLU (TSGAN paper, Fig. 1), for the zoo's CIFAR VGG-16
#: (``advviz.models.create("vgg16")``) and for torchvision's ImageNet ``vgg16``.
VGG16_BLOCKS: dict[str, tuple[str, ...]] = {
    "cifar": ("features.relu1_2", "features.relu2_2", "features.relu3_3", "features.relu4_3", "features.relu5_3"),
    "torchvision": ("features.3", "features.8", "features.15", "features.22", "features.29"),
}

PRESETS = ("stages", "vgg16_blocks", "vgg19_layers")


def _is_cifar_vgg(model: nn.Module) -> bool:
    return isinstance(model, CifarVGG)


def _is_torchvision_vgg(model: nn.Module) -> bool:
    return isinstance(model, VGG)


def _cifar_vgg_blocks(model: nn.Module) -> list[list[str]]:
    """Block -> its layer names (``conv, relu`` pairs then the pool) of a zoo CIFAR VGG."""
    blocks: list[list[str]] = []
    for b, widths in enumerate(VGG_CONFIGS[model.depth], start=1):
        names = []
        for i in range(1, len(widths) + 1):
            names += [f"features.conv{b}_{i}", f"features.relu{b}_{i}"]
        if b in (1, 2, 3):
            names.append(f"features.pool{b}")
        elif b == 5:
            names.append("pool5")
        blocks.append(names)
    return blocks


def vgg_block_layers(model: nn.Module) -> list[str]:
    """The last ReLU of each of VGG's five conv blocks (any depth; zoo CIFAR or torchvision VGG).

    For VGG-16 these are :data:`VGG16_BLOCKS` (``"cifar"`` or ``"torchvision"``).

    Raises:
        ValueError: ``model`` is not a VGG.
    """
    if _is_cifar_vgg(model):
        return [next(n for n in reversed(blk) if ".relu" in n) for blk in _cifar_vgg_blocks(model)]
    if _is_torchvision_vgg(model):
        feats = list(model.features)
        return [f"features.{i - 1}" for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)
                and i > 0 and isinstance(feats[i - 1], nn.ReLU)]
    raise ValueError(f"the VGG presets need a VGG (advviz.models.create('vgg16') or torchvision's vgg16), "
                     f"got {type(model).__name__}")


def vgg19_layers(model: nn.Module) -> list[str]:
    """VGG-19's 36 feature layers (purifier paper, Fig. 5); see the module docstring.

    Args:
        model: torchvision's ``vgg19`` (``features.0 .. features.35``) or the zoo's CIFAR VGG-19
            (its 16 conv, 16 ReLU and 4 pooling layers in execution order, batch norm skipped).

    Raises:
        ValueError: ``model`` is not a VGG-19.
    """
    if _is_cifar_vgg(model):
        if model.depth != 19:
            raise ValueError(f"vgg19_layers needs a VGG-19; this CIFAR VGG has depth {model.depth}")
        names = [n for blk in _cifar_vgg_blocks(model) for n in blk]
    elif _is_torchvision_vgg(model):
        feats = list(model.features)
        n_conv = sum(isinstance(m, nn.Conv2d) for m in feats)
        if n_conv != 16 or any(isinstance(m, nn.BatchNorm2d) for m in feats):
            raise ValueError(f"vgg19_layers needs torchvision's vgg19 (16 convolutions, no batch norm); "
                             f"this VGG has {n_conv} convolutions")
        names = [f"features.{i}" for i in range(len(feats) - 1)]  # all but the final pooling
    else:
        raise ValueError(f"vgg19_layers needs a VGG-19 (advviz.models.create('vgg19') or torchvision's vgg19), "
                         f"got {type(model).__name__}")
    assert len(names) == 36, names
    return names


def stage_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Sensible default layers: the end of each stage, ending with ``last_conv``.

    Args:
        model: a zoo model (known stage names) or any CNN.
        x: an example batch; needed only for models outside the zoo (the stage ends are found
            from one forward pass: per spatial resolution, the last leaf module producing it).
    """
    if isinstance(model, LeNet5):
        names = ["relu1", "relu2"]
    elif isinstance(model, CifarResNet):
        names = ["relu", "layer1", "layer2", "layer3"]
    elif _is_cifar_vgg(model) or _is_torchvision_vgg(model):
        names = vgg_block_layers(model)
    elif isinstance(model, CifarMobileNetV2):
        # stem, then the last inverted-residual block of each width (16, 24, 32, 64, 96, 160,
        # 320), then the 1x1 conv to 1280 (last_conv)
        names = ["features.0", "features.1", "features.3", "features.6", "features.10", "features.13",
                 "features.16", "features.17", "features.18"]
    else:
        if x is None:
            raise ValueError("default feature layers of a model outside the zoo need an example batch x")
        names = _resolution_stage_ends(model, x)
    last = getattr(model, "last_conv", None)
    if isinstance(last, str) and last and last not in names:
        names.append(last)
    return names


def _resolution_stage_ends(model: nn.Module, x: torch.Tensor) -> list[str]:
    leaves = {name: m for name, m in model.named_modules()
              if name and not list(m.children()) and type(m).__name__ != "Normalize"}
    with model_guard(model, freeze=False), torch.no_grad(), \
            capture_layers(model, leaves, clone=False, every_call=True) as cap:
        model(x[:1])
    order = [(name, tuple(out.shape[2:])) for name, out in cap.calls if out.ndim == 4]
    ends: list[str] = []
    for i, (name, size) in enumerate(order):
        if (i + 1 == len(order) or order[i + 1][1] != size) and name not in ends:
            ends.append(name)
    if not ends:
        raise ValueError("the model has no layer with a (B, K, h, w) output; pass layers= explicitly")
    return ends


def preset_layers(model: nn.Module, preset: str, x: torch.Tensor | None = None) -> list[str]:
    """The layer names of ``preset`` (one of :data:`PRESETS`) for ``model``.

    ``"vgg16_blocks"`` picks ``VGG16_BLOCKS["cifar"]`` or ``["torchvision"]`` by model type
    (and refuses a VGG of another depth); ``"vgg19_layers"`` is :func:`vgg19_layers`;
    ``"stages"`` is :func:`stage_layers`.
    """
    if preset == "stages":
        return stage_layers(model, x)
    if preset == "vgg16_blocks":
        names = vgg_block_layers(model)
        n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        if n_conv != 13:
            raise ValueError(f"the vgg16_blocks preset needs a VGG-16 (13 convolutions); this VGG has {n_conv}: "
                             "use vgg_block_layers(model) for the block ends of any VGG")
        return names
    if preset == "vgg19_layers":
        return vgg19_layers(model)
    raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")


def feature_maps(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str] | None = None, *,
                 preset: str | None = None, strict: bool = True) -> dict[str, torch.Tensor]:
    """Outputs of named layers for one forward pass of ``x``.

    The model runs in eval mode under ``torch.no_grad()``; its ``training`` flags are restored
    and every hook is removed afterwards, also on errors. A module that runs
    more than once in the pass reports its last call.

    Args:
        model: any ``nn.Module`` (zoo models have known stage names).
        x: images ``(B, C, H, W)`` (in ``[0, 1]`` for zoo models).
        layers: module names (``"features.relu3_3"``, ``"layer2"``) or one name; default: the
            ``preset``, or :func:`stage_layers` when no preset is given.
        preset: ``"stages"``, ``"vgg16_blocks"`` or ``"vgg19_layers"`` (see the module
            docstring); not together with ``layers``.
        strict: refuse a layer that did not run or did not output a tensor (default); with
            ``strict=False`` such layers are left out of the result.

    Returns:
        ``{name: tensor}`` in the order of ``layers``; tensors are detached copies on ``x``'s
        device, ``(B, K, h, w)`` for convolutional layers (whatever the module outputs, e.g.
        ``(B, F)`` for a linear layer).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: an unknown layer name (with close matches), a layer that did not run
            (``strict``), or a bad ``preset``.
    """
    check_model(model)
    check_batch(x)
    if layers is not None and preset is not None:
        raise ValueError("pass either layers= or preset=, not both")
    if layers is None:
        names = preset_layers(model, preset or "stages", x)
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("no layers requested")
    # clone (the default): a later in-place op must not change a recorded map
    with model_guard(model, freeze=False), torch.no_grad(), capture_layers(model, names) as cap:
        model(x.detach())
    if strict and cap.missing:
        raise ValueError(f"layer(s) {cap.missing} did not produce a tensor in the forward pass")
    return cap.outputs
