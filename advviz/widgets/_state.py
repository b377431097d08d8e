"""The explorer's shared state: one current model (as a unit), one current image, one adversarial image.

:class:`ExplorerState` is a small observable object. Components subscribe to topics with
:meth:`ExplorerState.observe` and are called back, in the thread that made the change, when
the topic changes:

* ``"model"``: :meth:`set_model` (a newly loaded or retrained model; an image the new model
  cannot take is dropped first, so no component ever draws an old image with a new model);
* ``"image"``: :meth:`set_image` (a dataset image or an upload; clears the adversarial image)
  and :meth:`set_label` (the user names the true class of an upload);
* ``"adversarial"``: :meth:`set_adversarial` (an attack's result, or ``None``).

**The model is held as a unit**, :class:`ModelInfo` (``state.info``): the module with its display
name, the input it takes (channels, size, value range, whether normalisation is inside), its
classes, the dataset it was trained on (if any) and its provenance (the artefact store's record,
a weight file's sha256, "trained in the Train tab", or "defined in this notebook"). Every tab
reads the state (``state.info``, and the shortcuts ``state.model_name``, ``state.classes``,
``state.dataset``, ``state.input_size``), never a registry name: a model trained in the Train tab
or brought by the user is as complete as a zoo entry. :func:`pretrained_info` describes a zoo
entry from the store, once, when the header's menu or :meth:`ExplorerState.from_pretrained` loads it.

Each change of the model or the image also counts up that topic's *version*
(:meth:`ExplorerState.versions`): a background job (:mod:`advviz.widgets._jobs`) records the
versions it started with, and drops its result when the model or the image changed meanwhile.

It also knows which datasets and pretrained models this machine can use (:func:`model_menu`
says, for each entry, whether its weights are here and what to set when they are not), and picks
the default pairing: CIFAR-10 + ResNet-20 when both are present (``$ADVVIZ_DATA`` and
``$ADVVIZ_WEIGHTS``) or downloadable, else the offline digits + LeNet-5.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advviz import artifacts, metrics, models
from advviz._modules import module_device
from advviz._paths import data_root
from advviz.data import CIFAR10_CLASSES, DIGIT_CLASSES

__all__ = ["DATASET_SHAPES", "ExplorerState", "ModelInfo", "Prediction", "available_datasets", "available_models", "default_pairing",
           "dataset_classes", "model_dataset", "model_menu", "pretrained_info"]

TOPICS = ("model", "image", "adversarial")

#: the image shape ``(C, H, W)`` of each named dataset
DATASET_SHAPES = {"digits": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


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


def _explorable(name: str) -> bool:
    """A pretrained classifier that takes its dataset's images at native size (the explorer feeds
    images as they are; e.g. the two-stream detector's 64x64 network is left out)."""
    return models.get_weights_spec(name).input_size is None


def available_models() -> list[str]:
    """Pretrained entries usable here: advviz-trained ones (trained on first use) and files on disk
    (and downloadable ones when downloads are allowed)."""
    return [name for name, where, _ in model_menu() if where != "unavailable"]


def model_menu() -> list[tuple[str, str, str]]:
    """Every pretrained entry the explorer can show: ``(name, where, what to do)``.

    ``where`` is :func:`advviz.artifacts.status`'s: ``"weights folder"``, ``"shipped"``, ``"cache"``
    (on disk), ``"train"`` (trained on first use), ``"download"`` (fetched on first use: needs a
    network) or ``"unavailable"``; ``what to do`` says how to get the weights when they are not on
    disk (``""`` otherwise).
    """
    out = []
    for name in models.list_models(pretrained=True):
        if not _explorable(name):
            continue
        st = artifacts.status(name)
        spec = artifacts.get_spec(name)
        if st["present"]:
            todo = ""
        elif st["where"] == "train":
            todo = "trained on first use"
        elif st["where"] == "download":
            todo = (f"downloaded on first use (needs a network); offline, put {spec.filename} into a folder and "
                    "set ADVVIZ_WEIGHTS to it")
        elif spec.url:
            todo = (f"its weights are missing: put {spec.filename} into a folder and set ADVVIZ_WEIGHTS to it "
                    "(or unset ADVVIZ_OFFLINE to download it)")
        else:
            todo = f"its weights are missing: {spec.description or 'set ADVVIZ_WEIGHTS to a folder holding ' + spec.filename}"
        out.append((name, st["where"], todo))
    return out


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


@dataclass(frozen=True)
class ModelInfo:
    """The explorer's model as a unit: what it is, what it takes, what it outputs, where it came from.

    Attributes:
        name: the display name (``"resnet20_cifar10"``, ``"my_net"``).
        input_size: ``(C, H, W)`` it takes (``None``: not declared; the state then uses the
            current image's shape).
        classes: one name per output (indices as text when unknown).
        dataset: the dataset it was trained on, if known (``"cifar10"``, ``"digits"``, any text).
        normalization: ``"inside"`` (its first layer normalises ``[0, 1]`` images) or ``"none
            declared"`` (it gets ``[0, 1]`` images as they are).
        mean, std: the normalisation inside, when known.
        provenance: one line: where it came from.
        record: the artefact store's :class:`~advviz.artifacts.Record` of a zoo entry.
        sha256: the sha256 of the weight file it was read from, when known.
        value_range: the pixel range it takes: always ``(0, 1)``, advviz's contract.
    """

    name: str
    input_size: tuple[int, int, int] | None
    classes: tuple[str, ...]
    dataset: str | None = None
    normalization: str = "none declared"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    provenance: str = "defined in this notebook"
    record: Any = field(default=None, compare=False)
    sha256: str | None = None
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def channels(self) -> int | None:
        """Image channels it takes (``None`` when its input size is not declared)."""
        return self.input_size[0] if self.input_size is not None else None

    def summary(self) -> str:
        """One line of plain text: input, classes, dataset, normalisation, provenance."""
        size = "x".join(map(str, self.input_size)) if self.input_size else "any size"
        norm = "normalisation inside" if self.normalization == "inside" else "no normalisation declared"
        data = f"trained on {self.dataset}" if self.dataset else "dataset unknown"
        return (f"{self.name}: {size} images in [0, 1] ({norm}), {len(self.classes)} classes, {data}; "
                f"{self.provenance}")


def _normalize_layer(model: nn.Module) -> models.Normalize | None:
    return next((m for m in model.modules() if isinstance(m, models.Normalize)), None)


def describe(model: nn.Module, *, name: str = "", classes: Sequence[str] | None = None, dataset: str | None = None,
             provenance: str | None = None, record: Any = None, sha256: str | None = None) -> ModelInfo:
    """:class:`ModelInfo` of ``model`` from what is given, else from what the model declares
    (``input_size``, ``classes``, ``num_classes``, ``dataset``, ``name``, a ``Normalize`` layer)."""
    size = getattr(model, "input_size", None)
    n = int(getattr(model, "num_classes", 0) or 0)
    names = classes or getattr(model, "classes", None) or ([str(i) for i in range(n)] if n else [])
    norm = _normalize_layer(model)
    own_dataset = getattr(model, "dataset", None)
    return ModelInfo(
        name=name or getattr(model, "name", None) or type(model).__name__,
        input_size=tuple(int(v) for v in size) if size is not None else None,  # type: ignore[arg-type]
        classes=tuple(str(c) for c in names),
        dataset=dataset if dataset is not None else (own_dataset if isinstance(own_dataset, str) else None),
        normalization="inside" if norm is not None else "none declared",
        mean=tuple(norm.mean.flatten().tolist()) if norm is not None else None,
        std=tuple(norm.std.flatten().tolist()) if norm is not None else None,
        provenance=provenance or "defined in this notebook", record=record, sha256=sha256)


def pretrained_info(name: str) -> dict[str, Any]:
    """What the store says of zoo entry ``name``: ``{"dataset", "classes", "provenance", "record",
    "sha256"}`` (the keyword arguments of :meth:`ExplorerState.set_model`). Call it after the entry
    was loaded (its record is then at hand; nothing is downloaded or trained here)."""
    ds = model_dataset(name)
    rec = artifacts.record(name) if artifacts.status(name)["present"] else None
    where = rec.source if rec is not None else artifacts.status(name)["where"]  # the file: record.path
    prov = (f"advviz zoo entry {name} (sha256 {rec.sha256[:12]}…, {where})" if rec is not None and rec.sha256 else
            f"advviz zoo entry {name} ({where})")
    return {"dataset": ds, "classes": dataset_classes(ds) if ds else None, "provenance": prov, "record": rec,
            "sha256": rec.sha256 if rec is not None and rec.sha256 else None}


def _from_store(name: str, **given: Any) -> dict[str, Any]:
    """``describe``'s keyword arguments: those given; a zoo entry's name with nothing else given
    (``ExplorerState(model, model_name="lenet5_digits")``) is described by the store, once, here."""
    if name and given.get("dataset") is None and given.get("provenance") is None and given.get("record") is None \
            and name in models.list_models(pretrained=True):
        store = pretrained_info(name)
        given = {**store, **{k: v for k, v in given.items() if v is not None}}
    return {"name": name, **given}


class ExplorerState:
    """The current model (as a :class:`ModelInfo` unit) and image shared by every component.

    Args:
        model: a classifier taking ``(B, C, H, W)`` in ``[0, 1]`` (put in eval mode).
        model_name: a name for display (default: the model's ``name``, else its class name). A zoo
            entry's name with no ``dataset``/``provenance`` given is described by the store
            (:func:`pretrained_info`).
        classes: class names (default: ``model.classes``, else indices).
        device: where the model runs (default: where its parameters are).
        dataset: the dataset it was trained on, if known (default: ``model.dataset``, if any).
        provenance: where it came from, one line (default: "defined in this notebook").
        record: the store's :class:`~advviz.artifacts.Record` of a zoo entry.
        sha256: the sha256 of its weight file, when known.
    """

    def __init__(self, model: nn.Module, *, model_name: str = "", classes: list[str] | None = None,
                 device: str | torch.device | None = None, dataset: str | None = None, provenance: str | None = None,
                 record: Any = None, sha256: str | None = None) -> None:
        self._listeners: dict[str, list[Callable[[ExplorerState], Any]]] = {t: [] for t in TOPICS}
        self._late: dict[str, list[Callable[[ExplorerState], Any]]] = {t: [] for t in TOPICS}
        self.lock = threading.RLock()
        self._versions = {"model": 0, "image": 0}
        model.eval()
        self.model: nn.Module = model
        self.info: ModelInfo = describe(model, **_from_store(model_name, classes=classes, dataset=dataset,
                                                             provenance=provenance, record=record, sha256=sha256))
        self.device = torch.device(device) if device is not None else module_device(model)
        self.x: torch.Tensor | None = None
        self.y: int | None = None
        self.source: str = ""
        self.x_adv: torch.Tensor | None = None
        self.attack: str = ""

    # --------------------------------------------------------------------------------- model
    @classmethod
    def from_pretrained(cls, name: str, *, device: str | torch.device | None = None) -> ExplorerState:
        """A state holding ``advviz.models.load(name)`` (LeNet-5 on digits trains on first use)."""
        model = models.load(name, device=device)
        return cls(model, model_name=name, device=device, **pretrained_info(name))

    @property
    def model_name(self) -> str:
        """The model's display name (:attr:`ModelInfo.name`)."""
        return self.info.name

    @property
    def classes(self) -> list[str]:
        """The model's class names, one per output (:attr:`ModelInfo.classes`)."""
        return list(self.info.classes)

    @property
    def dataset(self) -> str | None:
        """The dataset the current model was trained on, if known (:attr:`ModelInfo.dataset`)."""
        return self.info.dataset

    def set_model(self, model: nn.Module, *, name: str = "", classes: list[str] | None = None,
                  dataset: str | None = None, provenance: str | None = None, record: Any = None,
                  sha256: str | None = None) -> None:
        """Swap in a model (eval mode) with its description, and notify ``"model"``; the adversarial
        image is dropped.

        The arguments are :class:`ExplorerState`'s. When the current image does not fit the new
        model's declared ``input_size`` (or its number of classes differs), the image is dropped
        too (``x`` is ``None`` during the notification): the image picker then supplies one that fits.
        """
        with self.lock:
            old_k = len(self.info.classes)
            keep = classes or (self.classes if name and name == self.model_name else None)
            model.eval()
            self.model = model
            self.info = describe(model, **_from_store(name, classes=keep, dataset=dataset, provenance=provenance,
                                                      record=record, sha256=sha256))
            self.device = module_device(model)
            self.x_adv, self.attack = None, ""
            self._versions["model"] += 1
            size = self.info.input_size
            if self.x is not None and ((size is not None and tuple(self.x.shape) != tuple(size))
                                       or (self.y is not None and len(self.info.classes) != old_k)):
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
        """``(C, H, W)`` the model takes (:attr:`ModelInfo.input_size`; when it declares none, the
        current image's)."""
        size = self.info.input_size
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
