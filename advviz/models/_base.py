"""Base class shared by every zoo model.

A zoo model takes images in ``[0, 1]`` of shape ``(B, C, H, W)``; its first layer is a
:class:`Normalize` with the mean/std it was trained with. It exposes

* ``forward_features(x) -> (B, K, h, w)``: normalisation and the convolutional trunk;
* ``forward_head(features) -> (B, num_classes)``: pooling and the classifier (logits);
* ``last_conv``: the module name (``model.get_submodule(model.last_conv)``) of the output of
  the last convolutional stage, Grad-CAM's default layer;
* ``input_size``: the ``(C, H, W)`` the model was built for; ``num_classes``; ``classes``
  (names, when known).

Activations are never in-place, so forward hooks (captum, feature maps) see real tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize", "Classifier"]


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; also checks that the input is ``(B, C, H, W)``.

    The mean/std are non-persistent buffers: they follow ``.to(device)`` but do not appear
    in ``state_dict`` (so published checkpoints load unchanged).

    Args:
        mean: per-channel mean, length C.
        std: per-channel standard deviation, length C.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError("mean and std must have the same length")
        self.in_channels = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            kind = "RGB" if self.in_channels == 3 else "grayscale" if self.in_channels == 1 else ""
            raise ValueError(
                f"this model expects {kind} images of shape (B, {self.in_channels}, H, W) in [0, 1]; "
                f"got shape {tuple(x.shape)}. Add a batch dimension with x.unsqueeze(0), or convert "
                f"channels with advviz.data.load_image(..., channels={self.in_channels}).")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Classifier(nn.Module):
    """Base class of the zoo: ``forward(x) = forward_head(forward_features(x))``."""

    last_conv: str = ""
    num_classes: int = 10
    input_size: tuple[int, int, int] = (3, 32, 32)
    classes: list[str] | None = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for images ``x`` ``(B, C, H, W)`` in ``[0, 1]``."""
        return self.forward_head(self.forward_features(x))

    def last_conv_module(self) -> nn.Module:
        """The module named by :attr:`last_conv`."""
        return self.get_submodule(self.last_conv)
