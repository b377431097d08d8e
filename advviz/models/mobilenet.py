"""MobileNetV2 (Sandler et al. 2018) adapted to 32x32 inputs; the purifier paper's classifier.

torchvision's ``mobilenet_v2`` with two documented changes for CIFAR-sized images: the stem
convolution and the first block of the 24-channel stage use stride 1 instead of 2 (so the
network downsamples 8x, ending at 4x4 instead of 1x1 for 32x32 inputs), and every ReLU6 is
non in-place (hook-friendly). Everything else (inverted residuals, widths, dropout 0.2) is
torchvision's.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from advviz.models._base import Classifier, Normalize
from advviz.models.vgg_cifar import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["CifarMobileNetV2"]


class CifarMobileNetV2(Classifier):
    """MobileNetV2 for 32x32 images in ``[0, 1]``.

    Args:
        num_classes: number of classes.
        width_mult: torchvision's width multiplier.
        mean: normalisation mean (default CIFAR-10's).
        std: normalisation std.
    """

    last_conv = "features.18"

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0,
                 mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD) -> None:
        super().__init__()

        net = mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width_mult)
        net.features[0][0].stride = (1, 1)
        first_24 = net.features[2].conv[1][0]  # depthwise conv of the first 24-channel block
        first_24.stride = (1, 1)
        for m in net.modules():
            if isinstance(m, (nn.ReLU6, nn.ReLU)):
                m.inplace = False
        self.num_classes = num_classes
        self.input_size = (3, 32, 32)
        self.normalize = Normalize(mean, std)
        self.features = net.features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = net.classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 32, 32)`` in [0, 1] -> ``(B, 1280, 4, 4)``."""
        return self.features(self.normalize(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, 1280, h, w)`` -> logits ``(B, num_classes)``."""
        return self.classifier(self.avgpool(features).flatten(1))
