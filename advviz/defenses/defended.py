"""``defended(model, purifier)``: a purifier followed by a classifier, as one classifier.

The composition is an ordinary :class:`torch.nn.Module` taking ``(B, C, H, W)`` images in
``[0, 1]`` and returning the classifier's logits, so every attack accepts it. Two options make
it attackable end to end when the purifier is not (Athalye, Carlini & Wagner, ICML 2018):

* **BPDA** (``bpda=True``, Backward Pass Differentiable Approximation, Sec. 4.1): the forward
  pass runs the purifier ``g``; the backward pass uses the identity, ``d g(x) / dx ~ I``
  (straight-through). Implemented as ``x + (g(x) - x).detach()``, whose value is ``g(x)`` and
  whose gradient is the identity. ``bpda=None`` (default) switches it on exactly when the
  purifier is registered as non-differentiable (JPEG) or when its output carries no gradient.
* **EOT** (``eot_samples=n``, Expectation over Transformation, Sec. 4.3): for a randomised
  purifier the forward pass averages the **logits** over ``n`` independent draws. The gradient
  of that mean is the mean of the ``n`` gradients, which is EOT's estimator; an attack taking
  the gradient of the wrapper gets it with no change. (Averaging logits rather than
  probabilities is a choice: it keeps the cross-entropy and DLR losses of the attacks
  unchanged; recorded in :meth:`Defended.config`.) Randomness comes from the purifier's own
  draws (the global generator, or its own seed argument).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from advviz._modules import module_device
from advviz._registry import check_params
from advviz.defenses import PurifierSpec, get

__all__ = ["Defended", "defended"]


class Defended(nn.Module):
    """``model(purifier(x))`` as one classifier (see the module docstring for BPDA and EOT).

    Attributes:
        model: the classifier (kept as a submodule: ``.eval()``/``.to()`` reach it).
        purifier: callable ``(B, C, H, W) -> (B, C, H, W)`` in ``[0, 1]``.
        purifier_name: name for reports.
        bpda: identity in the backward pass of the purifier.
        eot_samples: logits averaged over this many purifier draws.
    """

    def __init__(self, model: nn.Module, purifier: Callable[[torch.Tensor], torch.Tensor], *,
                 purifier_name: str = "", bpda: bool = False, eot_samples: int = 1,
                 purifier_params: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not callable(model) or not callable(purifier):
            raise TypeError("defended(model, purifier) needs a classifier module and a callable purifier")
        if int(eot_samples) != eot_samples or eot_samples < 1:
            raise ValueError(f"eot_samples must be a positive integer, got {eot_samples!r}")
        self.model = model
        # a purifier that is a Module becomes a submodule (moved and put in eval mode with the model)
        self.purifier = purifier
        self.purifier_name = purifier_name or getattr(purifier, "__name__", type(purifier).__name__)
        self.purifier_params = dict(purifier_params or {})
        self.bpda = bool(bpda)
        self.eot_samples = int(eot_samples)
        for attr in ("num_classes", "input_size"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))
        # Grad-CAM (and the CFR attack) explain the classifier, not a convolutional purifier
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        last = getattr(model, "last_conv", None) or (convs[-1] if convs else None)
        if last is not None:
            self.last_conv = f"model.{last}"

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """The purifier's output; with BPDA, its value with the identity's gradient."""
        if self.bpda:  # the purifier's own graph is not needed: its gradient is replaced by the identity
            out = self.purifier(x.detach(), **self.purifier_params)
            return x + (out.to(x.dtype) - x).detach()
        out = self.purifier(x, **self.purifier_params)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of ``model(purifier(x))`` (averaged over ``eot_samples`` draws)."""
        if self.eot_samples == 1:
            return self.model(self.purify(x))
        total = None
        for _ in range(self.eot_samples):
            z = self.model(self.purify(x))
            total = z if total is None else total + z
        return total / self.eot_samples

    def config(self) -> dict[str, Any]:
        """What the composition is, for result configs."""
        return {"purifier": self.purifier_name, "purifier_params": dict(self.purifier_params), "bpda": self.bpda,
                "eot_samples": self.eot_samples, "eot_average": "logits"}

    def extra_repr(self) -> str:
        return f"purifier={self.purifier_name}, bpda={self.bpda}, eot_samples={self.eot_samples}"


def _gives_gradient(purifier: Callable[..., torch.Tensor], params: Mapping[str, Any],
                    shape: tuple[int, ...] | None, device: torch.device) -> bool:
    """Whether the purifier's output on a probe image (seeded noise of ``shape`` on ``device``)
    carries a gradient. The global random state is forked: probing draws nothing the caller would
    see (a random purifier draws from it)."""
    if shape is None:
        return True
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0)).to(device).requires_grad_(True)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.enable_grad():
            out = purifier(x, **params)
    except Exception:  # noqa: BLE001 - a purifier that cannot even run here is not probed further
        return True
    return isinstance(out, torch.Tensor) and out.requires_grad


def defended(model: nn.Module, purifier: str | Callable[..., torch.Tensor], *,
             params: Mapping[str, Any] | None = None, bpda: bool | None = None, eot_samples: int = 1) -> Defended:
    """The classifier ``model(purifier(x))``, accepted by every attack.

    Args:
        model: classifier taking ``(B, C, H, W)`` in ``[0, 1]`` (normalisation inside).
        purifier: a registered purifier name (:func:`advviz.defenses.list_purifiers`), a
            :class:`~advviz.defenses.PurifierSpec`, or any callable ``x -> x_purified``.
        params: keyword parameters of the purifier (default: its defaults).
        bpda: identity backward pass through the purifier (Athalye et al. 2018, BPDA). ``None``:
            on when the purifier is registered as non-differentiable, or (for a plain callable)
            when its output carries no gradient on a probe input of ``model.input_size`` (seeded
            noise; the global random state is left as it was).
        eot_samples: average the logits over this many draws of a randomised purifier (EOT).

    Returns:
        A :class:`Defended` module in the model's training mode (attacks put it in eval mode).
    """
    spec: PurifierSpec | None = None
    if isinstance(purifier, str):
        spec = get(purifier)
    elif isinstance(purifier, PurifierSpec):
        spec = purifier
    params = dict(params or {})
    if spec is not None:
        check_params(spec.params, params, spec.name)
        fn: Callable[..., torch.Tensor] = spec.fn
        name = spec.name
        auto_bpda = not spec.differentiable
    else:
        fn = purifier  # type: ignore[assignment]
        name = getattr(purifier, "__name__", type(purifier).__name__)
        auto_bpda = bpda is None and not _gives_gradient(fn, params, getattr(model, "input_size", None),
                                                         module_device(model))
    return Defended(model, fn, purifier_name=name, purifier_params=params,
                    bpda=auto_bpda if bpda is None else bool(bpda), eot_samples=eot_samples)
