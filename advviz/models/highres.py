"""High-resolution CIFAR-10 networks for the two-stream detector (paper 003), trained by advviz.

The two-stream paper pairs an ImageNet network at 299x299 (Inception-v3, the "high-resolution"
stream) with ResNet-32 at 32x32 (the "low-resolution" stream). Offline there are no ImageNet
weights, so advviz's default high-resolution stream is a CIFAR-10 classifier that looks at the
CIFAR image *upsampled 2x* (bilinear) to 64x64: :class:`HighResResNet`.

Architecture (``HighResResNet(depth=6n+2, scale=2)``): ``Normalize``; a 3x3 convolution with
``scale`` stride on the ``32*scale`` input (16 filters; the only layer that sees the upsampled
pixels at full resolution, so a perturbation crafted at 64x64 acts on it directly), BN, ReLU;
then the three CIFAR ResNet stages (option-A shortcuts, :class:`~advviz.models.resnet_cifar.BasicBlock`)
with 16, 32, 64 filters at 32, 16, 8 pixels; global average pooling; a linear layer. With
``depth=8`` (one block per stage) the recipe below trains on a 2-core CPU in minutes.

Recipe of the registered ``highres_resnet8_cifar10`` weights
(:data:`advviz.artifacts.recipes.HIGHRES_CIFAR10`, trained by :mod:`advviz.artifacts`): CIFAR-10 train
split (the JPEG copy in ``$ADVVIZ_DATA``), random crop + flip at 32x32, then bilinear upsampling
to 64x64; a seeded random subset of 20,000 images, one epoch of SGD
(Nesterov, momentum 0.9), lr 0.05 with cosine decay, weight decay 5e-4,
batch 64, seed 0. So short because a shared 2-core CPU managed about 2.5 s per batch of 128
here (5.5 minutes for the recipe); a longer recipe (more epochs, all images) gives a better stream. Measured on the 10,000 JPEG CIFAR-10 test images (2x bilinear upsampling):
44.8% top-1, 92.4% top-5 (ResNet-32, the low stream, scores 82.6% top-1 on them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advviz.models._base import Classifier, Normalize
from advviz.models.resnet_cifar import IMAGENET_MEAN, IMAGENET_STD, BasicBlock

__all__ = ["HighResResNet", "upsample"]

def upsample(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` images in [0, 1] to ``size`` (``align_corners=False``)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0.0, 1.0)


class HighResResNet(Classifier):
    """CIFAR ResNet-(6n+2) for ``(B, C, 32*scale, 32*scale)`` images in ``[0, 1]`` (upsampled CIFAR).

    Args:
        depth: ``6n + 2`` (8, 14, 20, ...).
        scale: upsampling factor of the input relative to 32x32 (the stem's stride).
        num_classes: number of classes.
        in_channels: input channels.
        mean: normalisation mean (default ImageNet's, as the zoo's CIFAR ResNets).
        std: normalisation std.
    """

    last_conv = "layer3"

    def __init__(self, depth: int = 8, scale: int = 2, num_classes: int = 10, in_channels: int = 3,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, ...); got {depth}")
        if scale < 1:
            raise ValueError(f"scale must be a positive integer; got {scale}")
        n = (depth - 2) // 6
        self.depth = depth
        self.scale = scale
        self.num_classes = num_classes
        self.input_size = (in_channels, 32 * scale, 32 * scale)
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=scale, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(*[BasicBlock(16, 16, 1) for _ in range(n)])
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), *[BasicBlock(32, 32, 1) for _ in range(n - 1)])
        self.layer3 = nn.Sequential(BasicBlock(32, 64, 2), *[BasicBlock(64, 64, 1) for _ in range(n - 1)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, 32s, 32s)`` in [0, 1] -> ``(B, 64, 8, 8)`` (output of ``layer3``)."""
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, 64, h, w)`` -> logits ``(B, num_classes)``."""
        return self.linear(self.pool(features).flatten(1))
