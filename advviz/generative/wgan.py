"""The WGAN-GP gradient penalty (Gulrajani et al. 2017), shared by TSGAN's critic and GNR's."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["gradient_penalty"]


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *,
                     t: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's penalty ``mean_i (||grad_x D(x_bar_i)||_2 - 1)^2`` (Gulrajani et al. 2017, Algorithm 1).

    ``x_bar = t * real + (1 - t) * fake`` with one weight ``t_i`` per sample. Used by TSGAN's
    critic (Algorithm 1 lines 6-8 of the TSGAN paper) and GNR's (UDDN paper, eq. 3).

    Args:
        critic: ``D``, mapping ``(B, ...)`` to scores ``(B,)``.
        real: real samples ``(B, ...)``.
        fake: generated samples ``(B, ...)`` (detached here: only the interpolate's gradient is taken).
        t: interpolation weights ``(B,)`` (or any shape with ``B`` elements) in ``[0, 1]``;
            default ``U(0, 1)`` drawn from ``generator`` (on its device), else on ``real``'s device.
        generator: random generator for ``t``.

    Returns:
        Scalar tensor on ``real``'s device, differentiable with respect to the critic's parameters.
    """
    b = real.shape[0]
    if t is None:
        t = torch.rand(b, generator=generator, device=generator.device if generator is not None else real.device)
    t = t.to(device=real.device, dtype=real.dtype).view(b, *([1] * (real.dim() - 1)))
    x_bar = (t * real.detach() + (1 - t) * fake.detach()).requires_grad_(True)
    scores = critic(x_bar)
    (grad,) = torch.autograd.grad(scores.sum(), x_bar, create_graph=True)
    return ((grad.flatten(1).norm(p=2, dim=1) - 1.0) ** 2).mean()
