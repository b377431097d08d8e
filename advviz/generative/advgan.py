"""AdvGAN (Xiao, Li, Zhu, He, Liu, Song: Generating Adversarial Examples with Adversarial Networks,
IJCAI 2018).

A generator ``G`` maps an image ``x`` to a perturbation; ``x_adv = clip(x + G(x), 0, 1)``. A
discriminator ``D`` tells ``x`` from ``x_adv`` (least-squares GAN loss, as the paper uses LSGAN);
the target model ``f`` guides ``G``. The generator minimises (paper eq. 4)

``L = L_adv + alpha * L_GAN + beta * L_hinge``

* ``L_adv`` (C&W-style, eqs. 5-6 of the paper's reference to Carlini & Wagner): targeted toward
  ``t``: ``max(max_{i != t} Z_i - Z_t, -kappa)``; untargeted: ``max(Z_y - max_{i != y} Z_i, -kappa)``
  on the logits ``Z = f(x_adv)``;
* ``L_GAN = mean (D(x_adv) - 1)^2``; the discriminator minimises ``(D(x) - 1)^2 + D(x_adv)^2``;
* ``L_hinge = mean_i max(0, ||G(x_i)||_2 - c)`` — the soft bound ``c`` on the L2 norm of the
  perturbation (paper eq. 3).

Choices (documented, recorded in results): besides the soft L2 hinge, the perturbation is also
hard-capped in L-infinity by ``eps * tanh(.)`` (``eps = 0.3`` for MNIST-like data, the MNIST
challenge budget the paper's MNIST experiments use; ``None`` for no cap); ``c = 3.0`` (L2 on
28x28 images), ``alpha = beta = 1``, ``kappa = 0``; Adam lr 1e-3, batch 128 (the paper's);
a small convolutional encoder-decoder generator with instance norm and a two-conv
discriminator. Targeted AdvGAN trains one generator per target class.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from advviz import train
from advviz._modules import model_guard, module_device
from advviz.generative.tsgan import Critic
from advviz.models import load_state_file
from advviz.train import TrainState, batches, epoch_callback, read_checkpoint

__all__ = [
    "ADVGAN_CONFIGS",
    "AdvGAN",
    "AdvGANConfig",
    "PerturbationGenerator",
    "cw_loss",
    "hinge_loss",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdvGANConfig:
    """AdvGAN hyper-parameters (see the module docstring)."""

    name: str
    eps: float | None = 0.3
    c: float = 3.0
    alpha: float = 1.0
    beta: float = 1.0
    kappa: float = 0.0
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 60
    width: int = 32


ADVGAN_CONFIGS: dict[str, AdvGANConfig] = {
    "mnist": AdvGANConfig(name="mnist", epochs=60),
    # Quick: digits train split, batch 64, 10 epochs (~220 generator steps).
    "digits_quick": AdvGANConfig(name="digits_quick", batch_size=64, epochs=10, width=16),
    "cifar10": AdvGANConfig(name="cifar10", eps=8 / 255, c=1.0, epochs=60),
    # Quick CIFAR-10 against ResNet-20: eps 8/255 (the usual CIFAR-10 L-inf budget, also the
    # FGSM/PGD budget of the reproduction), c = 1.0 (an 8/255 L-inf perturbation of a 3x32x32
    # image has L2 norm at most 1.74), batch 64, 5 epochs over the 4,000 images TSGAN's quick
    # run uses (315 generator steps), width 16. Measured on one CPU thread: 5 epochs over 2,000
    # images took 11 s per epoch and left the C&W loss still falling (13.5 -> 5.6) with 19.3%
    # targeted ASR (target 0, 450 test images, resnet20_cifar10); over the 4,000 images: 34.0%.
    "cifar10_quick": AdvGANConfig(name="cifar10_quick", eps=8 / 255, c=1.0, batch_size=64, epochs=5, width=16),
}


class PerturbationGenerator(nn.Module):
    """``x (B, C, H, W)`` in [0, 1] -> perturbation ``(B, C, H, W)``, bounded by ``eps`` in L-inf
    (``eps * tanh``) or by 1 when ``eps`` is ``None``. H and W must be even."""

    def __init__(self, in_channels: int = 1, *, width: int = 32, eps: float | None = 0.3) -> None:
        super().__init__()
        w = width
        self.eps = eps
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.InstanceNorm2d(w, affine=True), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.InstanceNorm2d(2 * w, affine=True), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.InstanceNorm2d(2 * w, affine=True), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.InstanceNorm2d(w, affine=True), nn.ReLU(),
            nn.Conv2d(w, in_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The perturbation ``G(x)``."""
        out = torch.tanh(self.net(x))
        return out * self.eps if self.eps is not None else out


def cw_loss(logits: torch.Tensor, labels: torch.Tensor, *, targeted: bool, kappa: float = 0.0) -> torch.Tensor:
    """Carlini-Wagner margin loss, batch mean.

    Targeted (``labels`` = targets): ``max(max_{i != t} Z_i - Z_t, -kappa)``; untargeted
    (``labels`` = true classes): ``max(Z_y - max_{i != y} Z_i, -kappa)``.
    """
    onehot = F.one_hot(labels, logits.shape[1]).bool()
    z_lab = logits[onehot]
    z_other = logits.masked_fill(onehot, float("-inf")).amax(dim=1)
    margin = z_other - z_lab if targeted else z_lab - z_other
    return margin.clamp(min=-kappa).mean()


def hinge_loss(perturbation: torch.Tensor, c: float) -> torch.Tensor:
    """``mean_i max(0, ||perturbation_i||_2 - c)`` (AdvGAN eq. 3)."""
    return (perturbation.flatten(1).norm(p=2, dim=1) - c).clamp(min=0).mean()


@dataclass
class AdvGANResult:
    """History (one dict per complete epoch), interrupted flag, epochs completed, seconds."""

    history: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False
    epochs_completed: int = 0
    seconds: float = 0.0


class AdvGAN(nn.Module):
    """An AdvGAN attacker for one target model (targeted toward ``target``, or untargeted).

    Args:
        config: an :class:`AdvGANConfig`.
        image_shape: ``(C, H, W)``.
        target: target class for a targeted attack, ``None`` for untargeted.
    """

    def __init__(self, config: AdvGANConfig, image_shape: tuple[int, int, int], *, target: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.image_shape = tuple(image_shape)
        self.target = target
        self.generator = PerturbationGenerator(image_shape[0], width=config.width, eps=config.eps)
        self.discriminator = Critic(self.image_shape, width=config.width)  # same network as TSGAN's critic
        self.epochs_done = 0
        self.history: list[dict[str, float]] = []
        self.eval()

    @torch.no_grad()
    def attack(self, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
        """``x_adv = clip(x + G(x), 0, 1)`` for ``x`` ``(B, C, H, W)`` in [0, 1] (detached, x's device)."""
        dev = module_device(self)
        with model_guard(self.generator, freeze=False):
            out = torch.cat([(xb.to(dev) + self.generator(xb.to(dev))).clamp(0, 1)
                             for xb in x.split(batch_size)]) if x.shape[0] else x.clone()
        return out.to(x.device)

    def fit(self, x: torch.Tensor, y: torch.Tensor, target_model: nn.Module, *, epochs: int | None = None,
            device: str | torch.device | None = None, seed: int = 0, progress: bool = True,
            checkpoint: str | os.PathLike[str] | None = None,
            callback: Callable[[dict[str, float]], None] | None = None) -> AdvGANResult:
        """Train on images ``x`` ``(N, C, H, W)`` in [0, 1] with labels ``y`` ``(N,)``.

        A step of advviz's training engine (:func:`advviz.train.fit_steps`): one discriminator
        step, then one generator step per batch. The target model is frozen (eval mode) during
        training and restored afterwards. Ctrl-C keeps the last complete epoch; ``checkpoint``
        (a path stem: ``<stem>.safetensors`` and ``<stem>.json``, the engine's format) is written
        after every epoch and resumed from when it exists.

        Raises:
            ValueError: the checkpoint was written for another configuration or target.
        """
        cfg = self.config
        epochs = cfg.epochs if epochs is None else epochs
        found = read_checkpoint(checkpoint) if checkpoint is not None else None
        if found is not None:
            extra = found[1].get("extra", {})
            if extra.get("config") != json.loads(json.dumps(asdict(cfg))) or extra.get("target") != self.target:
                raise ValueError(f"checkpoint {checkpoint} has a different configuration or target")
        dev = torch.device(device) if device is not None else module_device(self)
        self.to(dev)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr)
        n = x.shape[0]
        bs = min(cfg.batch_size, n)

        def step(batch: tuple[torch.Tensor, torch.Tensor], _state: TrainState) -> dict[str, float]:
            xb, yb = batch[0].to(dev).float(), batch[1].to(dev)
            pert = self.generator(xb)
            x_adv = (xb + pert).clamp(0, 1)
            # discriminator (LSGAN)
            d_loss = ((self.discriminator(xb) - 1) ** 2).mean() + (self.discriminator(x_adv.detach()) ** 2).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # generator
            with model_guard(self.discriminator, eval=False):
                l_gan = ((self.discriminator(x_adv) - 1) ** 2).mean()
                logits = target_model(x_adv)
                if self.target is None:
                    l_adv = cw_loss(logits, yb, targeted=False, kappa=cfg.kappa)
                else:
                    l_adv = cw_loss(logits, torch.full_like(yb, self.target), targeted=True, kappa=cfg.kappa)
                l_hinge = hinge_loss(pert, cfg.c)
                loss = l_adv + cfg.alpha * l_gan + cfg.beta * l_hinge
                opt_g.zero_grad(set_to_none=True)
                loss.backward()
                opt_g.step()
            return {k: float(v.detach()) for k, v in (("d_loss", d_loss), ("g_gan", l_gan), ("g_adv", l_adv),
                                                      ("g_hinge", l_hinge), ("g_total", loss))}

        def done(record: dict[str, float]) -> None:
            self.epochs_done = int(record["epoch"])

        t_call = time.perf_counter()
        desc = f"AdvGAN ({'target ' + str(self.target) if self.target is not None else 'untargeted'})"
        with model_guard(target_model):
            res = train.fit_steps(self, step, lambda st: batches((x, y), bs, shuffle=True, generator=st.generator),
                            optimizers=[opt_g, opt_d], epochs=epochs, steps_per_epoch=-(-n // bs), seed=seed,
                            device=dev, checkpoint=checkpoint, run="advgan",
                            extra=lambda: {"config": asdict(cfg), "target": self.target,
                                           "image_shape": list(self.image_shape)},
                            start_epoch=self.epochs_done, history=self.history,
                            callbacks=epoch_callback(callback),
                            progress=progress, description=desc, leave=False, end_epoch=done)
        self.epochs_done = res.epochs_completed
        return AdvGANResult(history=self.history, interrupted=res.interrupted, epochs_completed=res.epochs_completed,
                            seconds=time.perf_counter() - t_call)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Weights and training state as safetensors."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        meta = {"config": json.dumps(asdict(self.config)), "image_shape": json.dumps(list(self.image_shape)),
                "target": json.dumps(self.target), "epochs_done": str(self.epochs_done),
                "history": json.dumps(self.history)}
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> AdvGAN:
        """Read a model written by :meth:`save`."""
        with safe_open(str(path), framework="pt") as fh:
            meta: dict[str, Any] = fh.metadata()
        gan = cls(AdvGANConfig(**json.loads(meta["config"])), tuple(json.loads(meta["image_shape"])),
                  target=json.loads(meta["target"]))
        gan.load_state_dict(load_state_file(path))
        gan.epochs_done = int(meta["epochs_done"])
        gan.history = json.loads(meta["history"])
        return gan.to(device).eval()
