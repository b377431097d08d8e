"""The explorer's shared state: one current model, one current image, one adversarial image.

:class:`ExplorerState` is a small observable object. Components subscribe to topics with
:meth:`ExplorerState.observe` and are called back, in the thread that made the change, when
the topic changes:

* ``"model"``: :meth:`set_model` (a newly loaded or retrained model; an image the new model
  cannot take is dropped first, so no component ever draws an old image with a new model);
* ``"image"``: :meth:`set_image` (a dataset image or an upload; clears the adversarial image)
  and :meth:`set_label` (the user names the true class of an upload);
* ``"adversarial"``: :meth:`set_adversarial` (an attack's result, or ``None``).

Each change of the model or the image also counts up that topic's *version*
(:meth:`ExplorerState.versions`): a background job (:mod:`advviz.widgets._jobs`) records the
versions it started with, and drops its result when the model or the image changed meanwhile.

It also knows which datasets and pretrained models this machine can use, and picks the
default pairing: CIFAR-10 + ResNet-20 when both are present (``$ADVVIZ_DATA`` and
``$ADVVIZ_WEIGHTS``) or downloadable, else the offline digits + LeNet-5.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advviz import artifacts, metrics, models
from advviz._modules import module_device
from advviz._paths import data_root
from advviz.data import CIFAR10_CLASSES, DIGIT_CLASSES

__all__ = ["ExplorerState", "Prediction", "available_datasets", "available_models", "default_pairing",
           "dataset_classes", "model_dataset"]

TOPICS = ("model", "image", "adversarial")


def available_datasets() -> list[str]:
    """Datasets usable here without a download: ``digits`` always, ``mnist``/``cifar10`` when on disk."""
    root = data_root()
    out = ["digits"]
    mnist_dirs = (root / "MNIST" / "raw", root / "mnist" / "raw", root / "mnist")
    if any(d.is_dir() and any(p.name.startswith("t10k-images") for p in d.iterdir()) for d in mnist_dirs):
        out.append("mnist")
    if (root / "cifar-10-batches-py").is_dir() or (root / "cifar10-jpg" / "test").is_dir():
        out.append("cifar10")
    return out


def available_models() -> list[str]:
    """Pretrained entries usable here: advviz-trained ones (trained on first use) and files on disk.

    Only models that take their dataset's images at native size are listed (the explorer feeds
    images as they are; e.g. the two-stream detector's 64x64 network is left out).
    """
    names = []
    for name in models.list_models(pretrained=True):
        if models.get_weights_spec(name).input_size is not None:
            continue
        if artifacts.status(name)["where"] != "unavailable":
            names.append(name)
    return names


def model_dataset(model_name: str) -> str | None:
    """The dataset a pretrained entry was trained on (``None`` for an unknown name)."""
    try:
        return models.get_weights_spec(model_name).dataset
    except KeyError:
        return None


def default_pairing() -> tuple[str, str]:
    """``(dataset, pretrained model)``: CIFAR-10 + ResNet-20 when usable, else digits + LeNet-5."""
    if "cifar10" in available_datasets() and "resnet20_cifar10" in available_models():
        return "cifar10", "resnet20_cifar10"
    return "digits", "lenet5_digits"


def dataset_classes(name: str) -> list[str]:
    """Class names of a dataset without loading it."""
    return list(CIFAR10_CLASSES if name == "cifar10" else DIGIT_CLASSES)


@dataclass(frozen=True)
class Prediction:
    """A model's prediction for one image: probabilities ``(K,)``, top class and its confidence."""

    probs: torch.Tensor
    label: int
    confidence: float


class ExplorerState:
    """The current model and image shared by every component.

    Args:
        model: a classifier taking ``(B, C, H, W)`` in ``[0, 1]`` (put in eval mode).
        model_name: a name for display (``"resnet20_cifar10"``).
        classes: class names (default: ``model.classes`` or the model's dataset's, else indices).
        device: where the model runs (default: where its parameters are).
    """

    def __init__(self, model: nn.Module, *, model_name: str = "", classes: list[str] | None = None,
                 device: str | torch.device | None = None, dataset: str | None = None) -> None:
        self._listeners: dict[str, list[Callable[[ExplorerState], Any]]] = {t: [] for t in TOPICS}
        self._late: dict[str, list[Callable[[ExplorerState], Any]]] = {t: [] for t in TOPICS}
        self.lock = threading.RLock()
        self._versions = {"model": 0, "image": 0}
        self.model: nn.Module = model
        self.model_name = model_name
        self.classes: list[str] = []
        self.device = torch.device(device) if device is not None else module_device(model)
        self.x: torch.Tensor | None = None
        self.y: int | None = None
        self.source: str = ""
        self.x_adv: torch.Tensor | None = None
        self.attack: str = ""
        self._dataset = dataset
        self._set_model_fields(model, model_name, classes)

    # --------------------------------------------------------------------------------- model
    @classmethod
    def from_pretrained(cls, name: str, *, device: str | torch.device | None = None) -> ExplorerState:
        """A state holding ``advviz.models.load(name)`` (LeNet-5 on digits trains on first use)."""
        model = models.load(name, device=device)
        ds = model_dataset(name)
        return cls(model, model_name=name, classes=dataset_classes(ds) if ds else None, device=device, dataset=ds)

    def _set_model_fields(self, model: nn.Module, name: str, classes: list[str] | None) -> None:
        model.eval()
        self.model = model
        self.model_name = name or type(model).__name__
        n = int(getattr(model, "num_classes", 0) or 0)
        names = classes or getattr(model, "classes", None) or ([str(i) for i in range(n)] if n else [])
        self.classes = list(names)

    @property
    def dataset(self) -> str | None:
        """The dataset the current model was trained on (a zoo entry's, or the one given), if known."""
        return self._dataset or model_dataset(self.model_name)

    def set_model(self, model: nn.Module, *, name: str = "", classes: list[str] | None = None,
                  dataset: str | None = None) -> None:
        """Swap in a model (eval mode) and notify ``"model"``; the adversarial image is dropped.

        When the current image does not fit the new model's declared ``input_size`` (or its
        number of classes differs), the image is dropped too (``x`` is ``None`` during the
        notification): the image picker then supplies one that fits.
        """
        with self.lock:
            old_k = len(self.classes)
            self._dataset = dataset
            self._set_model_fields(model, name, classes or (self.classes if name == self.model_name else None))
            self.device = module_device(model)
            self.x_adv, self.attack = None, ""
            self._versions["model"] += 1
            size = getattr(model, "input_size", None)
            if self.x is not None and ((size is not None and tuple(self.x.shape) != tuple(size))
                                       or (self.y is not None and len(self.classes) != old_k)):
                self.x, self.y, self.source = None, None, ""
                self._versions["image"] += 1
        self._notify("model")

    def versions(self, topics: tuple[str, ...] = ("model", "image")) -> dict[str, int]:
        """How many times each of ``topics`` (``"model"``, ``"image"``) changed: a job's identity.

        :meth:`set_model` counts up ``"model"`` (and ``"image"`` when it drops the image);
        :meth:`set_image` and :meth:`set_label` count up ``"image"``.
        """
        unknown = [t for t in topics if t not in self._versions]
        if unknown:
            raise ValueError(f"unknown topic(s) {unknown}; versions are counted for {tuple(self._versions)}")
        with self.lock:
            return {t: self._versions[t] for t in topics}

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` the model takes (zoo models declare it; otherwise the current image's)."""
        size = getattr(self.model, "input_size", None)
        if size is not None:
            return tuple(size)  # type: ignore[return-value]
        if self.x is not None:
            return tuple(self.x.shape)  # type: ignore[return-value]
        return (3, 224, 224)

    # --------------------------------------------------------------------------------- images
    def set_image(self, x: torch.Tensor, y: int | None = None, *, source: str = "") -> None:
        """Make ``x`` ``(C, H, W)`` in [0, 1] the current image (label ``y`` if known) and notify."""
        if x.ndim != 3:
            raise ValueError(f"the current image must be (C, H, W), got shape {tuple(x.shape)}")
        with self.lock:
            self.x = x.detach().float().cpu().contiguous()
            self.y = None if y is None else int(y)
            self.source = source
            self.x_adv, self.attack = None, ""
            self._versions["image"] += 1
        self._notify("image")

    def set_label(self, y: int | None) -> None:
        """Name the true class of the current image (``None``: unknown) and notify ``"image"``.

        The adversarial image is dropped (it was made against the old label).
        """
        if y is not None and not 0 <= int(y) < max(len(self.classes), 1):
            raise ValueError(f"label {y} is not a class of {self.model_name} (0..{len(self.classes) - 1})")
        with self.lock:
            if self.x is None:
                raise RuntimeError("no image is selected yet: pick one in the image picker or upload one")
            self.y = None if y is None else int(y)
            self.x_adv, self.attack = None, ""
            self._versions["image"] += 1
        self._notify("image")

    def set_adversarial(self, x_adv: torch.Tensor | None, *, attack: str = "") -> None:
        """Record an attack's result ``(C, H, W)`` for the current image (``None`` clears) and notify."""
        with self.lock:
            self.x_adv = None if x_adv is None else x_adv.detach().float().cpu().contiguous()
            self.attack = attack if x_adv is not None else ""
        self._notify("adversarial")

    def batch(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (default the current image) as a ``(1, C, H, W)`` batch on the model's device."""
        img = self.x if x is None else x
        if img is None:
            raise RuntimeError("no image is selected yet: pick one in the image picker or upload one")
        return img.unsqueeze(0).to(self.device)

    def label_tensor(self, y: int | None = None) -> torch.Tensor:
        """The label to attack: ``y``, else the true label, else the model's prediction, as ``(1,)``."""
        if y is None:
            y = self.y if self.y is not None else self.predict().label
        return torch.tensor([int(y)], device=self.device)

    @torch.no_grad()
    def predict(self, x: torch.Tensor | None = None) -> Prediction:
        """The model's prediction for ``x`` ``(C, H, W)`` (default: the current image)."""
        probs = torch.softmax(metrics.logits(self.model, self.batch(x)), dim=1)[0].cpu()
        conf, label = probs.max(0)
        return Prediction(probs=probs, label=int(label), confidence=float(conf))

    def class_name(self, i: int | None) -> str:
        """``"3 (cat)"``-style display name of class ``i`` (``"?"`` when unknown)."""
        if i is None:
            return "?"
        if 0 <= i < len(self.classes) and self.classes[i] != str(i):
            return f"{i} ({self.classes[i]})"
        return str(i)

    # --------------------------------------------------------------------------------- observers
    def observe(self, callback: Callable[[ExplorerState], Any], topic: str, *, last: bool = False) -> None:
        """Call ``callback(state)`` whenever ``topic`` (``model``, ``image``, ``adversarial``) changes.

        ``last=True`` calls it after every other listener of the topic (the image picker uses it
        for ``"model"``: every component has taken the new model before the picker supplies an
        image that fits it).
        """
        if topic not in TOPICS:
            raise ValueError(f"unknown topic {topic!r}; choose one of {TOPICS}")
        (self._late if last else self._listeners)[topic].append(callback)

    def unobserve(self, callback: Callable[[ExplorerState], Any], topic: str) -> None:
        """Remove a callback registered with :meth:`observe`."""
        for table in (self._listeners, self._late):
            if callback in table[topic]:
                table[topic].remove(callback)
                return
        raise ValueError(f"{callback!r} does not observe {topic!r}")

    def _notify(self, topic: str) -> None:
        for cb in list(self._listeners[topic]) + list(self._late[topic]):
            cb(self)
