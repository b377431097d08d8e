"""The slim VGG-16: a quarter-width VGG-16 (configuration D) that trains on a CPU.

TSGAN's content network (``features.relu3_3``) and the digits perceptual network when no
ImageNet VGG-16 is at hand; trained by advviz (the artefacts ``vgg16slim_digits`` and
``vgg16slim_cifar10`` of :mod:`advviz.zoo`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from advviz.models._base import Normalize

__all__ = ["SlimVGG16"]


class SlimVGG16(nn.Module):
    """VGG-16 (configuration D: 13 convs with BatchNorm and ReLU, in 5 blocks) at a quarter width.

    Widths 16, 32, 64, 128, 128; layer names as the zoo's VGG (``features.relu3_3`` is the TSGAN
    content layer). For ``(B, in_channels, 32, 32)`` in [0, 1]; ``forward`` pads 28x28 input to
    32x32 (2 pixels of 0 on each side). The classifier is global average pooling and one linear
    layer. The content network of the offline fallback for grayscale 28x28 data and, with
    ``in_channels=3``, for CIFAR-10.
    """

    WIDTHS = ((16, 16), (32, 32), (64, 64, 64), (128, 128, 128), (128, 128, 128))

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10, mean: float = 0.5, std: float = 0.5) -> None:
        super().__init__()
        self.normalize = Normalize((mean,) * in_channels, (std,) * in_channels)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c = in_channels
        for b, widths in enumerate(self.WIDTHS, start=1):
            for i, w in enumerate(widths, start=1):
                layers[f"conv{b}_{i}"] = nn.Conv2d(c, w, 3, padding=1, bias=False)
                layers[f"bn{b}_{i}"] = nn.BatchNorm2d(w)
                layers[f"relu{b}_{i}"] = nn.ReLU()
                c = w
            if b < 5:
                layers[f"pool{b}"] = nn.MaxPool2d(2)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(c, num_classes)

    @staticmethod
    def pad(x: torch.Tensor) -> torch.Tensor:
        """28x28 -> 32x32 (zero padding); other sizes unchanged."""
        return F.pad(x, (2, 2, 2, 2)) if x.shape[-1] == 28 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``(B, C, 28|32, 28|32)`` images in [0, 1]."""
        f = self.features(self.normalize(self.pad(x)))
        return self.classifier(f.mean(dim=(2, 3)))
