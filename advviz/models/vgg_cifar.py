"""VGG-11/13/16/19 with batch norm (Simonyan & Zisserman 2015), adapted to 32x32 inputs.

The convolutional configuration is the paper's (configurations A, B, D, E), each conv
followed by BatchNorm and a (non in-place) ReLU. Layers are named like the paper's blocks:
``conv{b}_{i}``, ``bn{b}_{i}``, ``relu{b}_{i}`` and ``pool{b}`` inside ``features``
(e.g. ``features.relu3_3`` is VGG-16's third block output, the TSGAN content layer).

Adaptation for CIFAR (documented choice): on 32x32 inputs five 2x2 poolings would leave block
5 at 2x2, too coarse for Grad-CAM (the CFR paper computes Grad-CAM on VGG's last conv layer).
So the pooling after block 4 is omitted: blocks run at 32, 16, 8, 4, 4 and the last conv
layer keeps a 4x4 map; then max pooling to 2x2, global average pooling and one linear layer
(512 -> classes) replace the ImageNet 4096-wide classifier, as is usual for CIFAR VGGs.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from advviz.models._base import Classifier, Normalize

__all__ = ["CifarVGG", "VGG_CONFIGS", "CIFAR10_MEAN", "CIFAR10_STD"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Channels per block (paper configurations A, B, D, E).
VGG_CONFIGS: dict[int, list[list[int]]] = {
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


class CifarVGG(Classifier):
    """VGG-``depth`` with batch norm for 32x32 images in ``[0, 1]``.

    Args:
        depth: 11, 13, 16 or 19.
        num_classes: number of classes.
        in_channels: input channels.
        mean: normalisation mean (default CIFAR-10's).
        std: normalisation std.
        width: channel multiplier (1.0: the paper's widths; 0.25: a "slim" VGG with every
            layer a quarter as wide, the same depth and layer names).
    """

    def __init__(self, depth: int = 16, num_classes: int = 10, in_channels: int = 3,
                 mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD,
                 width: float = 1.0) -> None:
        super().__init__()
        if depth not in VGG_CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}; got {depth}")
        if not 0 < width <= 4:
            raise ValueError(f"width must be in (0, 4], got {width}")
        self.depth, self.width = depth, width
        self.num_classes = num_classes
        self.input_size = (in_channels, 32, 32)
        self.normalize = Normalize(mean, std)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for b, widths in enumerate(VGG_CONFIGS[depth], start=1):
            for i, c_full in enumerate(widths, start=1):
                c_out = max(1, round(c_full * width))
                layers[f"conv{b}_{i}"] = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
                layers[f"bn{b}_{i}"] = nn.BatchNorm2d(c_out)
                layers[f"relu{b}_{i}"] = nn.ReLU()
                c_in = c_out
            if b != 4:
                layers[f"pool{b}"] = nn.MaxPool2d(2)
        last_pool = layers.popitem(last=True)  # pool5 belongs to the head
        last_block = len(VGG_CONFIGS[depth][-1])
        self.features = nn.Sequential(layers)
        self.last_conv = f"features.relu5_{last_block}"
        self.pool5 = last_pool[1]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, 32, 32)`` in [0, 1] -> last conv activation ``(B, 512 * width, 4, 4)``."""
        return self.features(self.normalize(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, 512 * width, 4, 4)`` -> logits ``(B, num_classes)``."""
        return self.classifier(self.avgpool(self.pool5(features)).flatten(1))
