"""torchvision's ImageNet networks as artefacts: downloaded (or found) through the store like every
other network, never through a side path.

The files keep torchvision's names, whose 8 hex digits are the start of the file's sha256 (checked
on download and on load). The store finds them in ``$ADVVIZ_WEIGHTS``, advviz's cache, or torch's
own hub cache (``<torch hub dir>/checkpoints``, where torchvision keeps what it downloaded), and
downloads them into advviz's cache otherwise (not under ``$ADVVIZ_OFFLINE``).

* ``vgg16_imagenet``: TSGAN's content network (``relu3_3``);
* ``vgg19_imagenet``: the cGAN purifier's perceptual network;
* ``inception_v3_imagenet``: FID's features and the two-stream detector's high-resolution stream
  (Google's weights: built with ``transform_input=False``, fed ``(x - 0.5) / 0.5``);
* ``resnet50_imagenet``, ``resnet152_imagenet``: the two-stream paper's other high streams.
"""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

from advviz.artifacts import ArtifactSpec, register

__all__ = ["HUB", "hub_name"]

_URL = "https://download.pytorch.org/models/"


def _vgg16() -> nn.Module:
    return torchvision.models.vgg16(weights=None)


def _vgg19() -> nn.Module:
    return torchvision.models.vgg19(weights=None)


def _inception_v3() -> nn.Module:
    return torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)


def _resnet50() -> nn.Module:
    return torchvision.models.resnet50(weights=None)


def _resnet152() -> nn.Module:
    return torchvision.models.resnet152(weights=None)


#: artefact name -> (architecture factory, torchvision's file name, what it is used for)
HUB: dict[str, tuple[Callable[[], nn.Module], str, str]] = {
    "vgg16_imagenet": (_vgg16, "vgg16-397923af.pth", "TSGAN's content network, relu3_3"),
    "vgg19_imagenet": (_vgg19, "vgg19-dcbb9e9d.pth", "the cGAN purifier's perceptual network"),
    "inception_v3_imagenet": (_inception_v3, "inception_v3_google-0cc3c7bd.pth",
                              "FID features; the two-stream paper's high-resolution stream"),
    "resnet50_imagenet": (_resnet50, "resnet50-0676ba61.pth", "a two-stream high-resolution stream"),
    "resnet152_imagenet": (_resnet152, "resnet152-394f9c45.pth", "a two-stream high-resolution stream"),
}


def hub_name(arch: str) -> str:
    """The artefact of torchvision's ImageNet ``arch`` (``"inception_v3"`` -> ``"inception_v3_imagenet"``)."""
    name = f"{arch}_imagenet"
    if name not in HUB:
        raise KeyError(f"unknown ImageNet architecture {arch!r}; choose one of "
                       f"{', '.join(n.removesuffix('_imagenet') for n in HUB)}")
    return name


for _name, (_make, _file, _use) in HUB.items():
    register(ArtifactSpec(
        name=_name, make=_make, filename=_file, kind="feature network" if "vgg" in _name else "classifier",
        dataset="imagenet", url=_URL + _file, sha256=_file.rsplit("-", 1)[1].split(".")[0],
        description=f"torchvision's ImageNet {_name.removesuffix('_imagenet')} (IMAGENET1K_V1): {_use}"))
