"""THE forward-hook capture of advviz: what named layers output (or take) during one forward pass.

:func:`capture_layers` is the one place that registers forward hooks to read a network's
intermediate tensors (as captum's ``_forward_layer_eval`` is for captum). Feature maps
(:func:`advviz.explain.feature_maps`) and through them the feature divergence, Grad-CAM (its
layer's output as a gradient leaf, and the listing of earlier layers when a layer is refused),
the layer menus of the widgets, the perceptual loss of the purifier GAN and FID's penultimate
features all use it.

It is a context manager around the caller's own forward pass::

    with torch.no_grad(), capture_layers(model, ["layer2", "layer3"]) as cap:
        model(x)
    cap.outputs  # {"layer2": (B, K, h, w), "layer3": ...}

so that the caller chooses the grad mode, the model guard and what to call (the model itself, or
a wrapper that runs it). The hooks are always removed on exit, also when the forward pass raises.
With ``stop=...`` the forward pass ends as soon as the wanted layers have run (the rest of the
network is not computed); the ``with`` block then ends at that point without an error, so the
forward call should be the block's last statement.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Capture", "capture_layers", "get_module"]


def get_module(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)`` with a helpful error (close matches) for a wrong name."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"the model has no layer named {name!r}{hint} "
                         f"(see [n for n, _ in model.named_modules()])") from None


class _StopForward(Exception):
    """Raised from a hook to end the forward pass early; swallowed by the capture that raised it."""

    def __init__(self, owner: Capture) -> None:
        super().__init__("forward pass stopped early by capture_layers")
        self.owner = owner


@dataclass
class Capture:
    """What :func:`capture_layers` recorded.

    Attributes:
        names: the layer names asked for, in order (duplicates removed).
        last: per layer name, the tensor of its last call (only layers whose output, or first
            input with ``inputs=True``, was a tensor).
        calls: with ``every_call=True``, every call as ``(name, tensor)`` in execution order.
        stopped: whether the forward pass was ended early (``stop=``).
    """

    names: list[str]
    last: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    stopped: bool = False

    @property
    def outputs(self) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` of the layers that produced a tensor, in the order of :attr:`names`."""
        return {n: self.last[n] for n in self.names if n in self.last}

    @property
    def missing(self) -> list[str]:
        """The layers that did not run (or produced no tensor), in the order of :attr:`names`."""
        return [n for n in self.names if n not in self.last]


def _resolve(model: nn.Module, layers: str | Sequence[str] | Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    if isinstance(layers, Mapping):
        return dict(layers)
    names = [layers] if isinstance(layers, str) else list(layers)
    return {n: get_module(model, n) for n in dict.fromkeys(names)}


@contextlib.contextmanager
def capture_layers(model: nn.Module, layers: str | Sequence[str] | Mapping[str, nn.Module], *,
                   inputs: bool = False, keep_graph: bool = False, clone: bool = True,
                   stop: bool | str = False, every_call: bool = False,
                   on_output: Callable[[str, object], torch.Tensor | None] | None = None) -> Iterator[Capture]:
    """Record the named layers' outputs during the forward pass(es) run inside the block.

    Args:
        model: the network the names refer to.
        layers: a module name (``"layer3"``, ``"features.relu3_3"``), a sequence of names (wrong
            names raise with close matches), or a ``{name: module}`` mapping (modules chosen by
            the caller, e.g. every leaf module).
        inputs: record each module's first positional input instead of its output (a forward
            pre-hook; e.g. the penultimate features entering the last linear layer).
        keep_graph: keep the recorded tensors attached to the autograd graph (a differentiable
            loss on features); by default they are detached.
        clone: record copies, so that a later in-place operation (``ReLU(inplace=True)`` after
            a convolution) cannot change a recorded tensor. ``False`` records the very tensors
            the network computes (cheaper; a caller that only reads shapes or identities).
        stop: ``True``: end the forward pass as soon as every layer has run once; a layer name
            (one of ``layers``): end it once that layer has run. The block then ends without an
            error and :attr:`Capture.stopped` is set. ``False`` (default): run to the end.
        every_call: also keep every call in :attr:`Capture.calls` (a module may run several
            times in one pass; :attr:`Capture.last` holds its last call).
        on_output: ``f(name, output)`` called in the output hook before recording, with the
            module's raw output (any type). It may raise (the exception propagates out of the
            block, hooks removed) or return a tensor that *replaces* the module's output for the
            rest of the forward pass (and is what gets recorded). Not with ``inputs=True``.

    Yields:
        The :class:`Capture`, filled as the forward pass runs.
    """
    modules = _resolve(model, layers)
    if isinstance(stop, str) and stop not in modules:
        raise ValueError(f"stop={stop!r} is not one of the captured layers {list(modules)}")
    if inputs and on_output is not None:
        raise ValueError("on_output replaces a module's output; it cannot be used with inputs=True")
    cap = Capture(names=list(modules))

    def record(name: str, value: object) -> None:
        if isinstance(value, torch.Tensor):
            t = value if keep_graph else value.detach()
            if clone:
                t = t.clone()
            cap.last[name] = t
            if every_call:
                cap.calls.append((name, t))
        if (stop is True and len(cap.last) == len(modules)) or (isinstance(stop, str) and name == stop):
            raise _StopForward(cap)

    def output_hook(name: str) -> Callable[[nn.Module, object, object], torch.Tensor | None]:
        def hook(_m: nn.Module, _inp: object, out: object) -> torch.Tensor | None:
            new = on_output(name, out) if on_output is not None else None
            record(name, out if new is None else new)
            return new  # None: the module's output stays as it is
        return hook

    def input_hook(name: str) -> Callable[[nn.Module, tuple], None]:
        def hook(_m: nn.Module, args: tuple) -> None:
            record(name, args[0] if args else None)
        return hook

    handles = []
    try:
        for n, m in modules.items():
            handles.append(m.register_forward_pre_hook(input_hook(n)) if inputs
                           else m.register_forward_hook(output_hook(n)))
        yield cap
    except _StopForward as exc:
        if exc.owner is not cap:
            raise
        cap.stopped = True
    finally:
        for h in handles:
            h.remove()
