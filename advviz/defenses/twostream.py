"""The two-stream adversarial-example detector (paper 003: "high-resolution" vs "low-resolution" networks).

A high-resolution network (the paper: Inception-v3 on 299x299 ImageNet images) and a
low-resolution network (ResNet-32 on 32x32 CIFAR-10 images) classify the same image; their
labels are brought to a common label set with a *mapping table* (ImageNet -> CIFAR-10, "other"
for the rest) and compared by **Algorithm 1**; an image the two streams disagree on is rejected
as adversarial. **Algorithm 2** blacklists clients that keep sending rejected images.

Algorithm 1 (:func:`compare`), as implemented: take the top-5 ``(Y_high^i, P_high^i)`` of the
high network and the top-2 ``(Y_low^j, P_low^j)`` of the low network (softmax probabilities);
among the pairs ``(i, j)`` whose labels match in the common label set (a high label mapped to
"other" matches nothing) with ``P_high^i >= p1`` and ``P_low^j >= p2`` (the paper: p1 = 10%,
p2 = 20%), pick the pair with the largest product ``P_high^i * P_low^j``; its label is the
answer. No such pair: reject ("Adversarial Example"). Choices the paper's pseudo-code leaves open:

* it writes ``Y_high^{n(i)} = Y_low^{n(i)}`` with one index and ``Y >= p`` where ``P >= p`` is
  meant; read as all pairs ``(i, j)`` of the two top lists and the probabilities;
* thresholds are inclusive (``>=``, as printed); a tie in the product goes to the smallest
  ``i`` then the smallest ``j`` (the higher-ranked entries);
* pairs are formed per *entry* of the top lists: several ImageNet classes mapping to the same
  CIFAR-10 label (e.g. two dog breeds in the top-5) are not summed;
* the paper returns ``Y_high^{(i0)}`` (an ImageNet label); :class:`TwoStreamResult` carries
  both it (``high_labels``) and its common label (``labels``), which is what is scored.

Inputs: the high stream sees the image resized to its input size (bilinear when enlarging, area
averaging when shrinking), the low stream likewise to its own (:func:`resize`).

The mapping table (:func:`imagenet_cifar10_mapping`, data in ``imagenet_cifar10_map.json``)
maps 222 ImageNet-1k classes into the ten CIFAR-10 classes (airplane 2, automobile 10, bird 59,
cat 5, deer 3, dog 118, frog 3, horse 1, ship 14, truck 7), the remaining 778 to "other" (-1),
from the WordNet hierarchy (the JSON states the reason per class). The paper says 217 but does
not list them; the difference of 5 is not resolvable from the paper. The ImageNet-1k classes
contain no deer, so the three deer-like antelopes (hartebeest, impala, gazelle) stand in, as
the issue suggested; without them the table would have 219.

Usage::

    det = default_pair()                                   # offline: CIFAR-10 high/low pair, identity mapping
    det = TwoStream(imagenet_high("inception_v3"),         # the paper's pair, when ImageNet weights exist
                    models.load("resnet32_cifar10"), imagenet_cifar10_mapping())
    res = det(x)                                           # res.labels (B,), res.reject (B,)

On CIFAR-10 with the identity mapping, the high stream's top-5 covers half of the ten classes,
so Algorithm 1 is far less selective than with 1000 ImageNet classes (where a top-5 entry that
maps to the low stream's label is a strong agreement): a low stream fooled into a class the high
stream ranks in its top-5 with ``P >= p1`` is accepted with the wrong label. ``k_high`` can be
lowered to compensate.

Attacks (Table 1): *type I* attacks target the high-resolution network on the upsampled image
(:func:`attack_type_i`); *type II* attacks target the low-resolution network, on a
high-resolution image through the Fig. 4 pipeline (:func:`fig4_attack`: downscale, attack the
low network, upscale the difference, add it). The *type III* attack (:func:`attack_type_iii`,
advviz's adaptive attack; the paper has none) differentiates through both streams and Algorithm
1's agreement rule at once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advviz._modules import model_guard

__all__ = [
    "TYPE_I",
    "TYPE_II",
    "TYPE_III",
    "BlacklistResult",
    "TwoStream",
    "TwoStreamResult",
    "attack_type_i",
    "attack_type_ii",
    "attack_type_iii",
    "blacklist_curves",
    "blacklist_step",
    "compare",
    "default_pair",
    "fig4_attack",
    "identity_mapping",
    "imagenet_cifar10_mapping",
    "imagenet_high",
    "mapping_table",
    "plot_blacklist",
    "resize",
    "simulate_blacklist",
]

log = logging.getLogger(__name__)

OTHER = -1
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ---------------------------------------------------------------------------------------------
# mapping tables
# ---------------------------------------------------------------------------------------------

def mapping_table() -> dict[str, Any]:
    """The ImageNet -> CIFAR-10 table as stored (``imagenet_cifar10_map.json``): per CIFAR-10
    class, the ImageNet indices (with names) and the WordNet reason."""
    text = resources.files("advviz.defenses").joinpath("imagenet_cifar10_map.json").read_text()
    return json.loads(text)


def imagenet_cifar10_mapping() -> torch.Tensor:
    """``(1000,)`` int64: CIFAR-10 label (0..9) of each ImageNet-1k class index, ``-1`` for "other"."""
    table = mapping_table()
    out = torch.full((1000,), OTHER, dtype=torch.long)
    for label, name in enumerate(table["cifar10_classes"]):
        for idx in table["classes"][name]["imagenet"]:
            if out[int(idx)] != OTHER:
                raise ValueError(f"ImageNet class {idx} is mapped twice in the table")
            out[int(idx)] = label
    return out


def identity_mapping(num_classes: int) -> torch.Tensor:
    """``(num_classes,)`` ``arange``: for a high-resolution stream that already predicts the common labels."""
    return torch.arange(num_classes, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# Algorithm 1
# ---------------------------------------------------------------------------------------------

@dataclass
class TwoStreamResult:
    """Algorithm 1's verdict for a batch.

    Attributes:
        labels: ``(B,)`` int64 common label (CIFAR-10 index), ``-1`` where rejected.
        reject: ``(B,)`` bool, True = "Adversarial Example".
        high_labels: ``(B,)`` int64 the high stream's own class ``Y_high^{(i0)}``, ``-1`` where rejected.
        high_top: ``(B, k_high)`` the high stream's top classes (its own label space).
        high_prob: ``(B, k_high)`` their probabilities.
        low_top: ``(B, k_low)`` the low stream's top classes.
        low_prob: ``(B, k_low)`` their probabilities.
        pair: ``(B, 2)`` the chosen ``(i0, j0)`` (0-based ranks), ``-1`` where rejected.
    """

    labels: torch.Tensor
    reject: torch.Tensor
    high_labels: torch.Tensor
    high_top: torch.Tensor
    high_prob: torch.Tensor
    low_top: torch.Tensor
    low_prob: torch.Tensor
    pair: torch.Tensor


def compare(p_high: torch.Tensor, p_low: torch.Tensor, mapping: torch.Tensor | Sequence[int],
            low_mapping: torch.Tensor | Sequence[int] | None = None, *, p1: float = 0.10, p2: float = 0.20,
            k_high: int = 5, k_low: int = 2) -> TwoStreamResult:
    """Algorithm 1 on probability vectors, vectorised over the batch.

    Args:
        p_high: ``(B, K_high)`` softmax probabilities of the high-resolution stream.
        p_low: ``(B, K_low)`` softmax probabilities of the low-resolution stream.
        mapping: ``(K_high,)`` common label of each high class, ``-1`` for "other".
        low_mapping: ``(K_low,)`` common label of each low class (default: identity).
        p1: threshold on ``P_high`` (paper: 0.10), inclusive.
        p2: threshold on ``P_low`` (paper: 0.20), inclusive.
        k_high: top-k of the high stream (paper: 5).
        k_low: top-k of the low stream (paper: 2).

    Returns:
        :class:`TwoStreamResult`.
    """
    if p_high.ndim != 2 or p_low.ndim != 2 or p_high.shape[0] != p_low.shape[0]:
        raise ValueError(f"p_high and p_low must be (B, K) with the same B; got {tuple(p_high.shape)} "
                         f"and {tuple(p_low.shape)}")
    if not (0.0 <= p1 <= 1.0 and 0.0 <= p2 <= 1.0):
        raise ValueError(f"p1 and p2 are probabilities in [0, 1]; got {p1}, {p2}")
    dev = p_high.device
    mapping = torch.as_tensor(mapping, dtype=torch.long, device=dev)
    if mapping.shape != (p_high.shape[1],):
        raise ValueError(f"mapping must have one entry per high-stream class ({p_high.shape[1]}); got {tuple(mapping.shape)}")
    low_map = (torch.arange(p_low.shape[1], device=dev) if low_mapping is None
               else torch.as_tensor(low_mapping, dtype=torch.long, device=dev))
    if low_map.shape != (p_low.shape[1],):
        raise ValueError(f"low_mapping must have one entry per low-stream class ({p_low.shape[1]})")
    ph, ih = p_high.topk(min(k_high, p_high.shape[1]), dim=1)          # sorted, descending
    pl, il = p_low.topk(min(k_low, p_low.shape[1]), dim=1)
    ch, cl = mapping[ih], low_map[il]                                    # common labels (B, kh), (B, kl)
    match = (ch[:, :, None] == cl[:, None, :]) & (ch[:, :, None] != OTHER) & (cl[:, None, :] != OTHER)
    match &= (ph >= p1)[:, :, None] & (pl >= p2)[:, None, :]
    score = torch.where(match, ph[:, :, None] * pl[:, None, :], torch.full_like(ph[:, :, None] * pl[:, None, :], -1.0))
    flat = score.flatten(1).argmax(1)                                    # first maximum: smallest i, then j
    i0, j0 = flat // pl.shape[1], flat % pl.shape[1]
    reject = ~match.flatten(1).any(1)
    rows = torch.arange(p_high.shape[0], device=dev)
    labels = torch.where(reject, torch.full_like(i0, OTHER), ch[rows, i0])
    high_labels = torch.where(reject, torch.full_like(i0, OTHER), ih[rows, i0])
    pair = torch.where(reject[:, None], torch.full((len(rows), 2), OTHER, device=dev, dtype=torch.long),
                       torch.stack([i0, j0], 1))
    return TwoStreamResult(labels=labels, reject=reject, high_labels=high_labels, high_top=ih, high_prob=ph,
                           low_top=il, low_prob=pl, pair=pair)


def resize(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` images in [0, 1] to ``size``: bilinear when enlarging (the paper's
    "resize to 299x299"), area averaging when shrinking (the exact mean of each block for integer
    factors); unchanged when already that size. The result stays in [0, 1]."""
    size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    if size[0] >= h and size[1] >= w:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    if size[0] <= h and size[1] <= w:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0.0, 1.0)


def _input_hw(model: nn.Module, default: int) -> tuple[int, int]:
    size = getattr(model, "input_size", None)
    if size is None:
        return (default, default)
    return (int(size[-2]), int(size[-1]))


class TwoStream:
    """The two-stream detector: a thin object holding the two networks and Algorithm 1's settings.

    Args:
        high: high-resolution classifier (``[0, 1]`` input of its ``input_size``; logits).
        low: low-resolution classifier.
        mapping: ``(K_high,)`` common label per high class (``-1``: "other"); e.g.
            :func:`imagenet_cifar10_mapping` or :func:`identity_mapping`.
        p1: threshold on the high stream's probabilities (paper 0.10).
        p2: threshold on the low stream's probabilities (paper 0.20).
        low_mapping: ``(K_low,)`` common label per low class (default identity).
        k_high: top-k of the high stream (5); k_low: top-k of the low stream (2).
        high_size: the high stream's input ``(H, W)`` (default its ``input_size``, else 299).
        low_size: the low stream's input ``(H, W)`` (default its ``input_size``, else 32).
        batch_size: images per forward pass.
    """

    def __init__(self, high: nn.Module, low: nn.Module, mapping: torch.Tensor | Sequence[int], *,
                 p1: float = 0.10, p2: float = 0.20, low_mapping: torch.Tensor | Sequence[int] | None = None,
                 k_high: int = 5, k_low: int = 2, high_size: int | tuple[int, int] | None = None,
                 low_size: int | tuple[int, int] | None = None, batch_size: int = 256) -> None:
        self.high, self.low = high, low
        self.mapping = torch.as_tensor(mapping, dtype=torch.long)
        self.low_mapping = None if low_mapping is None else torch.as_tensor(low_mapping, dtype=torch.long)
        self.p1, self.p2, self.k_high, self.k_low = float(p1), float(p2), int(k_high), int(k_low)
        self.high_size = _input_hw(high, 299) if high_size is None else (
            (high_size, high_size) if isinstance(high_size, int) else tuple(high_size))
        self.low_size = _input_hw(low, 32) if low_size is None else (
            (low_size, low_size) if isinstance(low_size, int) else tuple(low_size))
        self.batch_size = int(batch_size)

    def high_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` resized to the high stream's input size (bilinear upsampling)."""
        return resize(x, self.high_size)

    def low_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` resized to the low stream's input size (area downsampling)."""
        return resize(x, self.low_size)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax probabilities ``(p_high (B, K_high), p_low (B, K_low))`` of ``x`` ``(B, C, H, W)`` in [0, 1]."""
        hs, ls = [], []
        for s in range(0, x.shape[0], self.batch_size):
            xb = x[s:s + self.batch_size]
            with model_guard(self.high, freeze=False), model_guard(self.low, freeze=False):
                hs.append(self.high(self.high_input(xb)).softmax(1))
                ls.append(self.low(self.low_input(xb)).softmax(1))
        return torch.cat(hs), torch.cat(ls)

    def __call__(self, x: torch.Tensor) -> TwoStreamResult:
        """Algorithm 1 on images ``x`` ``(B, C, H, W)`` in [0, 1] of any size."""
        p_high, p_low = self.probabilities(x)
        return compare(p_high, p_low, self.mapping.to(p_high.device),
                       None if self.low_mapping is None else self.low_mapping.to(p_low.device),
                       p1=self.p1, p2=self.p2, k_high=self.k_high, k_low=self.k_low)

    def __repr__(self) -> str:
        return (f"TwoStream(high={type(self.high).__name__}@{self.high_size}, low={type(self.low).__name__}@"
                f"{self.low_size}, p1={self.p1}, p2={self.p2}, top-{self.k_high}/top-{self.k_low})")


def default_pair(*, dataset: str = "cifar10", p1: float = 0.10, p2: float = 0.20,
                 device: str | torch.device | None = None) -> TwoStream:
    """The offline default detector for ``dataset``, identity mapping.

    ``"cifar10"``: ``highres_resnet8_cifar10`` (64x64, shipped with advviz) as the high stream and
    ``resnet32_cifar10`` (32x32, the paper's low stream) as the low one. ``"digits"`` (works on
    any machine): ``highres_resnet8_digits`` (64x64, trained by advviz on first use, about a
    minute on a CPU) and ``lenet5_digits`` (28x28).
    """
    from advviz import models

    pairs = {"cifar10": ("highres_resnet8_cifar10", "resnet32_cifar10"),
             "digits": ("highres_resnet8_digits", "lenet5_digits")}
    if dataset not in pairs:
        raise ValueError(f"no default two-stream pair for {dataset!r}; choose one of {', '.join(pairs)}")
    high_name, low_name = pairs[dataset]
    high = models.load(high_name, device=device)
    low = models.load(low_name, device=device)
    return TwoStream(high, low, identity_mapping(10), p1=p1, p2=p2)


class _ImageNetWrapper(nn.Module):
    """A torchvision ImageNet classifier taking ``[0, 1]`` input (ImageNet normalisation inside)."""

    def __init__(self, net: nn.Module, size: int) -> None:
        super().__init__()
        from advviz.models import Normalize

        if getattr(net, "transform_input", False):
            raise ValueError("build torchvision's inception_v3 with transform_input=False: the wrapper "
                             "normalises the input itself")
        if isinstance(net, _inception_class()):
            # the Google Inception-v3 weights expect (x - 0.5) / 0.5, not ImageNet's mean/std
            self.normalize = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        else:
            self.normalize = Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        self.net = net
        self.input_size = (3, size, size)
        self.num_classes = 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(self.normalize(x))
        return out.logits if hasattr(out, "logits") else out


def _inception_class() -> type:
    from torchvision.models import Inception3

    return Inception3


_IMAGENET_ARCHS = {"inception_v3": ("Inception_V3_Weights", 299), "resnet50": ("ResNet50_Weights", 224),
                   "vgg16": ("VGG16_Weights", 224), "resnet152": ("ResNet152_Weights", 224)}


def imagenet_high(arch: str = "inception_v3", *, weights: str | os.PathLike[str] | None = None,
                  device: str | torch.device | None = None) -> nn.Module:
    """The paper's high-resolution stream: a torchvision ImageNet network (default Inception-v3, 299x299).

    Args:
        arch: ``"inception_v3"`` (the paper's), ``"resnet50"``, ``"resnet152"`` or ``"vgg16"``.
        weights: a local state-dict file (``.pth`` read with ``weights_only=True``, or
            ``.safetensors``). Without it, torchvision's ``IMAGENET1K_V1`` weights are used from
            torch's hub cache, downloaded when allowed (not under ``$ADVVIZ_OFFLINE``).

    Returns:
        an eval-mode module taking ``(B, 3, S, S)`` in [0, 1] and returning 1000 logits; use it
        with :func:`imagenet_cifar10_mapping`. Inside it the pixels are normalised as the weights
        expect: ``(x - 0.5) / 0.5`` for Inception-v3 (Google's weights; built with
        ``transform_input=False`` so torchvision does not transform them a second time),
        ImageNet mean/std for the others.

    Raises:
        KeyError: unknown ``arch``.
        advviz.models.CheckpointError: no weights available (offline, no file): the message says
            where to put them.
    """
    import torchvision

    from advviz._paths import offline
    from advviz.models import CheckpointError, load_state_file

    if arch not in _IMAGENET_ARCHS:
        raise KeyError(f"unknown ImageNet architecture {arch!r}; choose one of {', '.join(_IMAGENET_ARCHS)}")
    enum_name, size = _IMAGENET_ARCHS[arch]
    builder = getattr(torchvision.models, arch)
    # Inception-v3: transform_input stays off whichever way the weights come (torchvision turns it
    # on only for its own weight enum); _ImageNetWrapper feeds (x - 0.5) / 0.5, what they expect.
    extra = {"aux_logits": True, "init_weights": False, "transform_input": False} if arch == "inception_v3" else {}
    if weights is not None:
        net = builder(weights=None, **extra)
        state = load_state_file(weights)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{weights} does not fit torchvision's {arch}: {exc}") from exc
    else:
        wenum = getattr(torchvision.models, enum_name).IMAGENET1K_V1
        hub_file = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(wenum.url))
        if offline() and not os.path.isfile(hub_file):
            raise CheckpointError(
                f"torchvision's ImageNet weights for {arch} are not in {hub_file} and downloads are disabled "
                f"(ADVVIZ_OFFLINE); pass weights=PATH to a state-dict file, or use the offline default pair "
                f"(advviz.defenses.twostream.default_pair())")
        try:
            net = builder(weights=wenum, **extra)
        except Exception as exc:  # URLError, HTTPError, hash mismatch ...
            raise CheckpointError(f"could not get torchvision's ImageNet weights for {arch} ({type(exc).__name__}: "
                                  f"{exc}); with no network pass weights=PATH to a state-dict file") from exc
    model = _ImageNetWrapper(net, size).eval()
    if device is not None:
        model.to(device)
    return model


# ---------------------------------------------------------------------------------------------
# type I / type II attacks (Table 1), Fig. 4
# ---------------------------------------------------------------------------------------------

TYPE_I = ("fgsm", "bim", "mifgsm", "deepfool", "universal")
TYPE_II = ("fgsm", "bim", "one_pixel", "three_pixel", "cw_l2")
TYPE_III = ("joint_pgd",)


def _run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: Mapping[str, Any],
                seed: int, batch: int) -> torch.Tensor:
    import inspect

    from advviz import attacks

    kw = dict(cfg)
    if name == "three_pixel":
        name, kw = "one_pixel", {**kw, "pixels": 3}
    spec = attacks.get(name)
    if "seed" in inspect.signature(spec.fn).parameters:
        kw.setdefault("seed", seed)
    if name == "universal":  # one perturbation for the whole set, not per batch
        return spec.fn(model, x, y, **kw)
    return torch.cat([spec.fn(model, x[s:s + batch], y[s:s + batch], **kw) for s in range(0, x.shape[0], batch)])


def attack_type_i(ts: TwoStream, name: str, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
                  batch: int = 128, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
                  **cfg: Any) -> torch.Tensor:
    """Type I attack: attack the high stream on ``x`` upsampled to its input size.

    Args:
        ts: the detector.
        name: an attack of :data:`TYPE_I` (any registered attack works).
        x: ``(B, C, H, W)`` images in [0, 1] (e.g. 32x32 CIFAR-10; upsampled first, as the paper
            resizes CIFAR-10 to 299x299 before a type I attack).
        y: ``(B,)`` labels in the *high stream's* label space.
        seed: attack seed.
        fit: ``universal`` only: ``(x_fit, y_fit)``, other images (same layout as ``x``, ``y``)
            on which the universal perturbation is computed before it is added to ``x``, as
            Moosavi-Dezfooli et al. fit it on training images and evaluate it on unseen ones.
            ``None``: fitted on ``x`` itself (the registered attack's behaviour).
        **cfg: the attack's keyword options.

    Returns:
        the adversarial image at the high stream's resolution, ``(B, C, *ts.high_size)`` in [0, 1].

    Raises:
        ValueError: ``fit`` given for another attack than ``universal``.
    """
    if fit is not None:
        if name != "universal":
            raise ValueError(f"fit=(x_fit, y_fit) is for the universal perturbation only, not {name!r}")
        from advviz.attacks import universal_perturbation

        kw = dict(cfg)
        kw.setdefault("seed", seed)
        v = universal_perturbation(ts.high, ts.high_input(fit[0]), fit[1].to(x.device), **kw)
        return (ts.high_input(x) + v).clamp(0.0, 1.0).detach()
    return _run_attack(name, ts.high, ts.high_input(x), y, cfg, seed, batch)


def fig4_attack(low: nn.Module, x: torch.Tensor, y: torch.Tensor,
                attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor], *,
                low_size: int | tuple[int, int] = 32) -> torch.Tensor:
    """Fig. 4: a type II attack on a high-resolution image.

    ``x_low = resize(x, low_size)`` (area); ``x_low_adv = attack(low, x_low, y)``;
    ``d = x_low_adv - x_low``; ``x_adv = clip(x + upsample(d, x's size), 0, 1)`` (bilinear).
    When ``x`` is already at ``low_size`` this is the attack itself.

    Args:
        low: the low-resolution network.
        x: ``(B, C, H, W)`` images in [0, 1].
        y: ``(B,)`` labels of the low network.
        attack: ``(model, x, y) -> x_adv``.
        low_size: the low network's input size.

    Returns:
        ``(B, C, H, W)`` in [0, 1].
    """
    x_low = resize(x, low_size)
    d = attack(low, x_low, y) - x_low
    if tuple(d.shape[-2:]) != tuple(x.shape[-2:]):
        d = F.interpolate(d, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return (x + d).clamp(0.0, 1.0).detach()


def attack_type_ii(ts: TwoStream, name: str, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
                   batch: int = 128, **cfg: Any) -> torch.Tensor:
    """Type II attack: attack the low stream through :func:`fig4_attack` at ``x``'s resolution.

    ``name`` is one of :data:`TYPE_II` (``three_pixel`` is ``one_pixel`` with 3 pixels); ``y``
    are the low stream's labels. Returns ``(B, C, H, W)`` at ``x``'s size, in [0, 1].
    """
    return fig4_attack(ts.low, x, y, lambda m, xl, yl: _run_attack(name, m, xl, yl, cfg, seed, batch),
                       low_size=ts.low_size)


def _common_log_probs(logits: torch.Tensor, mapping: torch.Tensor, n_common: int) -> torch.Tensor:
    """``(B, n_common)``: per common label ``c``, the largest log-softmax over the stream's classes mapped
    to ``c`` (``-inf`` where none is): the entry Algorithm 1 would pair for ``c``."""
    logp = logits.float().log_softmax(1)
    out = logp.new_full((logp.shape[0], n_common), float("-inf"))
    for c in range(n_common):
        cols = (mapping == c).nonzero().flatten()
        if len(cols):
            out[:, c] = logp[:, cols].max(1).values
    return out


def attack_type_iii(ts: TwoStream, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
                    alpha: float = 1 / 255, steps: int = 10, seed: int | None = 0, random_start: bool = False,
                    batch: int = 128) -> torch.Tensor:
    """Type III (adaptive) attack: L-inf PGD through both streams and Algorithm 1's agreement rule.

    Type I attacks fool only the high stream, type II only the low one, so the streams disagree and
    Algorithm 1 rejects; an attacker who knows the detector attacks both at once and makes them
    *agree on a wrong label* (Athalye et al. 2018; Tramer et al. 2020: attack the whole defense).
    With ``log P_s(c)`` the stream's log-softmax of common label ``c`` (the largest over the
    stream's classes that map to ``c``, the entry Algorithm 1 pairs), each step

    1. picks the target ``t = argmax_{c != y} [log P_high(c) + log P_low(c)]``: the wrong label the
       two streams jointly rank highest at the current iterate (re-chosen every step);
    2. descends ``L(x') = -log P_high(t | up(x')) - log P_low(t | down(x'))``, i.e. ascends
       ``log(P_high(t) * P_low(t))``, the log of Algorithm 1's score of the pair ``(t, t)``:
       ``x' <- clip_{x, eps}(x' - alpha * sign(grad L))``. The gradient passes through the
       resizing of each stream (:meth:`TwoStream.high_input` / :meth:`~TwoStream.low_input`,
       bilinear and area interpolation are differentiable).

    Raising both probabilities of ``t`` satisfies the thresholds ``P_high >= p1``,
    ``P_low >= p2`` and, once ``t`` leads both top lists, makes ``(t, t)`` the pair of largest
    product, so Algorithm 1 answers ``t``. The rule itself (top-k, thresholds, argmax) is
    piecewise constant, so it is not differentiated: it is checked at the start and after every
    step, and each image keeps the first iterate Algorithm 1 accepts with a wrong label (the last
    iterate if none), so success is judged by the detector itself, not by the surrogate loss.

    Args:
        ts: the detector.
        x: ``(B, C, H, W)`` images in ``[0, 1]`` (not modified); the budget is on this resolution
            (as the type II attacks', :func:`fig4_attack`).
        y: ``(B,)`` true labels in the common label space.
        eps: L-inf budget on the ``[0, 1]`` scale (default 8/255, the type II budget).
        alpha: step size (default 1/255, the type II BIM's).
        steps: iterations (default 10, the type II BIM's).
        seed: seeds the random start.
        random_start: start from a uniform point of the eps ball (default ``False``, as BIM).
        batch: images per batch.

    Returns:
        ``(B, C, H, W)`` adversarial images in ``[0, 1]`` within ``eps`` of ``x``, ``x``'s dtype
        and device.
    """
    from advviz.attacks._core import (check_budget, check_labels, generator, model_dtype, model_guard,
                                      project_linf, to_input_dtype, working_copy)

    eps = check_budget("eps", eps)
    alpha = check_budget("alpha", alpha)
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    y = check_labels(y, x)
    dev = x.device
    high_map = ts.mapping.to(dev)
    low_map = (torch.arange(_n_out(ts.low, x[:1].to(model_dtype(ts.low) or torch.float32), ts.low_input), device=dev)
               if ts.low_mapping is None
               else ts.low_mapping.to(dev))
    n_common = int(max(int(high_map.max()), int(low_map.max()))) + 1
    gen = generator(seed, dev)
    # the streams' own dtype (float32 unless a stream is float64); half precision is computed in float32
    dt_high, dt_low = model_dtype(ts.high) or torch.float32, model_dtype(ts.low) or torch.float32
    work = torch.float64 if torch.float64 in (dt_high, dt_low) else torch.float32
    out = []
    with model_guard(ts.high), model_guard(ts.low):
        for s in range(0, x.shape[0], batch):
            xb, yb = working_copy(x[s:s + batch]).to(work), y[s:s + batch]
            xa = xb.clone()
            if random_start:
                xa = (xa + (torch.rand(xa.shape, generator=gen, device=dev, dtype=xa.dtype) * 2 - 1) * eps).clamp(0, 1)
            best = xa.clone()
            done = _accepted_wrong(ts, xa, yb, dt_high, dt_low)  # already accepted with a wrong label: keep it
            for _ in range(int(steps) if not bool(done.all()) else 0):
                with torch.enable_grad():
                    xi = xa.detach().requires_grad_(True)
                    lh = _common_log_probs(ts.high(ts.high_input(xi).to(dt_high)), high_map, n_common)
                    ll = _common_log_probs(ts.low(ts.low_input(xi).to(dt_low)), low_map, n_common)
                    joint = (lh + ll).detach().clone()
                    joint[torch.arange(len(yb), device=dev), yb] = float("-inf")
                    t = joint.argmax(1)
                    rows = torch.arange(len(yb), device=dev)
                    loss = -(lh[rows, t] + ll[rows, t]).sum()
                    (g,) = torch.autograd.grad(loss, xi)
                xa = project_linf(xa - alpha * g.sign(), xb, eps).clamp(0.0, 1.0).detach()
                ok = _accepted_wrong(ts, xa, yb, dt_high, dt_low)
                newly = ok & ~done
                best[newly] = xa[newly]
                done |= ok
                if bool(done.all()):
                    break
            best[~done] = xa[~done]
            out.append(best)
    return to_input_dtype(torch.cat(out) if out else working_copy(x), x, eps=eps)


def _accepted_wrong(ts: TwoStream, x: torch.Tensor, y: torch.Tensor, dt_high: torch.dtype,
                    dt_low: torch.dtype) -> torch.Tensor:
    """``(B,)`` bool: Algorithm 1 accepts ``x`` with a label other than ``y``."""
    with torch.no_grad():
        p_high = ts.high(ts.high_input(x).to(dt_high)).float().softmax(1)
        p_low = ts.low(ts.low_input(x).to(dt_low)).float().softmax(1)
    res = compare(p_high, p_low, ts.mapping.to(x.device), None if ts.low_mapping is None else ts.low_mapping.to(x.device),
                  p1=ts.p1, p2=ts.p2, k_high=ts.k_high, k_low=ts.k_low)
    return ~res.reject & (res.labels != y)


def _n_out(model: nn.Module, x1: torch.Tensor, prep: Callable[[torch.Tensor], torch.Tensor]) -> int:
    with torch.no_grad():
        with model_guard(model, freeze=False):
            return int(model(prep(x1)).shape[1])


# ---------------------------------------------------------------------------------------------
# Algorithm 2: blacklisting
# ---------------------------------------------------------------------------------------------

def blacklist_step(cc: torch.Tensor, blacklisted: torch.Tensor, fake: torch.Tensor, *, cc_max: int = 15,
                   threshold: int = 3, release: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image from each client through Algorithm 2, vectorised over clients.

    Per client (``IP``) with confidence counter ``CC`` and blacklist flag:

    1. ``CC += 1`` if the image was rejected (``Img^RoF = 0``, ``fake``), else ``CC -= 1``;
       ``CC`` is clamped to ``[0, cc_max]`` (the paper: ``CC[IP] in [0, 15]``).
    2. A blacklisted client is removed from the blacklist when ``CC == release`` (0) and then
       answered with the detector's label; otherwise it gets no answer.
    3. A client not on the blacklist is added when ``CC >= threshold`` (3) and gets no answer;
       otherwise it is answered.

    The printed pseudo-code is garbled in two places, read as follows: "``CC[IP] <- Y_n``" on
    blacklisting is taken to be the answer being withheld (the counter is not overwritten with a
    label); the missing ``else Cls_n <- Y_n`` branches are the answers of steps 2-3. Blacklisted
    clients keep sending (and being scored), which is how the counter can return to 0.

    Args:
        cc: ``(N,)`` int counters. blacklisted: ``(N,)`` bool. fake: ``(N,)`` bool, True = rejected.

    Returns:
        ``(cc, blacklisted, answered)``, new tensors.
    """
    cc = (cc + torch.where(fake, 1, -1)).clamp(0, cc_max)
    release_now = blacklisted & (cc <= release)
    add_now = ~blacklisted & (cc >= threshold)
    new_bl = (blacklisted & ~release_now) | add_now
    answered = ~new_bl
    return cc, new_bl, answered


@dataclass
class BlacklistResult:
    """Fig. 5 data: fraction of each client type blacklisted after each image sent.

    Attributes:
        images_sent: ``(R,)`` 1..R. normal: ``(R,)`` fraction of normal clients blacklisted.
        adversarial: ``(R,)`` fraction of adversarial clients blacklisted.
        normal_ever: number of normal clients blacklisted at least once. config: the settings.
    """

    images_sent: np.ndarray
    normal: np.ndarray
    adversarial: np.ndarray
    normal_ever: int
    adversarial_answered_wrong: int
    config: dict[str, Any]


def simulate_blacklist(normal_reject: torch.Tensor, adversarial_reject: torch.Tensor, *, n_clients: int = 10_000,
                       n_adversarial: int = 1_000, rounds: int = 20, cc_max: int = 15, threshold: int = 3,
                       release: int = 0, seed: int = 0, adversarial_correct: torch.Tensor | None = None) -> BlacklistResult:
    """Algorithm 2 on a simulated network (Fig. 5), vectorised over clients.

    Every round each client sends one image: a normal client one drawn at random (with
    replacement, seeded) from the clean images, an adversarial client one from the adversarial
    images; the image's detection outcome is its precomputed Algorithm 1 verdict.

    Args:
        normal_reject: ``(M,)`` bool, Algorithm 1 rejected clean image m.
        adversarial_reject: ``(M',)`` bool for the adversarial images.
        n_clients: all clients (paper 10,000). n_adversarial: adversarial ones (paper 1,000).
        rounds: images sent per client. cc_max, threshold, release: Algorithm 2's constants (15, 3, 0).
        seed: seed of the draws.
        adversarial_correct: optional ``(M',)`` bool, the accepted adversarial image got the true
            label; counts answers that were wrong (``adversarial_answered_wrong``).
    """
    if not 0 <= n_adversarial <= n_clients:
        raise ValueError(f"n_adversarial must be in [0, n_clients]; got {n_adversarial} of {n_clients}")
    if len(normal_reject) == 0 or len(adversarial_reject) == 0:
        raise ValueError("normal_reject and adversarial_reject need at least one image each")
    if not 0 <= release < threshold <= cc_max:
        raise ValueError(f"need 0 <= release < threshold <= cc_max; got {release}, {threshold}, {cc_max}")
    gen = torch.Generator().manual_seed(seed)
    nr = torch.as_tensor(normal_reject, dtype=torch.bool).cpu()
    ar = torch.as_tensor(adversarial_reject, dtype=torch.bool).cpu()
    n_norm = n_clients - n_adversarial
    cc = torch.zeros(n_clients, dtype=torch.long)
    bl = torch.zeros(n_clients, dtype=torch.bool)
    ever = torch.zeros(n_clients, dtype=torch.bool)
    frac_n, frac_a = [], []
    wrong = 0
    for _ in range(rounds):
        i_n = torch.randint(len(nr), (n_norm,), generator=gen)
        i_a = torch.randint(len(ar), (n_adversarial,), generator=gen)
        fake = torch.cat([nr[i_n], ar[i_a]])
        cc, bl, answered = blacklist_step(cc, bl, fake, cc_max=cc_max, threshold=threshold, release=release)
        ever |= bl
        if adversarial_correct is not None:
            ok = torch.as_tensor(adversarial_correct, dtype=torch.bool).cpu()[i_a]
            wrong += int((answered[n_norm:] & ~ar[i_a] & ~ok).sum())
        frac_n.append(float(bl[:n_norm].float().mean()) if n_norm else 0.0)
        frac_a.append(float(bl[n_norm:].float().mean()) if n_adversarial else 0.0)
    cfg = {"n_clients": n_clients, "n_adversarial": n_adversarial, "rounds": rounds, "cc_max": cc_max,
           "threshold": threshold, "release": release, "seed": seed,
           "normal_reject_rate": float(nr.float().mean()), "adversarial_reject_rate": float(ar.float().mean())}
    return BlacklistResult(images_sent=np.arange(1, rounds + 1), normal=np.array(frac_n), adversarial=np.array(frac_a),
                           normal_ever=int(ever[:n_norm].sum()), adversarial_answered_wrong=wrong, config=cfg)


def blacklist_curves(normal_reject: torch.Tensor, adversarial_reject: Mapping[str, torch.Tensor],
                     **kwargs: Any) -> dict[str, BlacklistResult]:
    """One :func:`simulate_blacklist` per attack (Fig. 5's polylines): ``{attack: result}``."""
    return {name: simulate_blacklist(normal_reject, rej, **kwargs) for name, rej in adversarial_reject.items()}


def plot_blacklist(curves: BlacklistResult | Mapping[str, BlacklistResult], ax: Any = None) -> Any:
    """Fig. 5: fraction of clients blacklisted against images sent; returns the figure.

    Args:
        curves: one result or ``{attack: result}``; the normal clients' curve is drawn once
            (from the first result).
        ax: optional matplotlib axes.
    """
    import matplotlib.pyplot as plt

    if isinstance(curves, BlacklistResult):
        curves = {"adversarial": curves}
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    first = None
    for name, res in curves.items():
        first = first or res
        ax.plot(res.images_sent, res.adversarial, marker=".", label=f"{name} clients")
    if first is not None:
        ax.plot(first.images_sent, first.normal, color="k", linestyle="--", label="normal clients")
    ax.set_xlabel("images sent per client")
    ax.set_ylabel("fraction blacklisted")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Algorithm 2: blacklisting (Fig. 5)")
    return fig
