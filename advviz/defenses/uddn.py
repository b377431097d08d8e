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

from advviz import artifacts, data, train
from advviz import attacks as A
from advviz._modules import model_guard
from advviz.defenses import gnr as gnr_mod
from advviz.defenses import register_purifier
from advviz.defenses.pix2pix import CONFIG_PARAM, make_pairs, purify, require_cifar_shape

__all__ = [
    "GUIDANCE",
    "UDDN",
    "artifact_name",
    "dae",
    "dae_network",
    "load_denoiser",
    "load_gnr",
    "pairs_from",
    "training_pairs",
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
        levels: stride-2 encoder units (the paper's 4: 32 -> 2 pixels). Fewer give a wider
            bottleneck (2: 8x8), which a DAE without laterals needs on 32x32 images.
    """

    def __init__(self, channels: int = 3, width: int = 16, *, lateral: bool = True, residual: bool = True,
                 levels: int = 4) -> None:
        super().__init__()
        if not 1 <= levels <= 4:
            raise ValueError(f"levels must be 1..4, got {levels}")
        self.lateral, self.residual, self.levels = lateral, residual, levels
        w = [width, 2 * width, 4 * width, 4 * width, 4 * width][:levels + 1]
        self.encoder = nn.ModuleList([_C2(channels, w[0])] + [_C3(w[i - 1], w[i], stride=2) for i in range(1, levels + 1)])
        # decoder modules from the top down to full resolution: C3s and one C2 at the end
        dec_out = w[:-1][::-1]
        self.decoder = nn.ModuleList()
        feed = w[-1]
        for j, lat_i in enumerate(range(levels - 1, -1, -1)):
            c_in = feed + (w[lat_i] if lateral else 0)
            self.decoder.append(_C3(c_in, dec_out[j]) if j < levels - 1 else _C2(c_in, dec_out[j]))
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


def dae_network(channels: int = 3, width: int = 16, *, levels: int = 4) -> UDDN:
    """The DAE baseline: :class:`UDDN` without lateral connections, reconstructing the image."""
    return UDDN(channels, width, lateral=False, residual=False, levels=levels)


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


def train_denoiser(net: nn.Module, target: nn.Module, pairs: tuple[torch.Tensor, torch.Tensor],
                   labels: torch.Tensor, *, guidance: str = "logits", epochs: int = 5, lr: float = 1e-3,
                   batch_size: int = 32, device: str | torch.device | None = None, seed: int = 0,
                   checkpoint: Any = None, progress: bool = True, description: str = "uddn",
                   schedule: str | None = None, lr_final: float | None = None) -> Any:
    """Train a denoiser in place with :func:`advviz.train.fit`.

    Args:
        net: a :class:`UDDN` (or the DAE).
        target: the classifier guiding the loss (frozen during training; its mode and
            ``requires_grad`` flags are restored).
        pairs: ``(attacked, clean)`` ``(N, C, H, W)`` in [0, 1].
        labels: ``(N,)`` true labels (used only for the training-accuracy column of the history).
        guidance: ``"logits"`` (eq. 5, l = -1), ``"features"`` (l = -2) or ``"pixel"`` (the DAE).
        epochs, lr, batch_size, device, seed, checkpoint, progress, description, schedule, lr_final: as
            :func:`advviz.train.fit`.

    Returns:
        :class:`advviz.train.FitResult`; its ``accuracy`` column is the target's accuracy on the
        denoised training images.
    """
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

    with model_guard(target):
        return train.fit(net, (torch.cat([xa, xc], dim=1), labels), epochs=epochs, lr=lr, batch_size=batch_size,
                         device=dev, seed=seed, checkpoint=checkpoint, loss=loss, progress=progress,
                         description=description, schedule=schedule, lr_final=lr_final)


# ---------------------------------------------------------------------------------------------
# trained denoisers (cached recipes) and the registered purifiers
# ---------------------------------------------------------------------------------------------

#: the loss each denoiser kind trains with (:func:`train_denoiser`'s ``guidance``)
GUIDANCE: dict[str, str] = {"uddn": "logits", "dae": "pixel", "pgd": "pixel"}
_NETWORK = {"uddn": "UDDN (laterals, x_hat = x* - dx)", "dae": "UDDN without laterals, reconstructing the image",
            "pgd": "UDDN (laterals, x_hat = x* - dx)"}

# Recipes (advviz.artifacts.recipes.denoiser_recipe / GNR, GNR_QUICK). "full" made the weights that
# ship in advviz/weights/ (float16; trained on a 2-core CPU). The paper trains far longer (a GPU
# job), e.g. real 10,000 + GNR 20,000 pairs for 20 epochs with wider GNR networks. Measured on
# 1,000 JPEG CIFAR-10 test images (seed 0), ResNet-20 accuracy under FGSM 8/255 behind UDDN after
# epochs 3..10: .562 .530 .598 .630 .583 .568 .611 .641 (clean stays .82-.84). The DAE's 4th epoch
# left it where it was (.180 clean, .179 FGSM; its training accuracy had settled at .17), so it keeps 3.

# Pairs of cheap derived data (FGSM on the published ResNet-20 + the GNR's noise), kept per GNR
# artefact identity and device so that the UDDN, the DAE and the distillation models of one run
# do not recompute them; the networks themselves are memoised by advviz.artifacts only.
_PAIRS: dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]] = {}


def attacked(target: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attacks: str = "fgsm", eps: float = 8 / 255,
             seed: int = 1, progress: bool = False) -> torch.Tensor:
    """The attacked halves of the real training pairs (:class:`advviz.artifacts.recipes.GNRRecipe`'s ``attacks``).

    Args:
        target: the classifier attacked (frozen).
        x: ``(N, C, H, W)`` clean images in [0, 1]; y: ``(N,)`` labels.
        attacks: ``"fgsm"`` (FGSM at ``eps``) or ``"paper"``: each image gets one of FGSM,
            I-FGSM-2, I-FGSM-4, I-FGSM-8 (iterations), drawn at random, at a level drawn uniformly
            from {1, ..., 8}/255 of ``eps = 8/255`` (``eps * k / 8``), I-FGSM stepping level / iterations.
        seed: the draws' seed.

    Returns:
        ``(N, C, H, W)`` attacked images, each within its level of ``x`` in L-inf.
    """
    if attacks == "fgsm":
        return make_pairs(target, x, y, attack="fgsm", eps=eps, progress=progress)[0]
    if attacks != "paper":
        raise ValueError(f"attacks must be 'fgsm' or 'paper', got {attacks!r}")
    g = torch.Generator().manual_seed(seed)
    kind = torch.randint(0, 4, (x.shape[0],), generator=g)
    level = torch.randint(1, 9, (x.shape[0],), generator=g)
    out = x.clone()
    for k, iters in enumerate((1, 2, 4, 8)):
        for lv in range(1, 9):
            idx = ((kind == k) & (level == lv)).nonzero().flatten().to(x.device)
            if idx.numel() == 0:
                continue
            e = eps * lv / 8
            xs, ys = x[idx], y[idx]
            out[idx] = (A.fgsm(target, xs, ys, eps=e) if iters == 1
                        else A.bim(target, xs, ys, eps=e, alpha=e / iters, steps=iters))
    return out


def pairs_from(gnr_name: str, *, device: str | torch.device = "cpu",
               progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(attacked, clean, labels, record)``: real FGSM pairs plus the pairs GNR artefact ``gnr_name`` makes.

    The first ``real`` images of ``data.sample(train, real + gnr, seed=pairs_seed)`` attacked with
    FGSM on the published ResNet-20, then the next ``gnr`` with the trained GNR's noise (seeded
    with the GNR's seed, so the same artefact always gives the same pairs).
    """
    key = (gnr_name, artifacts.identity(gnr_name), str(torch.device(device)))
    if key in _PAIRS:
        return _PAIRS[key]
    r = artifacts.get_spec(gnr_name).recipe
    gen, grec = artifacts.get(gnr_name, device=device, progress=progress)
    target, _ = artifacts.get("resnet20_cifar10", device=device)
    x, y = data.sample(data.load("cifar10", "train"), r.real + r.gnr, seed=r.pairs_seed)
    x, y = x.to(device), y.to(device)
    xr, yr = x[:r.real], y[:r.real]
    xa = attacked(target, xr, yr, attacks=r.attacks, eps=r.eps, seed=r.pairs_seed, progress=progress)
    seed = int(grec.training.get("seed", r.seed if r.seed is not None else 0))
    xg = x[r.real:]
    xga = gnr_mod.augment(gen, xg, seed=seed)
    out = (torch.cat([xa, xga]), torch.cat([xr, xg]), torch.cat([yr, y[r.real:]]),
           {"real_pairs": r.real, "gnr_pairs": r.gnr, "attacks": r.attacks, "gnr": grec.line(), "gnr_seed": seed,
            "gnr_final": grec.training.get("final", {})})
    _PAIRS[key] = out
    return out


def training_pairs(config: str, *, device: str | torch.device = "cpu",
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(attacked, clean, labels, record)``: the denoisers' CIFAR-10 training set of ``config`` (:func:`pairs_from`)."""
    if config not in ("full", "quick", "paper"):
        raise ValueError(f"config must be full|quick|paper, got {config!r}")
    return pairs_from("gnr_cifar10" + ("" if config == "full" else f"_{config}"), device=device, progress=progress)


def artifact_name(kind: str, config: str) -> str:
    """The :mod:`advviz.artifacts` name of a denoiser, e.g. ``"uddn_resnet20_cifar10_quick"``."""
    if kind not in GUIDANCE or config not in ("full", "quick", "paper"):
        raise ValueError(f"kind must be uddn|dae|pgd and config full|quick|paper, got {kind!r}, {config!r}")
    return f"{kind}_resnet20_cifar10" + ("" if config == "full" else f"_{config}")


def load_gnr(*, config: str = "full", device: str | torch.device = "cpu",
             progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The GNR noise generator behind the denoisers' pairs (shared: eval mode, frozen) and its record.

    Artefact ``gnr_cifar10`` (``"full"``: shipped, float16; the WGAN-GP of eq. 3, 300 steps on the
    FGSM 8/255 noise of 10,000 CIFAR-10 train images attacked on ResNet-20), ``gnr_cifar10_quick``
    or ``gnr_cifar10_paper`` (:class:`advviz.artifacts.recipes.GNRRecipe`), resolved by
    :func:`advviz.artifacts.get`.

    Returns:
        ``(generator, record)``: a :class:`advviz.defenses.gnr.NoiseGenerator` making
        ``(B, 3, 32, 32)`` noise in ``[-8/255, 8/255]``, and ``name``, ``recipe``, ``weights``,
        ``history`` (``step``, ``critic``, ``gen``, ``wasserstein``, ``seconds``), ``artifact``.
    """
    if config not in ("full", "quick", "paper"):
        raise ValueError(f"config must be full, quick or paper, got {config!r}")
    gen, rec = artifacts.get("gnr_cifar10" + ("" if config == "full" else f"_{config}"), device=device,
                             progress=progress)
    return gen, {"name": rec.name, "weights": rec.path, "recipe": rec.recipe, "recipe_hash": rec.recipe_hash,
                 "sha256": rec.sha256, "history": rec.training.get("history", []), "artifact": rec}


def load_denoiser(kind: str = "uddn", *, config: str = "full", device: str | torch.device = "cpu",
                  progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """A trained denoiser (shared: eval mode, frozen; do not change it) and its record.

    Resolved by :func:`advviz.artifacts.get` (shipped ``full`` files, the cache, else trained with
    :func:`advviz.artifacts.recipes.denoiser_recipe` on the pairs of its GNR artefact).

    Args:
        kind: ``"uddn"`` (logit-guided, eq. 5 with l = -1), ``"dae"`` (pixel loss, no laterals) or
            ``"pgd"`` (Liao et al.'s pixel-guided denoiser: the UDDN network with the pixel loss;
            no shipped weights, so the first call trains it: the quick recipe on the CPU in
            minutes, the full one far longer).
        config: ``"full"`` (shipped), ``"quick"`` or ``"paper"`` (the paper's schedule and attack
            mix at length: a GPU job; :func:`advviz.artifacts.recipes.denoiser_recipe`).

    Returns:
        ``(network, record)``; the record (name, recipe, guidance, file, training history, the
        pairs it was trained on) is read from the file, with the :class:`~advviz.artifacts.Record`
        under ``"artifact"``.
    """
    net, rec = artifacts.get(artifact_name(kind, config), device=device, progress=progress)
    record: dict[str, Any] = {"name": rec.name, "recipe": rec.recipe, "recipe_hash": rec.recipe_hash,
                              "sha256": rec.sha256, "guidance": GUIDANCE[kind], "network": _NETWORK[kind],
                              "weights": rec.path, "artifact": rec}
    for key in ("history", "pairs"):
        if key in rec.training:
            record[key] = rec.training[key]
    return net, record


def uddn(x: torch.Tensor, *, config: str = "full") -> torch.Tensor:
    """UDDN purifier (paper 004): U-Net residual denoiser guided by CIFAR-10 ResNet-20's logits.

    Args:
        x: ``(B, 3, H, W)`` images in [0, 1] (not modified).
        config: ``"full"`` or ``"quick"`` recipe (trained on first use, cached).

    Returns:
        ``(B, 3, H, W)`` denoised images ``clip(x - dx, 0, 1)``, ``x``'s dtype and device.
    """
    require_cifar_shape(x, "uddn")
    net, _ = load_denoiser("uddn", config=config, device=x.device)
    return purify(net, x)


def dae(x: torch.Tensor, *, config: str = "full") -> torch.Tensor:
    """DAE purifier (the UDDN paper's baseline): the network without laterals, pixel L1 loss."""
    require_cifar_shape(x, "dae")
    net, _ = load_denoiser("dae", config=config, device=x.device)
    return purify(net, x)


def _register() -> None:
    params = [CONFIG_PARAM]
    register_purifier("uddn", params=params, differentiable=True, quick={"config": "quick"}, channels=(3,),
                      paper="UDDN paper (004), Sec. 3: U-Net denoiser, x_hat = x* - dx (eq. 4), logit-guided loss (eq. 5)",
                      description="UDDN: U-Net residual denoiser guided by the classifier's logits")(uddn)
    register_purifier("dae", params=params, differentiable=True, quick={"config": "quick"}, channels=(3,),
                      paper="UDDN paper (004), Sec. 3.2: DAE baseline (UDDN without lateral connections, pixel loss)",
                      description="DAE: the UDDN network without lateral connections, pixel-level L1 loss")(dae)


_register()
