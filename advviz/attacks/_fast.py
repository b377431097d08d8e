"""A cached, frozen, BatchNorm-folded copy of a model, for the inner loops of attacks.

Attacks evaluate the model in **eval mode** (inside :func:`~advviz.attacks._core.model_guard`,
as torchattacks and the papers do): BatchNorm uses its running statistics and dropout is off.
In eval mode a BatchNorm that directly follows a convolution (or a linear layer) is an affine
map per channel and can be folded into that layer's weights. The folded copy computes the same
logits (to float rounding, about 1e-6 relative) with one memory-bound layer fewer per block,
forward *and* backward, which is where an iterative attack spends its time (NOTES.md: 1.43x
on ResNet-20 / CIFAR-10 with PGD-10 on a 2-core CPU).

:func:`fast_model` returns such a copy:

* a :func:`copy.deepcopy` of the model, in eval mode, parameters frozen and without ``.grad``;
  the user's model is never altered;
* conv->bn / linear->bn pairs are found by tracing the model with :mod:`torch.fx` (a tracer that
  keeps :class:`advviz.models.Normalize` as a leaf) and are folded **in the copy's own modules**
  (the folded layer replaces the conv, an ``Identity`` replaces the BatchNorm), so the copy keeps
  the model's own Python ``forward``;
* a pair is folded only when the conv's output feeds that BatchNorm and nothing else, and each
  module is called exactly once;
* 4-d weights and the input are put in channels-last memory layout (another 1.1x on CPU);
* the first time a copy is used it is checked against the model on the actual input (max logit
  difference within ``1e-4`` relative); models that cannot be traced, that carry forward/backward
  hooks (a hook may be a defense or an explanation; the copy would bypass it), or that fail the
  check fall back to the model itself (logged at debug level).

The copy is cached per model (a weak reference: the cache never keeps a model alive) and keyed
by :func:`fingerprint`, which covers everything of the model's own state that the forward pass
can read:

* for every parameter and buffer: its name, storage pointer, in-place version counter
  (``tensor._version``, bumped by optimizer steps and ``load_state_dict``), shape, dtype, device
  and a position-weighted sum of its values (which also sees changes the version counter misses:
  ``p.data.mul_(2)``, writes through ``p.numpy()``);
* for every module: its type, number of hooks, and every instance attribute outside
  ``nn.Module``'s own bookkeeping (``training`` excluded: the copy is the eval-mode function):
  numbers, strings, ``None``, dtypes, devices, and tuples, lists, dicts and sets of them by
  value; classes, functions (with their defaults and closures' values) and ``functools.partial``
  objects by identity.

A model holding anything else in an attribute (a plain tensor that is not a registered buffer,
a module outside the registered submodules, an arbitrary object, a bound method) is not a plain
stack of registered parameters and buffers: no copy could be proven current, so attacks use
the model itself (logged at debug level). Retraining, ``load_state_dict``, ``.to(...)``,
swapping a layer, changing a temperature attribute or a config dict therefore rebuild the copy
on the next attack, and nothing else can leave it stale. Class attributes and module globals
are shared by the copy, so changing them needs no rebuild.

:func:`fast_models` switches the mechanism off (``with fast_models(False): ...``), e.g. to compare
with a reference implementation bit for bit. The switch is a :class:`contextvars.ContextVar`:
it holds for the code inside the ``with`` block in that thread (and asyncio task) only, so a
widget's attack running in another thread is not switched on or off by it.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import enum
import functools
import logging
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from advviz._modules import model_guard
from advviz.models import Normalize

__all__ = ["clear_cache", "fast_enabled", "fast_model", "fast_models", "fingerprint", "fold_batchnorm"]

log = logging.getLogger(__name__)

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("advviz_fast_models", default=True)
_CHECK_RTOL = 1e-4


@contextlib.contextmanager
def fast_models(enabled: bool = True) -> Iterator[None]:
    """Context manager enabling (default) or disabling the fast copies inside attacks, for the
    code inside the block in this thread (or asyncio task) only: other threads keep their own
    setting (on, unless they switched it off themselves)."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def fast_enabled() -> bool:
    """Whether attacks in this thread (and context) currently use :func:`fast_model`."""
    return _ENABLED.get()


class _Unkeyed(Exception):
    """An attribute whose effect on the forward pass no cheap key can follow."""


_MODULE_STATE = frozenset(vars(nn.Module()))  # nn.Module's own bookkeeping, ``training`` included
_VALUES = (int, float, complex, bool, str, bytes, type(None), torch.dtype, torch.device, torch.memory_format,
           enum.Enum)
_DEPTH = 8


def _freeze(v: object, depth: int = 0) -> object:
    """A comparable key of an attribute's value (see the module docstring); raises :class:`_Unkeyed`."""
    if depth > _DEPTH:
        raise _Unkeyed("nested too deep")
    if isinstance(v, _VALUES):
        return (type(v), v)
    if isinstance(v, (tuple, list)):
        return (type(v), tuple(_freeze(e, depth + 1) for e in v))
    if isinstance(v, dict):
        return (type(v), tuple((_freeze(k, depth + 1), _freeze(e, depth + 1)) for k, e in v.items()))
    if isinstance(v, (set, frozenset)):
        return (type(v), frozenset(_freeze(e, depth + 1) for e in v))
    if isinstance(v, type) or isinstance(v, types.BuiltinFunctionType):
        return v
    if isinstance(v, types.FunctionType):
        cells = tuple(_freeze(c.cell_contents, depth + 1) for c in v.__closure__ or ())
        return (v, _freeze(v.__defaults__, depth + 1), _freeze(v.__kwdefaults__, depth + 1), cells)
    if isinstance(v, functools.partial):
        return (functools.partial, _freeze(v.func, depth + 1), _freeze(v.args, depth + 1),
                _freeze(v.keywords, depth + 1))
    raise _Unkeyed(f"a {type(v).__name__}")


def _attributes(m: nn.Module) -> tuple[tuple[str, object], ...]:
    """Every instance attribute of ``m`` outside ``nn.Module``'s bookkeeping, frozen (:func:`_freeze`)."""
    out = []
    for k, v in vars(m).items():
        if k in _MODULE_STATE:
            continue
        try:
            out.append((k, _freeze(v)))
        except _Unkeyed as exc:
            raise _Unkeyed(f"{type(m).__name__}.{k} is {exc}") from None
    return tuple(out)


_MIX: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _mix_weights(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``n`` fixed weights in ``[0.5, 1.5)`` that differ from position to position (``i * phi mod 1``)."""
    w = _MIX.get((device, dtype))
    if w is None or w.numel() < n:
        i = torch.arange(max(n, 1024), dtype=torch.float64, device=device)
        w = ((i * 0.6180339887498949) % 1.0 + 0.5).to(dtype)
        _MIX[(device, dtype)] = w
    return w[:n]


def _content(tensors: list[torch.Tensor]) -> tuple[float, ...]:
    """Per tensor, ``sum_i w_i t_i`` with :func:`_mix_weights`: changes with any value, even where
    the version counter does not (``.data``, numpy views), and with a permutation of the values."""
    if not tensors:
        return ()
    try:
        with torch.no_grad():
            sums = []
            for t in tensors:
                f = t.detach().reshape(-1)
                if f.is_complex():
                    f = torch.view_as_real(f).reshape(-1)
                if not f.is_floating_point():
                    f = f.double()
                elif f.dtype in (torch.float16, torch.bfloat16):
                    f = f.float()
                sums.append(torch.dot(f, _mix_weights(f.numel(), f.device, f.dtype)).double())
            return tuple(torch.stack(sums).cpu().tolist())
    except RuntimeError as exc:  # sparse, meta or otherwise unreadable tensors
        raise _Unkeyed(f"a tensor whose values cannot be read ({exc})") from None


def fingerprint(model: nn.Module) -> tuple | None:
    """A key that changes whenever anything of the model that its forward pass can read changes
    (the module docstring lists what it covers); ``None`` when the model holds something no key
    can follow (a plain tensor attribute, an arbitrary object): then no copy of it is cached."""
    named = [*model.named_parameters(), *model.named_buffers()]
    tensors = tuple((name, t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device) for name, t in named)
    try:
        modules = tuple((name, type(m), _attributes(m), _n_hooks(m)) for name, m in model.named_modules())
        values = _content([t for _, t in named])
    except _Unkeyed as exc:
        log.debug("%s cannot be keyed (%s); attacks use it directly", type(model).__name__, exc)
        return None
    return tensors, values, modules


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _n_hooks(m: nn.Module) -> int:
    return sum(len(getattr(m, attr, None) or ()) for attr in _HOOKS)


def _has_hooks(model: nn.Module) -> bool:
    return any(_n_hooks(m) for m in model.modules())


class _Tracer(torch.fx.Tracer):
    """fx tracer keeping advviz's ``Normalize`` (it inspects shapes) as a leaf module."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, Normalize) or super().is_leaf_module(m, module_qualified_name)


_BN_FOR = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d, nn.Linear: nn.BatchNorm1d}


def _foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer_name, bn_name)`` pairs where the BatchNorm consumes only that conv/linear's output."""
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        layer = modules.get(node.target)
        bn_type = _BN_FOR.get(type(layer))
        if bn_type is None or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op != "call_module" or len(user.args) != 1 or user.kwargs or user.args[0] is not node:
            continue
        bn = modules.get(user.target)
        if type(bn) is not bn_type or bn.running_mean is None or bn.running_var is None:
            continue
        if calls[node.target] != 1 or calls[user.target] != 1:
            continue
        pairs.append((node.target, user.target))
    return pairs


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """A frozen eval-mode deep copy of ``model`` with conv/linear->BatchNorm pairs folded.

    Returns:
        ``(copy, number of folded pairs)``. Raises whatever tracing raises for untraceable models.
    """
    net = copy.deepcopy(model)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
        p.grad = None
    pairs = _foldable_pairs(net)
    for layer_name, bn_name in pairs:
        layer, bn = net.get_submodule(layer_name), net.get_submodule(bn_name)
        fused = fuse_linear_bn_eval(layer, bn) if isinstance(layer, nn.Linear) else fuse_conv_bn_eval(layer, bn)
        for p in fused.parameters():
            p.requires_grad_(False)
        net.set_submodule(layer_name, fused)
        net.set_submodule(bn_name, nn.Identity())
    return net, len(pairs)


class ChannelsLast(nn.Module):
    """Runs ``net`` (its 4-d weights already in channels-last layout) on a channels-last copy of the input.

    Same values; convolutions on CPU run about 1.1x faster in this layout (NOTES.md)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)


def _build(model: nn.Module) -> tuple[nn.Module, int]:
    net, n = fold_batchnorm(model)
    if any(isinstance(m, nn.Conv2d) for m in net.modules()):
        net = ChannelsLast(net.to(memory_format=torch.channels_last))
    return net, n


@dataclass
class _Entry:
    key: tuple
    net: nn.Module | None  # None: use the model itself
    checked: bool = False


_CACHE: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()


def clear_cache() -> None:
    """Forget every cached fast copy."""
    _CACHE.clear()


def _check(entry: _Entry, model: nn.Module, x: torch.Tensor) -> None:
    """Compare the copy with the model (eval mode) on a couple of real inputs; fall back on mismatch."""
    entry.checked = True
    if entry.net is None:
        return
    probe = x[:2].detach()
    try:
        with model_guard(model, freeze=False), torch.no_grad():
            ref = model(probe)
            got = entry.net(probe)
        err = float((ref - got).abs().max())
        tol = _CHECK_RTOL * (1.0 + float(ref.abs().max()))
    except Exception as exc:  # noqa: BLE001 - anything the copy cannot do means: use the model
        log.debug("fast copy of %s failed on the input (%s); using the model itself", type(model).__name__, exc)
        entry.net = None
        return
    if not err <= tol:
        log.debug("fast copy of %s differs from the model by %.3g (> %.3g); using the model itself",
                  type(model).__name__, err, tol)
        entry.net = None


def fast_model(model: nn.Module, x: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The cached fast eval-mode copy of ``model`` (see the module docstring), or ``model`` itself.

    Call it inside :func:`~advviz.attacks._core.model_guard` (eval mode, frozen parameters) so
    that the fallback, the model itself, computes the same function as the copy.

    Args:
        model: the user's classifier (never modified).
        x: an input batch ``(B, C, H, W)``; on first use of a (re)built copy its first two
            images check the copy against the model.

    Returns:
        A callable mapping ``(B, C, H, W)`` in [0, 1] to logits, equal to ``model.eval()(x)``
        within float rounding.
    """
    if not _ENABLED.get() or not isinstance(model, nn.Module):
        return model
    key = fingerprint(model)
    if key is None:
        _CACHE.pop(model, None)
        return model
    entry = _CACHE.get(model)
    if entry is None or entry.key != key:
        net: nn.Module | None = None
        if _has_hooks(model):
            log.debug("%s has hooks; attacks use it directly", type(model).__name__)
        else:
            try:
                net, n = _build(model)
                log.debug("fast copy of %s: %d BatchNorm layers folded", type(model).__name__, n)
            except Exception as exc:  # noqa: BLE001 - untraceable models fall back to themselves
                log.debug("cannot build a fast copy of %s (%s: %s); attacks use it directly",
                          type(model).__name__, type(exc).__name__, exc)
                net = None
        entry = _Entry(key=key, net=net)
        _CACHE[model] = entry
    if not entry.checked and x is not None:
        _check(entry, model, x)
    return entry.net if entry.net is not None else model
