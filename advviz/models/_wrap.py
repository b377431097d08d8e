"""A user's own network as one object the whole library understands: :func:`wrap`, :func:`from_factory`.

advviz's classifiers (:class:`~advviz.models.Classifier`) take images in ``[0, 1]`` of shape
``(B, C, H, W)``, normalise them in their first layer, and say what they take (``input_size``),
what they output (``num_classes``, ``classes``) and where their last convolution is
(``last_conv``, Grad-CAM's default layer). :func:`wrap` gives any ``nn.Module`` classifier the
same description, so that the attacks, Grad-CAM, feature maps, the purifiers, the evaluation and
the explorer's tabs all work on it:

* the user's network stays a child named ``net`` (not copied): its layers are reachable by
  their own names behind the prefix ``net.`` (``net.layer4.1.conv2`` for a torchvision ResNet);
* ``mean``/``std`` (when given) become a :class:`~advviz.models.Normalize` first layer named
  ``normalize``: the wrapped model then takes ``[0, 1]`` images as every advviz model does;
* what can be inferred is inferred: the input channels from the first ``nn.Conv2d`` (or from
  ``mean``), the number of classes from one forward pass of a zero image, ``last_conv`` from the
  same pass (the last convolution whose output is a map larger than 1x1); what cannot (the image
  size) is asked for with one clear error.

:func:`from_factory` builds a network from ``"package.module:function"`` (or
``"path/to/file.py:function"``), what ``advviz evaluate --model`` and ``advviz explore --model`` take.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advviz._modules import model_guard, module_device
from advviz.models._base import Classifier, Normalize

__all__ = ["Wrapped", "wrap", "from_factory"]


class Wrapped(Classifier):
    """A user's network with advviz's description (made by :func:`wrap`; see the module docstring).

    ``forward(x)`` checks that ``x`` is ``(B, C, H, W)`` with the declared ``C``, normalises it
    (when ``mean``/``std`` were given) and returns the network's logits ``(B, num_classes)``.

    Attributes:
        net: the user's network (the object given to :func:`wrap`, not a copy).
        normalize: the :class:`~advviz.models.Normalize` first layer, or ``None``.
        input_size: ``(C, H, W)`` the network takes.
        num_classes: the number of logits.
        classes: class names (``None``: indices).
        name: a display name.
        dataset: the dataset it was trained on, if known (``"cifar10"``; any text).
        last_conv: Grad-CAM's default layer (``""`` when the network has no convolution).
    """

    def __init__(self, net: nn.Module, *, input_size: tuple[int, int, int], num_classes: int,
                 classes: list[str] | None, mean: Sequence[float] | None, std: Sequence[float] | None,
                 name: str, dataset: str | None, last_conv: str) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std).to(module_device(net)) if mean is not None and std is not None else None
        self.net = net
        self.input_size = tuple(input_size)  # type: ignore[assignment]
        self.num_classes = int(num_classes)
        self.classes = list(classes) if classes is not None else None
        self.name = name
        self.dataset = dataset
        self.last_conv = last_conv

    @property
    def normalization(self) -> tuple[list[float], list[float]] | None:
        """``(mean, std)`` of the normalisation inside, or ``None`` (the network gets ``[0, 1]`` as it is)."""
        if self.normalize is None:
            return None
        return self.normalize.mean.flatten().tolist(), self.normalize.std.flatten().tolist()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for images ``x`` ``(B, C, H, W)`` in ``[0, 1]``."""
        if self.normalize is not None:
            return self.net(self.normalize(x))
        c = self.input_size[0]
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"{self.name} expects images of shape (B, {c}, H, W) in [0, 1]; got shape "
                             f"{tuple(x.shape)}. Add a batch dimension with x.unsqueeze(0), or convert channels "
                             f"with advviz.data.load_image(..., channels={c}).")
        return self.net(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is a wrapped network: it has no split into features and head; "
                                  f"use its layers by name (e.g. {self.last_conv or 'net.<layer>'}) with forward hooks")

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is a wrapped network: it has no split into features and head")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, num_classes={self.num_classes}"


def _first_conv(module: nn.Module) -> nn.Conv2d | None:
    return next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)


def _channels(module: nn.Module, mean: Sequence[float] | None) -> int | None:
    conv = _first_conv(module)
    if conv is not None:
        return int(conv.in_channels)
    norm = next((m for m in module.modules() if isinstance(m, Normalize)), None)
    if norm is not None:
        return int(norm.in_channels)
    return len(mean) if mean is not None else None


def _input_size(module: nn.Module, input_size: Any, mean: Sequence[float] | None) -> tuple[int, int, int]:
    """``(C, H, W)`` from ``input_size`` (``(C, H, W)``, ``(H, W)`` or one side), else the module's own."""
    channels = _channels(module, mean)
    if input_size is None:
        own = getattr(module, "input_size", None)
        if own is not None and len(tuple(own)) == 3:
            return tuple(int(v) for v in own)  # type: ignore[return-value]
        example = f"({channels or 3}, 32, 32) for CIFAR-10-size images, ({channels or 3}, 224, 224) for ImageNet-size"
        raise ValueError(f"wrap needs input_size=(C, H, W): the image size {type(module).__name__} was trained on, "
                         f"e.g. {example} (advviz resizes every image to it; the height and width cannot be read "
                         "from the network)")
    size = (int(input_size),) * 2 if isinstance(input_size, int) else tuple(int(v) for v in input_size)
    if len(size) == 2:
        if channels is None:
            raise ValueError(f"input_size={tuple(input_size)} gives no channel count and {type(module).__name__} has "
                             "no nn.Conv2d to read it from: give input_size=(C, H, W)")
        size = (channels, *size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size must be (C, H, W) with positive sides, e.g. (3, 32, 32); got {input_size!r}")
    if channels is not None and _first_conv(module) is not None and size[0] != channels:
        raise ValueError(f"input_size={size} says {size[0]} channel(s) but the first convolution of "
                         f"{type(module).__name__} takes {channels}: give input_size=({channels}, {size[1]}, {size[2]})")
    if size[0] not in (1, 3):
        raise ValueError(f"advviz handles grayscale (C = 1) and RGB (C = 3) images; input_size={size} has {size[0]}")
    return size  # type: ignore[return-value]


def _stats(values: Any, channels: int, what: str) -> list[float] | None:
    if values is None:
        return None
    vals = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise ValueError(f"{what} has {len(vals)} values but the images have {channels} channel(s): give one "
                         f"value per channel, e.g. {what}={tuple(vals[:1] * channels)}")
    if what == "std" and min(vals) <= 0:
        raise ValueError(f"std must be positive per channel, got {tuple(vals)}")
    return vals


def _no_inplace(module: nn.Module) -> None:
    """In-place activations made out-of-place (same values): forward hooks then see each layer's own output."""
    for m in module.modules():
        if isinstance(getattr(m, "inplace", None), bool) and m.inplace:
            m.inplace = False


@torch.no_grad()
def _dry_run(net: nn.Module, normalize: Normalize | None, size: tuple[int, int, int]) -> tuple[int, str]:
    """One zero image through the network: ``(number of logits, last convolution with a map > 1x1)``."""
    convs: list[str] = []
    hooks = []
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            def hook(_m: nn.Module, _i: object, out: object, _name: str = name) -> None:
                if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] > 1 and out.shape[3] > 1:
                    convs.append(_name)
            hooks.append(m.register_forward_hook(hook))
    x = torch.zeros(1, *size, device=module_device(net))
    what = type(net).__name__
    try:
        with model_guard(net, freeze=False):
            out = net(normalize(x) if normalize is not None else x)
    except Exception as exc:  # noqa: BLE001 - any failure means the size or the network is wrong; say which
        raise ValueError(f"{what} did not run on a zero image of shape (1, {', '.join(map(str, size))}) "
                         f"({type(exc).__name__}: {exc}); check input_size (C, H, W)") from None
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"{what} returns a {type(out).__name__}, not a tensor of logits: wrap a module whose "
                         "forward returns the logits (B, num_classes) only (e.g. out = net(x); return out[0] or "
                         "out['logits'])")
    if out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 2:
        raise ValueError(f"{what} returns shape {tuple(out.shape)} for one image; a classifier returns logits "
                         "(1, num_classes) with at least 2 classes")
    return int(out.shape[1]), (f"net.{convs[-1]}" if convs else "")


def wrap(module: nn.Module, *, mean: Sequence[float] | float | None = None, std: Sequence[float] | float | None = None,
         input_size: tuple[int, ...] | int | None = None, classes: Sequence[str] | None = None,
         name: str | None = None, dataset: str | None = None) -> Wrapped:
    """Any ``nn.Module`` classifier as one object advviz understands (:class:`Wrapped`, eval mode).

    Args:
        module: the network; its ``forward`` takes ``(B, C, H, W)`` images (normalised by ``mean``
            and ``std`` when they are given, else in ``[0, 1]``) and returns logits
            ``(B, num_classes)``. A plain function is refused: put it in an ``nn.Module`` first.
        mean, std: the per-channel normalisation the network was trained with (on the ``[0, 1]``
            scale, e.g. ImageNet's ``(0.485, 0.456, 0.406)`` / ``(0.229, 0.224, 0.225)``); one
            value is used for every channel. ``None`` (both): the network takes ``[0, 1]`` as is
            (its own first layer normalises, or it was trained without).
        input_size: ``(C, H, W)`` it was trained on (``(H, W)`` or one side: ``C`` from its first
            convolution); default: ``module.input_size`` when it has one, else an error.
        classes: class names, one per logit (default: ``module.classes`` if any, else indices).
        name: a display name (default: the module's class name).
        dataset: the dataset it was trained on, if known (``"cifar10"``, ``"digits"``, or any text).

    Returns:
        A :class:`Wrapped` in eval mode on the network's device. In-place activations of the
        network (``nn.ReLU(inplace=True)``) are switched to out-of-place: the values are the same,
        and forward hooks (feature maps, Grad-CAM) see each layer's own output.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``.
        ValueError: what cannot be inferred or does not fit (the message says what to pass).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"wrap takes an nn.Module, got {type(module).__name__}: for a function f, define "
                        "class Net(nn.Module): def forward(self, x): return f(x) and wrap Net()")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (the normalisation the network was trained with), or neither")
    if isinstance(module, Wrapped):  # wrapped again: its settings, updated by the ones given
        if mean is not None and module.normalize is not None:
            raise ValueError(f"{module.name} already normalises its input (mean/std given to wrap before)")
        norm = module.normalization
        mean, std = (mean, std) if mean is not None else (norm if norm is not None else (None, None))
        return wrap(module.net, mean=mean, std=std, input_size=input_size or module.input_size,
                    classes=classes if classes is not None else module.classes, name=name or module.name,
                    dataset=dataset if dataset is not None else module.dataset)
    size = _input_size(module, input_size, mean if not isinstance(mean, (int, float)) else None)
    mean_v, std_v = _stats(mean, size[0], "mean"), _stats(std, size[0], "std")
    _no_inplace(module)
    normalize = Normalize(mean_v, std_v).to(module_device(module)) if mean_v is not None else None
    num_classes, last = _dry_run(module, normalize, size)
    names = list(classes) if classes is not None else getattr(module, "classes", None)
    if names is not None:
        names = [str(c) for c in names]
        if len(names) != num_classes:
            raise ValueError(f"classes has {len(names)} names but {type(module).__name__} outputs {num_classes} "
                             f"logits: give one name per logit")
    out = Wrapped(module, input_size=size, num_classes=num_classes, classes=names, mean=mean_v, std=std_v,
                  name=name or getattr(module, "name", None) or type(module).__name__,
                  dataset=dataset if dataset is not None else getattr(module, "dataset", None), last_conv=last)
    return out.eval()


def from_factory(spec: str, **kwargs: Any) -> nn.Module:
    """The network a factory returns: ``"package.module:function"`` or ``"path/to/file.py:function"``.

    The current working folder is importable (as with ``python -m``), so ``"nets:build"`` finds
    ``./nets.py``. The factory is called with ``kwargs`` and must return an ``nn.Module`` (wrap
    it with :func:`wrap` when it lacks ``input_size`` or normalisation).

    Raises:
        ValueError: ``spec`` is not ``module:function``, or the factory returns something else.
        ModuleNotFoundError / FileNotFoundError: the module or file is not there.
        AttributeError: the module has no such function.
    """
    where, sep, attr = str(spec).rpartition(":")
    if not sep or not where or not attr.isidentifier():
        raise ValueError(f"a factory is 'package.module:function' or 'path/to/file.py:function', got {spec!r}")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"factory file not found: {path}")
        mod_spec = importlib.util.spec_from_file_location(f"advviz_factory_{path.stem}", path)
        if mod_spec is None or mod_spec.loader is None:
            raise ValueError(f"cannot import {path} as Python code")
        mod = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = mod
        mod_spec.loader.exec_module(mod)
    else:
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        mod = importlib.import_module(where)
    fn = getattr(mod, attr, None)
    if fn is None:
        raise AttributeError(f"{where} has no function {attr!r}")
    net = fn(**kwargs)
    if not isinstance(net, nn.Module):
        raise ValueError(f"{spec} returned a {type(net).__name__}, not an nn.Module")
    return net.eval()
