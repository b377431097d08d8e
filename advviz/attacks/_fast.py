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
by a cheap fingerprint of the model: for every parameter and buffer its name, storage pointer,
in-place version counter (``tensor._version``, bumped by optimizer steps and ``load_state_dict``),
shape, dtype and device, plus every module's type, number of hooks and plain (int/float/bool/str
or tuples of them) attributes except ``training``. Retraining, ``load_state_dict``, ``.to(...)``, swapping a layer or changing a
temperature attribute therefore rebuild the copy on the next attack.

:func:`fast_models` switches the mechanism off (``with fast_models(False): ...``), e.g. to compare
with a reference implementation bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from advviz._modules import model_guard

__all__ = ["clear_cache", "fast_enabled", "fast_model", "fast_models", "fingerprint", "fold_batchnorm"]

log = logging.getLogger(__name__)

_ENABLED = [True]
_CHECK_RTOL = 1e-4


@contextlib.contextmanager
def fast_models(enabled: bool = True) -> Iterator[None]:
    """Context manager enabling (default) or disabling the fast copies inside attacks."""
    old = _ENABLED[0]
    _ENABLED[0] = bool(enabled)
    try:
        yield
    finally:
        _ENABLED[0] = old


def fast_enabled() -> bool:
    """Whether attacks currently use :func:`fast_model`."""
    return _ENABLED[0]


_SCALARS = (int, float, bool, str, type(None))


def _plain_attrs(m: nn.Module) -> tuple[tuple[str, object], ...]:
    """A module's hyper-parameters: scalar attributes and tuples/lists of scalars (stride, padding ...)."""
    out = []
    for k, v in vars(m).items():
        if k == "training" or k.startswith("_"):
            continue
        if isinstance(v, _SCALARS):
            out.append((k, v))
        elif isinstance(v, (tuple, list)) and all(isinstance(e, _SCALARS) for e in v):
            out.append((k, tuple(v)))
    return tuple(out)


def fingerprint(model: nn.Module) -> tuple:
    """A cheap key that changes whenever the model's weights, buffers, devices or layers change."""
    tensors = tuple((name, t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device)
                    for name, t in [*model.named_parameters(), *model.named_buffers()])
    modules = tuple((name, type(m), _plain_attrs(m), _n_hooks(m)) for name, m in model.named_modules())
    return tensors, modules


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _n_hooks(m: nn.Module) -> int:
    return sum(len(getattr(m, attr, None) or ()) for attr in _HOOKS)


def _has_hooks(model: nn.Module) -> bool:
    return any(_n_hooks(m) for m in model.modules())


class _Tracer(torch.fx.Tracer):
    """fx tracer keeping advviz's ``Normalize`` (it inspects shapes) as a leaf module."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from advviz.models import Normalize

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
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

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
    if not _ENABLED[0] or not isinstance(model, nn.Module):
        return model
    key = fingerprint(model)
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
