"""cGAN purifier: pix2pix with a VGG-19 perceptual loss (purifier paper, paper 001), and plain pix2pix.

The purifier paper puts a conditional GAN in front of an unchanged classifier: the generator
``G`` (a pix2pix U-Net) maps an attacked image ``x`` to a clean estimate ``G(x)``; a conditional
PatchGAN discriminator ``D`` judges ``(x, y)`` (real) against ``(x, G(x))`` (generated). The
generator minimises (paper's final objective)::

    L_cGAN(G, D) + lambda1 * L_L1(G) + lambda2 * L_perceptual(G),   lambda1 = 100, lambda2 = 1
    L_perceptual(G) = E[ sum_k a_k || V_k(y) - V_k(G(x)) ||_1 ]

with ``V_k`` the VGG-19 feature maps of every layer but the top one. Plain pix2pix (Isola et
al. 2017), the paper's baseline, is the same without the perceptual term.

Choices the paper leaves open, for 32x32 inputs (CIFAR-10):

* **Generator** (:class:`UNetGenerator`): pix2pix's U-Net scaled to 32x32: ``depth=5``
  stride-2 4x4 convolutions (32 -> 16 -> 8 -> 4 -> 2 -> 1, widths ``ngf * (1, 2, 4, 8, 8)``,
  LeakyReLU 0.2, batch norm except on the outermost and innermost layers) and mirrored 4x4
  transposed convolutions whose input is the concatenation of the previous decoder output and
  the encoder output of the same scale (pix2pix concatenates; the paper's text says "added").
  Pixels are mapped to ``[-1, 1]`` inside; the Tanh output is mapped back to ``[0, 1]``.
  Dropout (pix2pix's noise source) is left out: a purifier should be deterministic. Inputs
  whose sides are not multiples of ``2**depth`` are reflect-padded and cropped back.
* **Discriminator** (:class:`PatchDiscriminator`): pix2pix's PatchGAN (4x4 convolutions,
  ``C64-C128-...``, stride 2 then 1, LeakyReLU 0.2, batch norm but not on the first layer) on
  the 6-channel concatenation ``(x, y)``. pix2pix's 70x70 PatchGAN has ``n_layers=3``
  (receptive field 70 pixels, 27% of a 256-pixel side). For 32x32 inputs advviz uses
  ``n_layers=1``: receptive field **16x16 pixels** (half a side; pix2pix's "16x16 PatchGAN"),
  giving a 14x14 grid of patch decisions; ``n_layers=3`` (70) would see the whole image and
  degenerate into an image-level discriminator. :func:`receptive_field` computes it.
* **cGAN loss**: pix2pix's vanilla (binary cross-entropy) loss, the discriminator's loss halved.
* **Perceptual loss**: ``a_k = 1`` for every layer, each ``|| . ||_1`` the *mean* absolute
  difference of that layer's feature map (as pix2pix's L1 term is a mean); layers
  ``advviz.explain.vgg19_layers(net)[:-1]`` (35 of the 36 conv/ReLU/pool layers of the
  paper's Fig. 5; the top one left out). Measured with the slim CIFAR VGG-19 on 64 FGSM pairs:
  the term is 4.6 at the start, beside 3.1 for ``100 * L1``; with ``a_k = 1 / K`` it was
  0.13, too small to change what the generator learns.
* **Perceptual network** (:func:`perceptual_network`): torchvision's ImageNet VGG-19 when its
  weights are available locally (the paper's network; with ImageNet normalisation, on the
  32x32 image), else the zoo's full-width CIFAR VGG-19 ``vgg19_cifar10`` when found in the
  weight folders, else a *slim* CIFAR VGG-19 (every layer a quarter as wide; same 16
  convolutions and 36 feature layers) trained by advviz on CIFAR-10 (:data:`PERCEPTUAL_RECIPE`;
  its weights ship with advviz). Every trained purifier records which network it used.

Training (:func:`train_pix2pix`) is a step of advviz's training engine
(:func:`advviz.train.fit_steps`): tqdm.auto progress, resumable checkpoints after each complete
epoch, Ctrl-C keeps the weights of the last complete epoch. Adam (lr 2e-4, betas (0.5, 0.999))
as in pix2pix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from advviz import artifacts, attacks, train
from advviz._modules import model_guard, module_device
from advviz._registry import ParamSpec
from advviz.artifacts import recipes as _recipes
from advviz.defenses import check_purifier_input, register_purifier
from advviz.explain import capture_layers
from advviz.explain.features import vgg19_layers
from advviz.train import batches, default_device

__all__ = [
    "PERCEPTUAL_FILE",
    "PERCEPTUAL_RECIPE",
    "GANResult",
    "PatchDiscriminator",
    "PerceptualLoss",
    "UNetGenerator",
    "cgan",
    "discriminator_loss",
    "generator_loss",
    "load_purifier",
    "make_pairs",
    "perceptual_network",
    "pix2pix",
    "purify",
    "receptive_field",
    "require_cifar_shape",
    "train_pix2pix",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------


class UNetGenerator(nn.Module):
    """pix2pix U-Net generator for small images: ``(B, C, H, W)`` in [0, 1] -> same shape in [0, 1].

    Args:
        channels: image channels (input and output).
        ngf: width of the first layer.
        depth: number of stride-2 down-sampling steps (5 for 32x32: down to 1x1).
    """

    def __init__(self, channels: int = 3, ngf: int = 32, depth: int = 5) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2, got {depth}")
        self.channels, self.depth = channels, depth
        widths = [ngf * min(2 ** i, 8) for i in range(depth)]
        self.down = nn.ModuleList()
        c_in = channels
        for i, w in enumerate(widths):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(nn.LeakyReLU(0.2))
            layers.append(nn.Conv2d(c_in, w, 4, 2, 1, bias=i in (0, depth - 1)))
            if 0 < i < depth - 1:
                layers.append(nn.BatchNorm2d(w))
            self.down.append(nn.Sequential(*layers))
            c_in = w
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            c_out = widths[i - 1] if i > 0 else channels
            c_in_up = widths[i] if i == depth - 1 else 2 * widths[i]
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_in_up, c_out, 4, 2, 1, bias=i == 0)]
            layers.append(nn.BatchNorm2d(c_out) if i > 0 else nn.Tanh())
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2 ** self.depth
        ph, pw = (-h) % m, (-w) % m
        z = x * 2 - 1
        if ph or pw:
            z = F.pad(z, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        skips = []
        for layer in self.down:
            z = layer(z)
            skips.append(z)
        skips.pop()  # the innermost output feeds the decoder directly
        for layer in self.up:
            z = layer(z)
            if skips:
                z = torch.cat([z, skips.pop()], dim=1)
        return ((z + 1) / 2)[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: ``(x, y)`` images -> ``(B, 1, h, w)`` real/fake logits, one per patch.

    Args:
        channels: image channels (the input has ``2 * channels``: condition and image).
        ndf: width of the first layer.
        n_layers: stride-2 layers after the first (pix2pix's 70x70 PatchGAN: 3; advviz's
            default for 32x32 inputs: 1, receptive field 16 pixels).
    """

    def __init__(self, channels: int = 3, ndf: int = 64, n_layers: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(2 * channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ndf
        for i in range(1, n_layers + 1):
            c_out = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_out, 4, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x * 2 - 1, y * 2 - 1], dim=1))


def receptive_field(module: nn.Module) -> int:
    """Receptive field (pixels along one side) of a plain stack of convolutions.

    ``1 + sum_i (k_i - 1) * prod_{j < i} s_j`` over the ``Conv2d`` layers in order:
    70 for pix2pix's ``PatchDiscriminator(n_layers=3)``, 16 for advviz's default ``n_layers=1``.
    """
    rf, jump = 1, 1
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            rf += (m.kernel_size[0] - 1) * m.dilation[0] * jump
            jump *= m.stride[0]
    return rf


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------

# The fallback VGG-19's recipes (no ImageNet weights offline): the zoo's CIFAR VGG-19 at a quarter
# of its width, trained from scratch on CIFAR-10; "full" ships in advviz/weights/ (see
# advviz.artifacts.recipes.PERCEPTUAL), "quick" is the fallback of quick runs when it is missing.
PERCEPTUAL_RECIPE: dict[str, Any] = {"full": _recipes.PERCEPTUAL, "quick": _recipes.PERCEPTUAL_QUICK}
PERCEPTUAL_FILE = "vgg19_slim_cifar10_perceptual.safetensors"


class _ImageNetInput(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features = net.features
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)


def perceptual_network(*, dataset: str = "cifar10", quick: bool = False, device: str | torch.device = "cpu",
                       progress: bool = False) -> tuple[nn.Module, list[str], str]:
    """The VGG-19 of the perceptual loss: ``(eval-mode frozen net, layer names, description)``.

    Every network comes from the artefact store (:mod:`advviz.artifacts`).

    ``dataset="digits"`` (the offline walkthroughs' setting, 1-channel 28x28 images): the slim
    VGG-16 advviz trains on the digits (TSGAN's offline content network, artefact
    ``vgg16slim_digits``, trained on first use, cached), compared at its ReLU outputs but the top
    one. A stand-in: no VGG-19 for digits exists here.

    ``dataset="cifar10"``, in order: torchvision's ImageNet VGG-19 (artefact ``vgg19_imagenet``) if
    its file is on disk (a weight folder, advviz's cache or torch's hub cache; never downloaded
    here), the zoo's full-width ``vgg19_cifar10`` if in the weight folders, the slim CIFAR VGG-19 of
    :data:`PERCEPTUAL_RECIPE` (``"full"``, shipped with advviz as :data:`PERCEPTUAL_FILE`), else one
    trained by advviz on first use with the ``"quick"`` (``quick=True``) or ``"full"`` recipe,
    cached in ``<cache>/weights``.
    """
    if dataset not in ("cifar10", "digits"):
        raise ValueError(f"no perceptual network for {dataset!r}; choose 'cifar10' or 'digits'")
    if dataset == "digits":
        net = artifacts.fresh("vgg16slim_digits", progress=progress).eval()
        names = [f"features.{n}" for n, m in net.features.named_children() if isinstance(m, nn.ReLU)]
        desc = "advviz slim VGG-16 trained on digits (stand-in for VGG-19 on 1-channel images)"
    elif artifacts.status("vgg19_imagenet")["present"]:
        tv = artifacts.fresh("vgg19_imagenet")
        net: nn.Module = _ImageNetInput(tv)
        names = vgg19_layers(tv)
        desc = "torchvision vgg19 IMAGENET1K_V1"
    elif artifacts.status("vgg19_cifar10")["present"]:
        net = artifacts.fresh("vgg19_cifar10")
        names = vgg19_layers(net)
        desc = "advviz vgg19_cifar10 (zoo weights)"
    else:
        name = "vgg19_slim_cifar10_perceptual"
        if quick and not artifacts.status(name)["present"]:
            name += "_quick"
        net, _ = artifacts.get(name, device=device, progress=progress)
        names = vgg19_layers(net)
        desc = f"advviz-trained slim CIFAR VGG-19, width 0.25 (artefact {name})"
        return net, names[:-1], desc
    net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, names[:-1], desc


class PerceptualLoss(nn.Module):
    """``sum_k mean |V_k(a) - V_k(b)|`` over the named layers of a frozen network (differentiable).

    Args:
        net: the feature network (frozen: its parameters get no gradient).
        layers: module names whose outputs are compared (e.g. ``vgg19_layers(net)[:-1]``).
    """

    def __init__(self, net: nn.Module, layers: list[str]) -> None:
        super().__init__()
        if not layers:
            raise ValueError("PerceptualLoss needs at least one layer")
        self.net, self.layers = net, list(layers)
        self._modules_by_name = {n: net.get_submodule(n) for n in self.layers}

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of :attr:`layers` for ``x`` (with gradients), in order.

        Each output is captured as a (differentiable) copy: torchvision's VGG-19 runs in-place
        ReLUs, which would otherwise overwrite a captured convolution output with the ReLU's, so
        that 16 of the 35 terms silently duplicated the ReLU terms. The forward pass stops once
        every layer has run (the layers after them, e.g. the classifier head, are not computed).
        """
        with capture_layers(self.net, self._modules_by_name, keep_graph=True, stop=True) as cap:
            self.net(x)
        return [cap.last[n] for n in self.layers]

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b = output.shape[0]
        feats = self.features(torch.cat([output, target.detach()], dim=0))
        return torch.stack([(f[:b] - f[b:].detach()).abs().mean() for f in feats]).sum()


def generator_loss(disc: nn.Module, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor, *,
                   lambda_l1: float = 100.0, lambda_perc: float = 1.0,
                   perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """Generator objective: ``BCE(D(x, G(x)), 1) + lambda_l1 * |G(x) - y|_1 + lambda_perc * L_perc``.

    Args:
        disc: the conditional discriminator.
        x: attacked images (the condition) ``(B, C, H, W)``.
        y: clean images.
        fake: ``G(x)``.
        lambda_l1: weight of the mean absolute pixel error (100, pix2pix and the paper).
        lambda_perc: weight of the perceptual loss (1, the paper); ignored without ``perceptual``.
        perceptual: ``(fake, y) -> scalar`` (plain pix2pix: ``None``).

    Returns:
        ``(total, {"g_gan", "g_l1", "g_perc"})``.
    """
    pred = disc(x, fake)
    gan = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred))
    l1 = (fake - y).abs().mean()
    total = gan + lambda_l1 * l1
    parts = {"g_gan": float(gan.detach()), "g_l1": float(l1.detach()), "g_perc": 0.0}
    if perceptual is not None:
        perc = perceptual(fake, y)
        total = total + lambda_perc * perc
        parts["g_perc"] = float(perc.detach())
    return total, parts


def discriminator_loss(disc: nn.Module, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (BCE(D(x, y), 1) + BCE(D(x, G(x)), 0))`` (pix2pix halves it); ``fake`` is detached."""
    real = disc(x, y)
    gen = disc(x, fake.detach())
    return 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                  + F.binary_cross_entropy_with_logits(gen, torch.zeros_like(gen)))


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def make_pairs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str = "fgsm",
               eps: float = 8 / 255, batch_size: int = 256, seed: int = 0,
               progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(attacked, clean)`` training pairs made with one of advviz's attacks.

    Args:
        model: the classifier attacked (white box).
        x: clean images ``(N, C, H, W)`` in [0, 1]; ``y``: labels ``(N,)``.
        attack: ``"fgsm"`` or ``"pgd"`` (PGD-10, alpha 2/255, random start).
        eps: L-infinity budget.

    Returns:
        ``(x_adv, x)`` on ``x``'s device.
    """
    if attack not in ("fgsm", "pgd"):
        raise ValueError(f"attack must be 'fgsm' or 'pgd', got {attack!r}")
    out = []
    for s in tqdm(range(0, x.shape[0], batch_size), desc=f"{attack} pairs", disable=not progress):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        if attack == "fgsm":
            out.append(attacks.fgsm(model, xb, yb, eps=eps))
        else:
            out.append(attacks.pgd(model, xb, yb, eps=eps, alpha=2 / 255, steps=10, seed=seed + s))
    return torch.cat(out), x


@dataclass
class GANResult:
    """What :func:`train_pix2pix` returns: per-epoch history, interruption, epochs completed."""

    history: list[dict[str, float]]
    interrupted: bool
    epochs_completed: int
    checkpoint: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def train_pix2pix(gen: nn.Module, disc: nn.Module, pairs: tuple[torch.Tensor, torch.Tensor], *,
                  perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                  epochs: int = 10, lr: float = 2e-4, batch_size: int = 64, lambda_l1: float = 100.0,
                  lambda_perc: float = 1.0, device: str | torch.device | None = None, seed: int = 0,
                  checkpoint: str | Path | None = None, progress: bool = True,
                  description: str = "pix2pix") -> GANResult:
    """Train a pix2pix generator/discriminator pair in place (the paper's cGAN with ``perceptual``).

    One step: the discriminator on ``(x, y)`` vs ``(x, G(x))``, then the generator on
    :func:`generator_loss`. Both use Adam (``lr``, betas (0.5, 0.999)); they share one optimizer
    object with two parameter groups so that :mod:`advviz.train`'s checkpoint code saves them
    (each step updates only the parameters that received a gradient).

    Args:
        gen, disc: the networks (moved to ``device``; left in eval mode).
        pairs: ``(attacked, clean)`` ``(N, C, H, W)`` tensors in [0, 1].
        perceptual: the perceptual loss (``None``: plain pix2pix).
        epochs: total epochs (a resumed run continues up to this number).
        checkpoint: path stem; ``<stem>.safetensors`` / ``<stem>.json`` written after every
            complete epoch and resumed from.
        progress: tqdm.auto progress bar.

    Returns:
        :class:`GANResult`; after Ctrl-C the networks hold the weights of the last complete
        epoch and ``interrupted`` is ``True``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    xa, xc = pairs
    if xa.shape != xc.shape or xa.shape[0] == 0:
        raise ValueError(f"pairs must be two non-empty tensors of one shape, got {tuple(xa.shape)}, {tuple(xc.shape)}")
    dev = torch.device(device) if device is not None else default_device()
    both = nn.ModuleDict({"gen": gen, "disc": disc}).to(dev)
    opt = torch.optim.Adam([{"params": list(gen.parameters())}, {"params": list(disc.parameters())}],
                           lr=lr, betas=(0.5, 0.999))
    gen_params, disc_params = list(gen.parameters()), list(disc.parameters())

    def step(batch: tuple[torch.Tensor, torch.Tensor], state: Any) -> tuple[dict[str, float], float]:
        x, y = batch[0].to(dev), batch[1].to(dev)
        fake = gen(x)
        # discriminator step
        opt.zero_grad(set_to_none=True)
        d_loss = discriminator_loss(disc, x, y, fake)
        d_loss.backward()
        for p in gen_params:
            p.grad = None
        opt.step()
        # generator step
        opt.zero_grad(set_to_none=True)
        g_loss, parts = generator_loss(disc, x, y, fake, lambda_l1=lambda_l1, lambda_perc=lambda_perc,
                                       perceptual=perceptual)
        if not (torch.isfinite(g_loss) and torch.isfinite(d_loss)):
            raise FloatingPointError(f"loss became non-finite at epoch {state.epoch}; lower lr")
        g_loss.backward()
        for p in disc_params:
            p.grad = None
        opt.step()
        b = x.shape[0]
        return {"d": float(d_loss.detach()) * b, **{k: v * b for k, v in parts.items()}}, b

    res = train.fit_steps(both, step, lambda st: batches((xa, xc), batch_size, shuffle=True, generator=st.generator), optimizers=[opt],
                    epochs=epochs, steps_per_epoch=math.ceil(xa.shape[0] / batch_size), seed=seed, device=dev,
                    checkpoint=checkpoint, progress=progress, description=description, show=("g_l1",))
    return GANResult(history=res.history, interrupted=res.interrupted, epochs_completed=res.epochs_completed,
                     checkpoint=res.checkpoint)


# ---------------------------------------------------------------------------------------------
# trained purifiers (cached recipes) and the registered functions
# ---------------------------------------------------------------------------------------------

def artifact_name(kind: str, attack: str, config: str) -> str:
    """The :mod:`advviz.artifacts` name of a purifier generator, e.g. ``"cgan_fgsm_cifar10_quick"``."""
    if kind not in ("cgan", "pix2pix") or attack not in ("fgsm", "pgd") or config not in ("full", "quick"):
        raise ValueError(f"kind must be cgan|pix2pix, attack fgsm|pgd, config full|quick; got {kind}, {attack}, {config}")
    return f"{kind}_{attack}_cifar10" + ("_quick" if config == "quick" else "")


def load_purifier(kind: str = "cgan", *, attack: str = "fgsm", config: str = "full",
                  device: str | torch.device = "cpu", progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """A trained generator (shared: eval mode, frozen; do not change it) and its record.

    Resolved by :func:`advviz.artifacts.get`: the shipped file (``full``), the cache, else trained
    with its recipe (:func:`advviz.artifacts.recipes.pix2pix_recipe`: ``full`` is the recipe of the
    FGSM and PGD generators that ship in advviz/weights/; the paper trains 300 epochs on 5,000
    ImageNet pairs, a GPU job) and cached.

    Args:
        kind: ``"cgan"`` (the paper: with the perceptual loss) or ``"pix2pix"`` (without).
        attack: the attack the training pairs come from: ``"fgsm"`` or ``"pgd"`` (PGD-10).
        config: ``"full"`` or ``"quick"``.

    Returns:
        ``(generator, record)``; the record names the recipe, the file, the perceptual network it
        was trained with (read from the file), and holds the :class:`~advviz.artifacts.Record`
        under ``"artifact"``.
    """
    gen, rec = artifacts.get(artifact_name(kind, attack, config), device=device, progress=progress)
    perc = next((u for u in rec.upstream if "perceptual" in u.name), None)
    record = {"name": rec.name, "weights": rec.path, "recipe": rec.recipe, "recipe_hash": rec.recipe_hash,
              "sha256": rec.sha256, "attack": attack, "kind": kind,
              "perceptual": f"{artifacts.get_spec(perc.name).description} ({perc.name})" if perc is not None else "none",
              "artifact": rec}
    if "history" in rec.training:
        record["history"] = rec.training["history"]
    return gen, record


def purify(net: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Run an image-to-image network as a purifier: eval mode, ``x``'s device/dtype, [0, 1].

    No autograd graph is built unless ``x`` requires grad (an adaptive attack differentiating
    through the purifier, :func:`advviz.defenses.defended`); the network's parameters get no
    gradient either way when they are frozen. The network's mode is restored afterwards; ``x``
    is not modified.
    """
    check_purifier_input(x.detach())
    dev = module_device(net, default=x.device)
    if dev != x.device:
        raise ValueError(f"the purifier's network is on {dev} and the images on {x.device}; load the network "
                         f"for the images' device (e.g. load_purifier(..., device=x.device))")
    out = []
    with model_guard(net, freeze=False), torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
        for s in range(0, x.shape[0], batch_size):
            out.append(net(x[s:s + batch_size].float()).clamp(0, 1))
    if not out:
        return x.detach().clone()
    return torch.cat(out).to(dtype=x.dtype).contiguous()


def require_cifar_shape(x: torch.Tensor, name: str) -> None:
    """Refuse input a CIFAR-10-trained purifier cannot take (not ``(B, 3, H, W)``), saying what to use."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        hint = (" (add a batch dimension with x.unsqueeze(0))"
                if isinstance(x, torch.Tensor) and x.ndim == 3 and x.shape[0] == 3 else "")
        raise ValueError(f"the {name} purifier was trained on CIFAR-10 colour images (32x32) and needs a "
                         f"(B, 3, H, W) batch, got {shape}{hint}; pick a CIFAR-10 model, or the 'jpeg' "
                         f"purifier, which takes grayscale and colour images")


def cgan(x: torch.Tensor, *, attack: str = "fgsm", config: str = "full") -> torch.Tensor:
    """cGAN purifier (pix2pix + VGG-19 perceptual loss, purifier paper) trained on CIFAR-10 ResNet-20 pairs.

    Args:
        x: ``(B, 3, H, W)`` images in [0, 1] (not modified).
        attack: the training pairs' attack, ``"fgsm"`` or ``"pgd"``.
        config: ``"full"`` or ``"quick"`` recipe (trained on first use, cached).

    Returns:
        ``(B, 3, H, W)`` purified images in [0, 1], ``x``'s dtype and device.
    """
    require_cifar_shape(x, "cgan")
    gen, _ = load_purifier("cgan", attack=attack, config=config, device=x.device)
    return purify(gen, x)


def pix2pix(x: torch.Tensor, *, attack: str = "fgsm", config: str = "full") -> torch.Tensor:
    """Plain pix2pix purifier (cGAN + L1, the purifier paper's baseline); arguments as :func:`cgan`."""
    require_cifar_shape(x, "pix2pix")
    gen, _ = load_purifier("pix2pix", attack=attack, config=config, device=x.device)
    return purify(gen, x)


# The recipe choice every learned purifier takes (pix2pix/cGAN here, UDDN/DAE in advviz.defenses.uddn).
CONFIG_PARAM = ParamSpec("config", "full", kind="choice", choices=("full", "quick"),
                         help="training recipe (shipped weights, else trained on first use and cached)")
_PARAMS = [ParamSpec("attack", "fgsm", kind="choice", choices=("fgsm", "pgd"),
                     help="attack whose (attacked, clean) pairs trained the generator"),
           CONFIG_PARAM]


def _register() -> None:
    register_purifier("cgan", params=_PARAMS, differentiable=True, quick={"config": "quick"}, channels=(3,),
                      paper="Purifier paper (001): pix2pix + VGG-19 perceptual loss (lambda1=100, lambda2=1)",
                      description="cGAN purifier: pix2pix U-Net trained with cGAN + L1 + VGG-19 perceptual loss")(cgan)
    register_purifier("pix2pix", params=_PARAMS, differentiable=True, quick={"config": "quick"}, channels=(3,),
                      paper="Isola et al., CVPR 2017 (pix2pix): cGAN + L1 (lambda=100)",
                      description="plain pix2pix purifier (cGAN + L1), the purifier paper's baseline")(pix2pix)


_register()
