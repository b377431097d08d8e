"""CIFAR ResNets (He et al. 2016, section 4.2) with option-A shortcuts.

ResNet-(6n+2): a 3x3 conv with 16 filters, then three stages of n basic blocks with 16, 32
and 64 filters (feature maps 32, 16, 8), global average pooling and a linear layer. Where a
block changes the shape, the shortcut is parameter-free (option A): subsample by 2 and pad
the new channels with zeros. Module and parameter names match akamaster/pytorch_resnet_cifar10
so its published checkpoints load directly (after stripping ``module.``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advviz.models._base import Classifier, Normalize

__all__ = ["CifarResNet", "BasicBlock", "IMAGENET_MEAN", "IMAGENET_STD"]

# The akamaster checkpoints were trained with these (ImageNet) statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PadShortcut(nn.Module):
    """Option-A shortcut: stride-2 subsampling and zero channel padding (no parameters)."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection; output ``relu(bn2(conv2(...)) + x)``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = PadShortcut(planes) if (stride != 1 or in_planes != planes) else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(Classifier):
    """ResNet-(6n+2) for 32x32 images in ``[0, 1]``.

    Args:
        depth: 20, 32, 44, 56 or 110 (``depth = 6n + 2``).
        num_classes: number of classes.
        in_channels: input channels.
        mean: normalisation mean (default: ImageNet's, as the published checkpoints use).
        std: normalisation std.
    """

    last_conv = "layer3"

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110); got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.num_classes = num_classes
        self.input_size = (in_channels, 32, 32)
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, 32, 32)`` in [0, 1] -> ``(B, 64, 8, 8)`` (output of ``layer3``)."""
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, 64, h, w)`` -> logits ``(B, num_classes)``."""
        return self.linear(self.pool(features).flatten(1))
