"""LeNet-5 as in the TSGAN paper's Table 5 (paper 000).

Table 5: input 1x28x28; Layer1 conv -> 32x28x28; Layer2 conv -> "34x14x14"; FC 200; FC 10.
"34" is read as a typo for **64** (channel counts double from one conv to the next, as in
every LeNet-style MNIST network of that lineage). Both convolutions are 5x5 with padding 2
followed by ReLU and 2x2 max pooling, so the feature maps are 32x28x28 -> 32x14x14 ->
64x14x14 -> 64x7x7, then FC 3136 -> 200 -> 10.
"""

from __future__ import annotations

import torch
from torch import nn

from advviz.models._base import Classifier, Normalize

__all__ = ["LeNet5"]


class LeNet5(Classifier):
    """LeNet-5 (TSGAN paper, Table 5) for ``(B, in_channels, 28, 28)`` images in ``[0, 1]``.

    Args:
        num_classes: number of output classes.
        in_channels: image channels (1 for MNIST/digits).
        mean: normalisation mean per channel (default: MNIST's 0.1307).
        std: normalisation std per channel (default: MNIST's 0.3081).
    """

    last_conv = "relu2"

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.input_size = (in_channels, 28, 28)
        self.normalize = Normalize(mean or (0.1307,) * in_channels, std or (0.3081,) * in_channels)
        self.conv1 = nn.Conv2d(in_channels, 32, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 7 * 7, 200)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(200, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, 28, 28)`` in [0, 1] -> last conv activation ``(B, 64, 14, 14)``."""
        x = self.pool1(self.relu1(self.conv1(self.normalize(x))))
        return self.relu2(self.conv2(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, 64, 14, 14)`` -> logits ``(B, num_classes)``."""
        x = self.pool2(features).flatten(1)
        return self.fc2(self.relu3(self.fc1(x)))
