"""The two-stream adversarial-example detector (paper 003: "high-resolution" vs "low-resolution" networks).

A high-resolution network (the paper: Inception-v3 on 299x299 ImageNet images) and a
low-resolution network (ResNet-32 on 32x32 CIFAR-10 images) classify the same image; their
labels are brought to a common label set with a *mapping table* (ImageNet -> CIFAR-10, "other"
for the rest) and compared by **Algorithm 1**; an image the two streams disagree on is rejected
as adversarial. (**Algorithm 2**, which blacklists clients that keep sending rejected images, is
:mod:`advviz.papers.twostream_blacklist`.)

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

The paper's attacks on the detector (Table 1: types I and II, Fig. 4, and advviz's adaptive type
III) live in :mod:`advviz.papers.twostream_attacks`, and Algorithm 2 (blacklisting clients) in
:mod:`advviz.papers.twostream_blacklist`: the detector stays a defense, the experiments on it are
the paper's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import Inception3

from advviz import artifacts, models
from advviz._modules import model_guard
from advviz._weights import CheckpointError, load_state_file
from advviz.models import Normalize

__all__ = [
    "OTHER",
    "CIFAR10_CLASSES",
    "TwoStream",
    "TwoStreamResult",
    "compare",
    "default_pair",
    "identity_mapping",
    "imagenet_cifar10_mapping",
    "imagenet_high",
    "mapping_table",
    "resize",
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
        if getattr(net, "transform_input", False):
            raise ValueError("build torchvision's inception_v3 with transform_input=False: the wrapper "
                             "normalises the input itself")
        if isinstance(net, Inception3):
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


#: the high-resolution streams of the paper: torchvision architecture -> input side (their weights
#: are the store's artefacts ``<arch>_imagenet``, :mod:`advviz.zoo.hub`)
_IMAGENET_ARCHS = {"inception_v3": 299, "resnet50": 224, "vgg16": 224, "resnet152": 224}


def imagenet_high(arch: str = "inception_v3", *, weights: str | os.PathLike[str] | None = None,
                  device: str | torch.device | None = None) -> nn.Module:
    """The paper's high-resolution stream: a torchvision ImageNet network (default Inception-v3, 299x299).

    Args:
        arch: ``"inception_v3"`` (the paper's), ``"resnet50"``, ``"resnet152"`` or ``"vgg16"``.
        weights: a local state-dict file (``.pth`` read with ``weights_only=True``, or
            ``.safetensors``). Without it, torchvision's ``IMAGENET1K_V1`` weights, the artefact
            ``<arch>_imagenet`` of the store (a weight folder, advviz's cache or torch's hub
            cache; downloaded when allowed, not under ``$ADVVIZ_OFFLINE``).

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
    if arch not in _IMAGENET_ARCHS:
        raise KeyError(f"unknown ImageNet architecture {arch!r}; choose one of {', '.join(_IMAGENET_ARCHS)}")
    size = _IMAGENET_ARCHS[arch]
    name = f"{arch}_imagenet"
    if weights is not None:
        # Inception-v3: transform_input stays off whichever way the weights come (torchvision turns it
        # on only for its own weight enum); _ImageNetWrapper feeds (x - 0.5) / 0.5, what they expect.
        net = artifacts.get_spec(name).make()
        try:
            net.load_state_dict(load_state_file(weights), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{weights} does not fit torchvision's {arch}: {exc}") from exc
    else:
        try:
            net = artifacts.fresh(name)
        except artifacts.ArtifactError as exc:
            raise CheckpointError(f"{exc}; or pass weights=PATH to a state-dict file, or use the offline default "
                                  "pair (advviz.defenses.twostream.default_pair())") from exc
    model = _ImageNetWrapper(net, size).eval()
    if device is not None:
        model.to(device)
    return model
