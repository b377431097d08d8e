"""The small mechanisms every part of advviz shares: the model guard, the device of a module and
the contract of one call of a classifier.

* :func:`model_guard`: run a module in eval mode and/or with frozen parameters (and optionally
  with its BatchNorm statistics kept), restoring every submodule's ``training`` flag, every
  parameter's ``requires_grad`` and the saved buffers on exit, also when the body raises.
  Guards nest: each restores exactly what it found.
* :func:`module_device`: where a module's parameters (else buffers) live; CPU for a module with
  neither. The math of advviz runs on the *input's* device; this is only for code that must place
  a freshly made tensor (noise, a batch of a dataset) next to a module it was handed.
* The model-call contract, shared by the attacks (``attacks._core``) and the batched forward
  (:func:`advviz.metrics.logits`):

  - :func:`check_model`: a model is an ``nn.Module``. A plain function is refused with a message
    saying how to wrap it (advviz must put the network in eval mode, freeze and restore its
    parameters and read its dtype, which a function hides);
  - :func:`model_dtype`: the input is cast to the model's dtype (a float64 batch on a float32 model);
  - :func:`as_logits`: the output must be one ``(B, K)`` logits tensor; a tuple, dict or output
    object is refused with "wrap the model", a ``(B,)`` output with what to return instead;
  - :func:`warn_if_probabilities`: outputs that look like softmax probabilities warn;
  - :func:`forward_error`: a shape error from inside the model's layers (a 32x32 batch into a
    28x28 LeNet) or a label outside the model's classes becomes one ``ValueError`` that names the
    input size the model takes;
  - :func:`model_logits`: one call of the model under all of the above.

(A module's weights' identity, :func:`advviz._weights.tensors_sha256`, lives with the weight files.)

This module imports nothing from advviz, so that the attacks, Grad-CAM and the training engine
can all use it without import cycles.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["as_logits", "check_model", "forward_error", "model_dtype", "model_guard", "model_logits",
           "module_device", "warn_if_probabilities"]


def check_model(model: object, *, name: str = "model") -> nn.Module:
    """``model`` if it is an ``nn.Module``; otherwise one ``TypeError`` that says how to wrap it.

    advviz refuses plain functions (and other callables) rather than wrapping them: it must put
    the network in eval mode, freeze and restore its parameters and read its device and dtype,
    and a function hides its network, so a silent wrapper would run, e.g., dropout and batch-norm
    layers in training mode without a word.
    """
    if isinstance(model, nn.Module):
        return model
    what = (f"a function ({getattr(model, '__name__', '?')})" if callable(model)
            else f"a {type(model).__name__}")
    raise TypeError(f"{name} must be a torch.nn.Module, got {what}: advviz puts the model in eval mode, freezes "
                    "and restores its parameters and reads its device and dtype, which a plain function hides. "
                    "Wrap it in an nn.Module that holds the network as a submodule, e.g. "
                    "`class Wrapped(nn.Module): def __init__(self, net): super().__init__(); self.net = net` with "
                    "`def forward(self, x): return my_function(self.net, x)`")


@contextlib.contextmanager
def model_guard(model: nn.Module, *, eval: bool = True, freeze: bool = True,
                keep_batchnorm_stats: bool = False) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with frozen parameters (each optional); restore everything afterwards.

    Args:
        model: any module.
        eval: put the model (every submodule) in eval mode inside the block.
        freeze: set ``requires_grad=False`` on every parameter inside the block. Parameter
            ``.grad`` is never touched: frozen parameters accumulate nothing.
        keep_batchnorm_stats: save every BatchNorm buffer (running mean/var, batch counter) and
            copy it back on exit, so that forward passes in training mode inside the block leave
            the running statistics as they were.

    Restores each submodule's ``training`` flag, each parameter's ``requires_grad`` and the saved
    buffers on exit, also when the body raises; nested guards restore in order.
    """
    check_model(model)
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()] if freeze else []
    saved = [(buf, buf.detach().clone()) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for buf in m.buffers()] if keep_batchnorm_stats else []
    try:
        if eval:
            model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def module_device(module: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    """The device of ``module``'s first parameter, else of its first buffer, else ``default``."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device(default)


# ---------------------------------------------------------------------------------------------
# the contract of one call of a classifier
# ---------------------------------------------------------------------------------------------


def as_logits(out: object) -> torch.Tensor:
    """``out`` if it is a logits tensor ``(B, K)``; otherwise one error saying what to do.

    advviz needs a model whose forward returns one tensor ``(B, K)`` of logits. A tuple, list,
    dict or an output object (e.g. ``transformers``' ``ImageClassifierOutput``) is refused
    (``TypeError``) rather than guessed from (which entry holds the logits is the model author's
    knowledge); a tensor of another rank, e.g. one score per image ``(B,)``, is refused
    (``ValueError``) with what to return instead.
    """
    if isinstance(out, torch.Tensor):
        if out.ndim == 2:
            return out
        if out.ndim == 1:
            raise ValueError(f"the model returned shape {tuple(out.shape)}, one number per image, but advviz needs "
                             "logits of shape (B, K), one column per class: for a binary classifier with one score "
                             "z per image return `torch.stack([torch.zeros_like(z), z], dim=1)` (two classes whose "
                             "softmax is the sigmoid of z)")
        raise ValueError(f"the model returned shape {tuple(out.shape)}, but advviz needs logits of shape (B, K), "
                         "one column per class: flatten them in the model's forward (`return out.flatten(1)`)")
    if isinstance(out, (tuple, list)):
        what = f"a {type(out).__name__} of {len(out)} items"
    elif isinstance(out, dict):
        what = f"a dict with keys {sorted(map(str, out))}"
    else:
        what = f"a {type(out).__name__}"
    raise TypeError(f"the model returned {what}, but attacks and evaluations need a model returning one logits "
                    "tensor (B, K): wrap it in an nn.Module whose forward returns only the logits, e.g. "
                    "`return self.net(x)[0]` or `return self.net(x)['logits']`")


def warn_if_probabilities(logits: torch.Tensor) -> bool:
    """Warn (``UserWarning``) when ``logits`` ``(B, K)`` look like probabilities: every row
    non-negative and summing to 1 (within 1e-3). Returns whether it warned.

    Cross-entropy on probabilities (a model ending in softmax) has vanishing gradients, so
    gradient attacks look much weaker than they are."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        return False
    z = logits.detach().float()
    if bool((z >= 0).all()) and bool(((z.sum(dim=1) - 1).abs() <= 1e-3).all()):
        warnings.warn("the model's outputs look like probabilities (rows non-negative, summing to 1): "
                      "cross-entropy on probabilities gives vanishing gradients and understates the "
                      "attack; pass a model that returns logits (remove the final softmax)",
                      UserWarning, stacklevel=4)
        return True
    return False


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter or buffer (``None`` if it has none).

    Inputs are cast to it before the forward pass (a float64 batch on a float32 model)."""
    if not isinstance(model, nn.Module):
        return None
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


# torch's words for an input whose size or channels the model's layers cannot take
_SHAPE_ERRORS = re.compile(
    r"mat1 and mat2 shapes cannot be multiplied|to have \d+ channels|size mismatch|Given groups=\d+, weight of size"
    r"|Calculated padded input size|Kernel size can't be greater|is invalid for input of size"
    r"|must match the size of tensor")
# torch's words for a class index outside the logits (cross-entropy, gather)
_LABEL_ERRORS = re.compile(r"Target -?\d+ is out of bounds|index -?\d+ is out of bounds for dimension 1 with size \d+")


def forward_error(exc: BaseException, model: nn.Module, x: torch.Tensor) -> ValueError | None:
    """A clear ``ValueError`` for ``exc``, raised while ``model`` ran on ``x``, or ``None`` to re-raise it.

    Two of torch's messages are translated:

    * a shape error from the model's layers (``mat1 and mat2 shapes cannot be multiplied``,
      ``expected input ... to have 1 channels``): the message gives the batch's shape and, when
      the model has an ``input_size`` ``(C, H, W)`` attribute (every zoo model has), the size it
      takes. When ``x`` already has that size the error has another cause and is left alone;
    * a class index outside the logits (``Target 10 is out of bounds``): a label is not one of
      the model's classes (a model without ``num_classes`` cannot be checked before it runs).

    Use as ``except (RuntimeError, IndexError) as exc: raise forward_error(exc, model, x) or exc``
    (or ``err = forward_error(...)``; ``raise err from exc`` when it is not ``None``).
    """
    text = str(exc)
    if _LABEL_ERRORS.search(text):
        k = getattr(model, "num_classes", None)
        known = f" (its num_classes is {k})" if isinstance(k, int) else ""
        return ValueError(f"a label is outside the model's classes{known}: labels (and targets) must be class indices "
                          f"in [0, K) for a model with K outputs; check the labels' dataset against the model's "
                          f"(torch said: {text})")
    if not _SHAPE_ERRORS.search(text) or not isinstance(x, torch.Tensor) or x.ndim < 2:
        return None
    size = getattr(model, "input_size", None)
    got = tuple(x.shape)
    if isinstance(size, (tuple, list)) and len(size) == x.ndim - 1:
        size = tuple(int(s) for s in size)
        if got[1:] == size:
            return None
        c, *hw = size
        return ValueError(f"the model takes images of size {size} (C, H, W) (its input_size), but got a batch of "
                          f"shape {got}: give {c}-channel {'x'.join(map(str, hw))} images (resize with "
                          f"torch.nn.functional.interpolate(x, size={tuple(hw)}), or use the dataset the model "
                          f"was trained on) (torch said: {text})")
    return ValueError(f"the model cannot take a batch of shape {got}: its layers refused the input's size or "
                      f"number of channels; give images of the size and channels the model was built for "
                      f"(the dataset it was trained on) (torch said: {text})")


def model_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One call of ``model`` on ``x`` under the contract: ``x`` cast to :func:`model_dtype`, a shape
    or label error from inside the model explained (:func:`forward_error`), the output checked to
    be a ``(B, K)`` logits tensor (:func:`as_logits`).

    Args:
        model: the classifier (an ``nn.Module``); its mode is the caller's business.
        x: a batch ``(B, C, H, W)``.

    Returns:
        The logits ``(B, K)``, in the model's output dtype (with a graph if grad mode is on).
    """
    dtype = model_dtype(model)
    try:
        out = model(x if dtype is None else x.to(dtype))
    except (RuntimeError, IndexError) as exc:
        err = forward_error(exc, model, x)
        if err is None:
            raise
        raise err from exc
    return as_logits(out)
