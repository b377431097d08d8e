"""GNR: a WGAN-GP that learns the distribution of adversarial noise (UDDN paper, paper 004, Sec. 2, eq. 3).

The real samples are noise images ``x_adv - x`` from a few (attacked, clean) pairs; the trained
generator turns Gaussian codes into new noise, added to other clean images to make more
training pairs for the denoiser (:func:`augment`).

* Generator (:class:`NoiseGenerator`, Fig. 1): a linear map of ``z`` to a ``4x4`` map, then
  three DeconvUnits (5x5 transposed convolution with stride 2, batch norm, ReLU, followed by
  ``convs_per_unit`` 3x3 convolution blocks with batch norm and ReLU, bridged by a residual
  connection: "the connection ... prevents gradient dispersion"), widths ``(256, 128, 64)``
  as in the paper, then a 1x1 convolution. advviz bounds the output to ``[-eps, eps]`` with
  ``eps * tanh`` (the noise of an L-infinity attack lives there; the paper does not say).
* Critic (:class:`NoiseCritic`): three ConvUnits (4x4 convolution, stride 2, LeakyReLU 0.2)
  of widths 64, 128, 256, then a linear layer to one score. The paper puts batch norm in the
  ConvUnits; advviz leaves it out because the gradient penalty is a per-sample quantity that
  batch norm (mixing samples) makes ill-defined (Gulrajani et al. 2017, Sec. 4, advise the same).
* Loss (eq. 3, :func:`critic_loss`): ``E[F(fake)] - E[F(real)] + lambda * E[(||grad F(x_bar)||_2 - 1)^2]``
  with ``x_bar`` uniform on the segments between real and fake samples, ``lambda = 10``; the
  generator minimises ``-E[F(fake)]``. Adam (1e-4, betas (0.5, 0.9)), 5 critic steps per
  generator step (Gulrajani et al.'s defaults; the paper gives none).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from advviz import train
from advviz._modules import model_guard, module_device
from advviz.generative.wgan import gradient_penalty
from advviz.train import TrainState, default_device

__all__ = [
    "NoiseCritic",
    "NoiseGenerator",
    "augment",
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "sample_noise",
    "seeded_networks",
    "train_gnr",
]

log = logging.getLogger(__name__)


class _DeconvUnit(nn.Module):
    def __init__(self, c_in: int, c_out: int, convs: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 5, 2, 2, output_padding=1, bias=False),
                                nn.BatchNorm2d(c_out), nn.ReLU())
        self.convs = nn.Sequential(*[m for _ in range(convs) for m in
                                     (nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        return h + self.convs(h) if len(self.convs) else h


class NoiseGenerator(nn.Module):
    """``z (B, z_dim) -> noise (B, C, size, size)`` in ``[-eps, eps]`` (``size = 8 * base`` by default).

    Args:
        channels: image channels.
        z_dim: code size.
        widths: the three DeconvUnits' widths (paper: 256, 128, 64).
        base: side of the first feature map (4: 32x32 output).
        convs_per_unit: convolution blocks after each deconvolution (paper: 3).
        eps: output bound.
        size: output side when it is not ``8 * base`` (e.g. 28 for digits): the centre
            ``size x size`` crop of the ``8 * base`` map; ``None``: ``8 * base``.
    """

    def __init__(self, channels: int = 3, *, z_dim: int = 64, widths: Sequence[int] = (256, 128, 64), base: int = 4,
                 convs_per_unit: int = 3, eps: float = 8 / 255, size: int | None = None) -> None:
        super().__init__()
        if size is not None and not 0 < size <= 8 * base:
            raise ValueError(f"size must be in [1, {8 * base}] for base={base}, got {size}")
        self.z_dim, self.eps, self.base = z_dim, float(eps), base
        self.size = 8 * base if size is None else int(size)
        self.fc = nn.Sequential(nn.Linear(z_dim, 2 * widths[0] * base * base, bias=False),
                                nn.BatchNorm1d(2 * widths[0] * base * base), nn.ReLU())
        units, c = [], 2 * widths[0]
        for w in widths:
            units.append(_DeconvUnit(c, w, convs_per_unit))
            c = w
        self.units = nn.Sequential(*units)
        self.out = nn.Conv2d(c, channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], -1, self.base, self.base)
        out = self.out(self.units(h))
        top = (out.shape[-1] - self.size) // 2
        return self.eps * torch.tanh(out[..., top:top + self.size, top:top + self.size])


class NoiseCritic(nn.Module):
    """WGAN critic ``F``: noise ``(B, C, H, W)`` -> score ``(B,)`` (three ConvUnits and a linear layer)."""

    def __init__(self, channels: int = 3, *, widths: Sequence[int] = (64, 128, 256), size: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 4, 2, 1), nn.LeakyReLU(0.2)]
            c = w
        self.convs = nn.Sequential(*layers)
        side = size // 2 ** len(widths)
        self.fc = nn.Linear(c * side * side, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x).flatten(1)).squeeze(1)


def seeded_networks(channels: int = 3, *, seed: int = 0, widths: Sequence[int] = (256, 128, 64),
                    convs_per_unit: int = 3, critic_widths: Sequence[int] = (64, 128, 256), z_dim: int = 64,
                    eps: float = 8 / 255) -> tuple[NoiseGenerator, NoiseCritic]:
    """A :class:`NoiseGenerator` and a :class:`NoiseCritic` initialised from ``seed`` (the global
    random state is left as it was), so that :func:`train_gnr` with the same ``seed`` is repeatable."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = NoiseGenerator(channels, z_dim=z_dim, widths=widths, convs_per_unit=convs_per_unit, eps=eps)
        critic = NoiseCritic(channels, widths=critic_widths)
    return gen, critic


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, lam: float = 10.0,
                t: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3: ``E[F(fake)] - E[F(real)] + lam * gradient_penalty``."""
    return critic(fake.detach()).mean() - critic(real).mean() + lam * gradient_penalty(critic, real, fake, t=t)


def generator_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """The generator's WGAN loss ``-E[F(fake)]``."""
    return -critic(fake).mean()


def train_gnr(gen: NoiseGenerator, critic: NoiseCritic, noise: torch.Tensor, *, steps: int = 1000,
              batch_size: int = 64, n_critic: int = 5, lam: float = 10.0, lr: float = 1e-4, eps: float | None = None,
              device: str | torch.device | None = None, seed: int = 0, progress: bool = True,
              log_every: int = 50) -> list[dict[str, float]]:
    """Train the noise WGAN-GP in place on real noise samples ``noise`` ``(N, C, H, W)``.

    A step of advviz's training engine (:func:`advviz.train.fit_steps`) whose "epoch" is a block
    of ``log_every`` generator steps (each after ``n_critic`` critic steps): a tqdm.auto bar
    counts generator steps; block ``k`` draws its batches, codes and interpolation weights from
    the seed ``seed * 100_003 + k``; Ctrl-C keeps the weights of the last complete block (the
    history's last entry). ``eps`` overrides the generator's output bound (e.g. the attack's
    budget).

    Returns:
        History: one dict per ``log_every`` steps (``step``, ``critic``, ``gen``, ``wasserstein``
        = ``E[F(real)] - E[F(fake)]``, ``seconds`` since the start).
    """
    dev = torch.device(device) if device is not None else default_device()
    if eps is not None:
        gen.eps = float(eps)
    both = nn.ModuleDict({"gen": gen, "critic": critic}).to(dev)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.9))
    opt_c = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    n = noise.shape[0]

    def step(_i: int, state: TrainState) -> dict[str, float]:
        g = state.generator
        for _ in range(n_critic):
            real = noise[torch.randint(0, n, (batch_size,), generator=g)].to(dev)
            z = torch.randn(batch_size, gen.z_dim, generator=g).to(dev)
            with torch.no_grad():
                fake = gen(z)
            t = torch.rand(batch_size, generator=g)
            c_loss = critic_loss(critic, real, fake, lam=lam, t=t)
            opt_c.zero_grad(set_to_none=True)
            c_loss.backward()
            opt_c.step()
        z = torch.randn(batch_size, gen.z_dim, generator=g).to(dev)
        g_loss = generator_loss(critic, gen(z))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        with torch.no_grad():
            w = float(critic(real).mean() - critic(fake).mean())
        return {"critic": float(c_loss.detach()), "gen": float(g_loss.detach()), "wasserstein": w}

    def block(k: int) -> int:
        return min(log_every, steps - k * log_every)

    res = train.fit_steps(both, step, lambda st: range(block(st.epoch - 1)), optimizers=[opt_g, opt_c],
                    epochs=math.ceil(steps / log_every), steps_per_epoch=block, seed=seed, device=dev,
                    progress=progress, description="gnr (wgan-gp)", show=("wasserstein",))
    history, seconds = [], 0.0
    for rec in res.history:
        seconds += rec["seconds"]
        history.append({"step": min(rec["epoch"] * log_every, steps),
                        **{k: rec[k] for k in ("critic", "gen", "wasserstein")}, "seconds": seconds})
    return history


@torch.no_grad()
def sample_noise(gen: NoiseGenerator, n: int, *, seed: int = 0, device: str | torch.device | None = None) -> torch.Tensor:
    """``n`` noise samples ``(n, C, H, W)`` in ``[-eps, eps]`` from the (eval-mode) generator, seeded."""
    dev = torch.device(device) if device is not None else module_device(gen)
    z = torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
    with model_guard(gen, freeze=False):
        return gen(z)


@torch.no_grad()
def augment(gen: NoiseGenerator, x: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """New adversarial-like images ``clip(x + noise, 0, 1)`` for clean ``x`` ``(B, C, H, W)`` (GNR's use)."""
    noise = sample_noise(gen, x.shape[0], seed=seed, device=x.device)
    if noise.shape[1:] != x.shape[1:]:
        raise ValueError(f"the generator makes noise of shape {tuple(noise.shape[1:])}, images are {tuple(x.shape[1:])}")
    return (x + noise.to(x.dtype)).clamp(0, 1)
