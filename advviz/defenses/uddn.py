"""UDDN: the U-Net deep denoising network (UDDN paper, paper 004, Section 3, Fig. 3, eqs. 4-5), and DAE.

Network (:class:`UDDN`), built from ``C`` units (3x3 convolution, batch norm, ReLU):

* ``C2``: two ``C`` with a residual connection at the second: ``a = C(x); out = a + C(a)``.
* ``C3``: three ``C``, "numerous connections at the second and third C positions, similar to
  a DenseNet block": ``a = C_s(x); b = C(a); out = a + b + C(a + b)`` (the first ``C`` has
  stride ``s``; advviz sums where DenseNet concatenates, keeping the width fixed).
* Encoder: ``C2`` and four ``C3`` whose first convolution has stride 2 (32 -> 16 -> 8 -> 4 -> 2
  for 32x32 inputs), widths ``w * (1, 2, 4, 4, 4)``.
* Decoder: three ``C3`` and one ``C2``; each upsamples the feedback input (bilinear) to the size
  of the lateral input (the encoder output of that scale) and processes their concatenation
  (the ``F`` fusion unit). A 1x1 convolution turns the last output into the noise estimate
  ``dx``; the output is ``x_hat = x* - dx`` (eq. 4), exactly, without clipping (the purifier
  clips to [0, 1]).

**DAE** (the baseline; ``UDDN(lateral=False, residual=False)``): "a DAE can be obtained by
removing the horizontal connection in UDDN", and "the learning target of UDDN is to obtain
noise instead of reconstructing the entire image, which is different from DAE": the decoder
gets no lateral input, and the 1x1 convolution outputs the image itself. It is trained with a
pixel-level L1 loss (the paper replaces the pixel-level loss by eq. 5 for UDDN only).

**PGD** (the paper's "PGD", its ref. [27]: the *pixel-guided denoiser* of Liao et al., CVPR 2018,
"Defense against Adversarial Attacks Using High-Level Representation Guided Denoiser"; not PGD
adversarial training): Liao et al.'s denoising U-Net (with lateral connections, predicting the
noise, ``x_hat = x* - dx``) trained with the pixel-level loss ``|x_hat - x|_1``; the
representation-guided versions (HGD) replace that loss by one on the classifier's features, as
UDDN's eq. 5 does. advviz's ``pgd`` denoiser is therefore the UDDN network itself (same
architecture, laterals, residual output) trained with :func:`pixel_loss` (``guidance="pixel"``):
the DAE differs from it by having no laterals and reconstructing the image, UDDN by its loss.

**Loss** (eq. 5, :func:`uddn_loss`): ``|| f_l(x_hat) - f_l(x) ||_1`` (mean absolute difference)
with ``f_{-1}`` the target model's logits, ``f_{-2}`` its last convolutional features
(``forward_features``). The target model is frozen; labels are not used.

Training (:func:`train_denoiser`) goes through :func:`advviz.train.fit` (progress, checkpoints,
Ctrl-C keeps the last complete epoch) with a ``loss`` hook: the training "images" are the
channel concatenation ``(x*, x)`` of attacked and clean images. Adam, lr 1e-3 (the paper's
initial rate).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RECIPES",
    "UDDN",
    "dae",
    "dae_network",
    "load_denoiser",
    "pixel_loss",
    "train_denoiser",
    "uddn",
    "uddn_loss",
]

log = logging.getLogger(__name__)


class _C(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class _C2(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c1, self.c2 = _C(c_in, c_out), _C(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.c1(x)
        return a + self.c2(a)


class _C3(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = _C(c_in, c_out, stride), _C(c_out, c_out), _C(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.c1(x)
        b = self.c2(a)
        return a + b + self.c3(a + b)


class UDDN(nn.Module):
    """U-Net denoiser of Fig. 3: ``(B, C, H, W)`` -> ``x_hat`` of the same shape.

    Args:
        channels: image channels.
        width: width of the first encoder unit (the paper's HGD-style widths scaled by it).
        lateral: lateral (encoder -> decoder) connections (``False``: the DAE).
        residual: predict the noise and return ``x - dx`` (eq. 4); ``False``: return the 1x1
            convolution's output as the image (the DAE).
    """

    def __init__(self, channels: int = 3, width: int = 16, *, lateral: bool = True, residual: bool = True) -> None:
        super().__init__()
        self.lateral, self.residual = lateral, residual
        w = [width, 2 * width, 4 * width, 4 * width, 4 * width]
        self.encoder = nn.ModuleList([_C2(channels, w[0])] + [_C3(w[i - 1], w[i], stride=2) for i in range(1, 5)])
        # decoder modules from the top (2x2) down to full resolution: three C3 and one C2
        dec_out = [w[3], w[2], w[1], w[0]]
        self.decoder = nn.ModuleList()
        feed = w[4]
        for j, lat_i in enumerate((3, 2, 1, 0)):
            c_in = feed + (w[lat_i] if lateral else 0)
            self.decoder.append(_C3(c_in, dec_out[j]) if j < 3 else _C2(c_in, dec_out[j]))
            feed = dec_out[j]
        self.head = nn.Conv2d(w[0], channels, 1)

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 convolution's output: the noise estimate ``dx`` (the image itself when not residual)."""
        feats = []
        h = x
        for unit in self.encoder:
            h = unit(h)
            feats.append(h)
        h = feats.pop()
        for unit in self.decoder:
            lat = feats.pop()
            h = F.interpolate(h, size=lat.shape[-2:], mode="bilinear", align_corners=False)
            h = unit(torch.cat([h, lat], dim=1) if self.lateral else h)
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x_hat = x - dx`` (eq. 4) for the UDDN; the reconstruction itself for the DAE."""
        out = self.noise(x)
        return x - out if self.residual else out


def dae_network(channels: int = 3, width: int = 16) -> UDDN:
    """The DAE baseline: :class:`UDDN` without lateral connections, reconstructing the image."""
    return UDDN(channels, width, lateral=False, residual=False)


def _features(model: nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    if layer == -1:
        return model(x)
    if layer == -2:
        return model.forward_features(x)
    raise ValueError(f"layer must be -1 (logits) or -2 (last convolutional features), got {layer}")


def uddn_loss(model: nn.Module, x_hat: torch.Tensor, x: torch.Tensor, *, layer: int = -1) -> torch.Tensor:
    """Eq. 5: ``mean |f_l(x_hat) - f_l(x)|`` with ``f_-1`` the logits, ``f_-2`` the last conv features.

    Args:
        model: the target classifier (a zoo :class:`~advviz.models.Classifier` for ``layer=-2``).
        x_hat: denoised images ``(B, C, H, W)`` (gradients flow through them).
        x: clean images (no gradient).
        layer: ``-1`` or ``-2``.
    """
    with torch.no_grad():
        ref = _features(model, x, layer)
    return (_features(model, x_hat, layer) - ref).abs().mean()


def pixel_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The DAE's pixel-level loss: ``mean |x_hat - x|``."""
    return (x_hat - x).abs().mean()


class _Frozen:
    """Eval mode and no parameter gradients for the target model inside the block; restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.mode = self.model.training
        self.flags = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.mode)
        for p, f in zip(self.model.parameters(), self.flags):
            p.requires_grad_(f)


def train_denoiser(net: nn.Module, target: nn.Module, pairs: tuple[torch.Tensor, torch.Tensor],
                   labels: torch.Tensor, *, guidance: str = "logits", epochs: int = 5, lr: float = 1e-3,
                   batch_size: int = 32, device: str | torch.device | None = None, seed: int = 0,
                   checkpoint: Any = None, progress: bool = True, description: str = "uddn") -> Any:
    """Train a denoiser in place with :func:`advviz.train.fit`.

    Args:
        net: a :class:`UDDN` (or the DAE).
        target: the classifier guiding the loss (frozen during training; its mode and
            ``requires_grad`` flags are restored).
        pairs: ``(attacked, clean)`` ``(N, C, H, W)`` in [0, 1].
        labels: ``(N,)`` true labels (used only for the training-accuracy column of the history).
        guidance: ``"logits"`` (eq. 5, l = -1), ``"features"`` (l = -2) or ``"pixel"`` (the DAE).
        epochs, lr, batch_size, device, seed, checkpoint, progress, description: as
            :func:`advviz.train.fit`.

    Returns:
        :class:`advviz.train.FitResult`; its ``accuracy`` column is the target's accuracy on the
        denoised training images.
    """
    from advviz import train

    if guidance not in ("logits", "features", "pixel"):
        raise ValueError(f"guidance must be 'logits', 'features' or 'pixel', got {guidance!r}")
    xa, xc = pairs
    if xa.shape != xc.shape:
        raise ValueError("attacked and clean images must have the same shape")
    c = xa.shape[1]
    dev = torch.device(device) if device is not None else train.default_device()
    target.to(dev)

    def loss(model: nn.Module, xx: torch.Tensor, _y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv, x_clean = xx[:, :c], xx[:, c:]
        x_hat = model(x_adv)
        if guidance == "pixel":
            value = pixel_loss(x_hat, x_clean)
            with torch.no_grad():
                logits = target(x_hat.clamp(0, 1))
        else:
            value = uddn_loss(target, x_hat, x_clean, layer=-1 if guidance == "logits" else -2)
            with torch.no_grad():
                logits = target(x_hat.clamp(0, 1))
        return value, logits

    with _Frozen(target):
        return train.fit(net, (torch.cat([xa, xc], dim=1), labels), epochs=epochs, lr=lr, batch_size=batch_size,
                         device=dev, seed=seed, checkpoint=checkpoint, loss=loss, progress=progress,
                         description=description)


# ---------------------------------------------------------------------------------------------
# trained denoisers (cached recipes) and the registered purifiers
# ---------------------------------------------------------------------------------------------

RECIPES: dict[str, dict[str, Any]] = {
    # Training pairs: CIFAR-10 train images attacked on the published ResNet-20 with FGSM at
    # eps 8/255 (`real` pairs), plus `gnr` more made by the GNR noise GAN (advviz.defenses.gnr)
    # trained on those pairs' noise.
    # "full": the recipe of the weights that ship in advviz/weights/ (float16; trained on a 2-core
    # CPU, `python -m advviz.defenses.make_weights uddn dae` re-makes them). The paper trains far
    # longer (a GPU job), e.g. real 10,000 + GNR 20,000 pairs for 20 epochs with wider GNR networks.
    # UDDN trains `epochs` (10), the DAE `dae_epochs` (3). Measured on 1,000 JPEG CIFAR-10 test
    # images (seed 0), ResNet-20 accuracy under FGSM 8/255 behind UDDN after epochs 3..10:
    # .562 .530 .598 .630 .583 .568 .611 .641 (clean stays .82-.84). The DAE's 4th epoch left it
    # where it was (.180 clean, .179 FGSM; its training accuracy had settled at .17), so it keeps 3.
    "full": {"real": 10000, "gnr": 5000, "epochs": 10, "dae_epochs": 3, "batch_size": 32, "lr": 1e-3, "width": 16,
             "gnr_steps": 300, "gnr_widths": (32, 16, 16), "gnr_convs": 1, "gnr_critic": (16, 32, 64)},
    "quick": {"real": 1000, "gnr": 1000, "epochs": 2, "batch_size": 32, "lr": 1e-3, "width": 16,
              "gnr_steps": 100, "gnr_widths": (32, 16, 16), "gnr_convs": 1, "gnr_critic": (16, 32, 64)},
}

# Seed of the GNR networks' initialisation, training batches and generated noise (the weights that
# ship in advviz/weights/ were made before it existed, from an unseeded initialisation).
GNR_SEED = 0

_LOADED: dict[tuple[str, str], tuple[nn.Module, dict[str, Any]]] = {}
_PAIRS: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]] = {}


def training_pairs(config: str, *, device: str | torch.device = "cpu",
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(attacked, clean, labels, record)``: the UDDN recipe's CIFAR-10 training set (real FGSM + GNR pairs).

    Made once per process and recipe (kept in memory), so the UDDN, the DAE and the
    distillation models of one run see the same pairs.
    """
    key = (config, str(torch.device(device)))
    if key not in _PAIRS:
        _PAIRS[key] = _training_pairs(config, device=device, progress=progress)
    return _PAIRS[key]


def _training_pairs(config: str, *, device: str | torch.device = "cpu",
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    from advviz import data, models
    from advviz.defenses import gnr as gnr_mod
    from advviz.defenses.pix2pix import make_pairs

    recipe = RECIPES[config]
    target = models.load("resnet20_cifar10", device=device)
    x, y = data.sample(data.load("cifar10", "train"), recipe["real"] + recipe["gnr"], seed=1)
    x, y = x.to(device), y.to(device)
    xr, yr = x[:recipe["real"]], y[:recipe["real"]]
    xa, _ = make_pairs(target, xr, yr, attack="fgsm", progress=progress)
    rec: dict[str, Any] = {"real_pairs": recipe["real"], "gnr_pairs": recipe["gnr"]}
    if recipe["gnr"]:
        gen, hist = _train_recipe_gnr(recipe, (xa - xr).detach(), device=device, progress=progress)
        xg = x[recipe["real"]:]
        xga = gnr_mod.augment(gen, xg, seed=GNR_SEED)
        xa, xr, yr = torch.cat([xa, xga]), torch.cat([xr, xg]), torch.cat([yr, y[recipe["real"]:]])
        rec["gnr_final"] = hist[-1] if hist else {}
        rec["gnr_seed"] = GNR_SEED
    return xa, xr, yr, rec


def _train_recipe_gnr(recipe: dict[str, Any], noise: torch.Tensor, *, device: str | torch.device = "cpu",
                      progress: bool = False) -> tuple[nn.Module, list[dict[str, float]]]:
    """The recipe's GNR generator trained on the real FGSM noise ``noise`` ``(N, 3, 32, 32)``.

    Seeded: the networks' initialisation (:func:`advviz.defenses.gnr.seeded_networks`), the
    training batches and the generated noise all follow :data:`GNR_SEED`, so the same recipe
    gives the same generator and the same pairs.
    """
    from advviz.defenses import gnr as gnr_mod

    gen, crit = gnr_mod.seeded_networks(3, seed=GNR_SEED, widths=recipe["gnr_widths"],
                                        convs_per_unit=recipe["gnr_convs"], critic_widths=recipe["gnr_critic"])
    hist = gnr_mod.train_gnr(gen, crit, noise, steps=recipe["gnr_steps"], eps=8 / 255,
                             device=device, progress=progress, seed=GNR_SEED)
    return gen, hist


def load_gnr(*, config: str = "full", device: str | torch.device = "cpu",
             progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The UDDN recipe's trained GNR noise generator (eval mode, frozen) and its record.

    The generator of :data:`RECIPES` ``[config]`` (WGAN-GP of eq. 3, ``gnr_steps`` steps on the
    FGSM 8/255 noise ``x_adv - x`` of the recipe's ``real`` CIFAR-10 train images attacked on
    ResNet-20), seeded with :data:`GNR_SEED`. Found as ``gnr_resnet20_cifar10[_quick].safetensors``
    in advviz's shipped weights (``"full"``, float16) or the user cache; trained on first use
    otherwise (``"full"``: about 6 minutes on a 2-core CPU). The record's ``history`` holds the
    training history (``step``, ``critic``, ``gen``, ``wasserstein``, ``seconds``).

    Args:
        config: ``"full"`` or ``"quick"``.
        device: where the generator goes (and trains when it must).
        progress: show progress bars while training.

    Returns:
        ``(generator, record)``: a :class:`advviz.defenses.gnr.NoiseGenerator` making
        ``(B, 3, 32, 32)`` noise in ``[-8/255, 8/255]``, and ``name``, ``recipe``, ``weights``,
        ``history``.
    """
    import json

    from safetensors import safe_open

    from advviz import data, models
    from advviz._paths import cache_dir, find_weights
    from advviz.defenses import gnr as gnr_mod
    from advviz.defenses.pix2pix import make_pairs

    if config not in RECIPES:
        raise ValueError(f"config must be one of {sorted(RECIPES)}, got {config!r}")
    key = ("gnr", config)
    if key in _LOADED:
        net, rec = _LOADED[key]
        return net.to(device), rec
    recipe = RECIPES[config]
    name = "gnr_resnet20_cifar10" + ("_quick" if config == "quick" else "")
    filename = f"{name}.safetensors"
    gen_recipe = {k: recipe[k] for k in ("real", "gnr_steps", "gnr_widths", "gnr_convs", "gnr_critic")}
    record: dict[str, Any] = {"name": name, "recipe": {**gen_recipe, "seed": GNR_SEED, "eps": 8 / 255}}
    found = find_weights(filename)
    if found is None:
        target = models.load("resnet20_cifar10", device=device)
        x, y = data.sample(data.load("cifar10", "train"), recipe["real"] + recipe["gnr"], seed=1)
        xr, yr = x[:recipe["real"]].to(device), y[:recipe["real"]].to(device)
        xa, _ = make_pairs(target, xr, yr, attack="fgsm", progress=progress)
        gen, hist = _train_recipe_gnr(recipe, (xa - xr).detach(), device=device, progress=progress)
        found = models.save_weights(gen, cache_dir() / "weights" / filename,
                                    metadata={"name": name, "recipe": record["recipe"], "history": hist})
        record["history"] = hist
    else:
        gen = gnr_mod.NoiseGenerator(3, widths=recipe["gnr_widths"], convs_per_unit=recipe["gnr_convs"],
                                     eps=8 / 255)
        gen.load_state_dict(models.load_state_file(found))
        with safe_open(str(found), "pt") as fh:
            record["history"] = json.loads((fh.metadata() or {}).get("history", "[]"))
    record["weights"] = str(found)
    gen.to(device).eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    _LOADED[key] = (gen, record)
    return gen, record


def load_denoiser(kind: str = "uddn", *, config: str = "full", device: str | torch.device = "cpu",
                  progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """A trained denoiser (eval mode, frozen) and its record; trained with :data:`RECIPES` on first use.

    Args:
        kind: ``"uddn"`` (logit-guided, eq. 5 with l = -1), ``"dae"`` (pixel loss, no laterals) or
            ``"pgd"`` (Liao et al.'s pixel-guided denoiser: the UDDN network with the pixel loss;
            no shipped weights, so the first call trains it: the quick recipe on the CPU in
            minutes, the full one far longer).
        config: ``"full"`` or ``"quick"``.
    """
    from advviz import models
    from advviz._paths import cache_dir, find_weights

    if kind not in ("uddn", "dae", "pgd") or config not in RECIPES:
        raise ValueError(f"kind must be uddn|dae|pgd and config full|quick, got {kind!r}, {config!r}")
    key = (kind, config)
    if key in _LOADED:
        net, rec = _LOADED[key]
        return net.to(device), rec
    recipe = RECIPES[config]
    name = f"{kind}_resnet20_cifar10" + ("_quick" if config == "quick" else "")
    filename = f"{name}.safetensors"
    net = dae_network(3, recipe["width"]) if kind == "dae" else UDDN(3, recipe["width"])
    found = find_weights(filename)
    record: dict[str, Any] = {"name": name, "recipe": recipe, "guidance": "logits" if kind == "uddn" else "pixel",
                              "network": "UDDN without laterals, reconstructing the image" if kind == "dae" else
                              "UDDN (laterals, x_hat = x* - dx)"}
    if found is None:
        xa, xc, y, pair_rec = training_pairs(config, device=device, progress=progress)
        target = models.load("resnet20_cifar10", device=device)
        epochs = recipe.get("dae_epochs", recipe["epochs"]) if kind == "dae" else recipe["epochs"]
        res = train_denoiser(net, target, (xa, xc), y, guidance=record["guidance"], epochs=epochs,
                             lr=recipe["lr"], batch_size=recipe["batch_size"], device=device,
                             checkpoint=cache_dir() / "checkpoints" / name, progress=progress, description=name)
        if res.interrupted:
            raise KeyboardInterrupt(f"training of {name} was interrupted; its checkpoint resumes next time")
        found = models.save_weights(net, cache_dir() / "weights" / filename,
                                    metadata={"name": name, "recipe": recipe, "pairs": pair_rec,
                                              "history": res.history})
        record["history"] = res.history
    else:
        net.load_state_dict(models.load_state_file(found))
    record["weights"] = str(found)
    net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    _LOADED[key] = (net, record)
    return net, record


def uddn(x: torch.Tensor, *, config: str = "full") -> torch.Tensor:
    """UDDN purifier (paper 004): U-Net residual denoiser guided by CIFAR-10 ResNet-20's logits.

    Args:
        x: ``(B, 3, H, W)`` images in [0, 1] (not modified).
        config: ``"full"`` or ``"quick"`` recipe (trained on first use, cached).

    Returns:
        ``(B, 3, H, W)`` denoised images ``clip(x - dx, 0, 1)``, ``x``'s dtype and device.
    """
    from advviz.defenses.pix2pix import purify, require_cifar_shape

    require_cifar_shape(x, "uddn")
    net, _ = load_denoiser("uddn", config=config)
    return purify(net, x)


def dae(x: torch.Tensor, *, config: str = "full") -> torch.Tensor:
    """DAE purifier (the UDDN paper's baseline): the network without laterals, pixel L1 loss."""
    from advviz.defenses.pix2pix import purify, require_cifar_shape

    require_cifar_shape(x, "dae")
    net, _ = load_denoiser("dae", config=config)
    return purify(net, x)


def _register() -> None:
    from advviz.defenses import register_purifier
    from advviz.defenses.pix2pix import CONFIG_PARAM

    params = [CONFIG_PARAM]
    register_purifier("uddn", params=params, differentiable=True, quick={"config": "quick"},
                      paper="UDDN paper (004), Sec. 3: U-Net denoiser, x_hat = x* - dx (eq. 4), logit-guided loss (eq. 5)",
                      description="UDDN: U-Net residual denoiser guided by the classifier's logits")(uddn)
    register_purifier("dae", params=params, differentiable=True, quick={"config": "quick"},
                      paper="UDDN paper (004), Sec. 3.2: DAE baseline (UDDN without lateral connections, pixel loss)",
                      description="DAE: the UDDN network without lateral connections, pixel-level L1 loss")(dae)


_register()
