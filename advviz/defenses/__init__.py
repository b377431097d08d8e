"""Defenses. Purifiers are registered like attacks, so widgets, the CLI and the tests find them.

A purifier is a plain function ``NAME(x, *, ...) -> x_purified`` mapping a ``(B, C, H, W)``
float batch in ``[0, 1]`` to a batch of the same shape, dtype and device, also in ``[0, 1]``;
it never modifies ``x``. It is registered with the :class:`~advviz._registry.ParamSpec` of
each keyword parameter:

* :func:`register_purifier` (decorator; a duplicate name raises),
* :func:`list_purifiers` (sorted names), :func:`get` (the :class:`PurifierSpec`).

Registered here: ``jpeg`` (:func:`advviz.defenses.jpeg.jpeg`), ``pix2pix`` and ``cgan``
(:mod:`advviz.defenses.pix2pix`), ``uddn`` and ``dae`` (:mod:`advviz.defenses.uddn`).

:func:`defended` composes a purifier and a classifier into one classifier that every attack
accepts (with BPDA's straight-through backward pass and EOT's averaging as options).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from advviz._checks import check_batch
from advviz._registry import ParamSpec, Registry, check_params

__all__ = ["PurifierSpec", "register_purifier", "list_purifiers", "get", "check_purifier_input", "PURIFIERS", "jpeg",
           "defended", "Defended"]

PurifierFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class PurifierSpec:
    """A registered purifier.

    Attributes:
        name: registry name (also the function's name in ``advviz.defenses``).
        fn: ``fn(x, **params) -> x_purified``, ``(B, C, H, W)`` in ``[0, 1]`` to the same.
        params: the keyword parameters, with defaults and ranges.
        paper: citation of the method.
        description: one line for listings and tooltips.
        differentiable: whether gradients flow through ``fn`` (JPEG's rounding does not).
        quick: parameter overrides for a fast run (tests, widget previews).
        channels: the channel counts ``C`` it accepts; any other input is refused with a
            ``ValueError`` naming them (a CIFAR-10-trained network takes only ``(B, 3, H, W)``).
    """

    name: str
    fn: PurifierFn
    params: tuple[ParamSpec, ...]
    paper: str = ""
    description: str = ""
    differentiable: bool = False
    quick: Mapping[str, object] = field(default_factory=dict)
    channels: tuple[int, ...] = (1, 3)

    def defaults(self) -> dict[str, object]:
        """``{param: default}`` for every parameter."""
        return {p.name: p.default for p in self.params}

    def __call__(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        check_params(self.params, kwargs, self.name)
        return self.fn(x, **kwargs)


PURIFIERS: Registry[PurifierSpec] = Registry("purifier")


def register_purifier(name: str, *, params: Sequence[ParamSpec], paper: str = "", description: str = "",
                      differentiable: bool = False,
                      quick: Mapping[str, object] | None = None,
                      channels: Sequence[int] = (1, 3)) -> Callable[[PurifierFn], PurifierFn]:
    """Decorator registering a purifier function under ``name`` (duplicates raise ``ValueError``);
    ``channels`` lists the channel counts it accepts (see :class:`PurifierSpec`)."""

    def deco(fn: PurifierFn) -> PurifierFn:
        PURIFIERS.add(name, PurifierSpec(name=name, fn=fn, params=tuple(params), paper=paper,
                                         description=description or (fn.__doc__ or "").strip().split("\n")[0],
                                         differentiable=differentiable, quick=dict(quick or {}),
                                         channels=tuple(int(c) for c in channels)))
        return fn

    return deco


def check_purifier_input(x: torch.Tensor, *, channels: Sequence[int] = (1, 3), what: str = "this purifier") -> None:
    """The purifiers' input contract: a float ``(B, C, H, W)`` batch (``B`` may be 0) in ``[0, 1]``
    with ``C`` in ``channels``; one clear error otherwise."""
    check_batch(x, allow_empty=True)
    if x.shape[1] not in channels:
        shapes = " or ".join(f"(B, {c}, H, W)" for c in channels)
        kinds = {1: "grayscale", 3: "RGB"}
        names = " or ".join(f"{c} ({kinds.get(c, str(c) + '-channel')})" for c in channels)
        raise ValueError(f"{what} needs {names} channels, {shapes} images; got {tuple(x.shape)}")
    x = x.detach()
    if x.numel() and (not torch.isfinite(x).all() or float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError("x must be finite and lie in [0, 1] (divide 0-255 pixels by 255)")


def list_purifiers() -> list[str]:
    """Names of every registered purifier, sorted."""
    return PURIFIERS.names()


def get(name: str) -> PurifierSpec:
    """The :class:`PurifierSpec` registered as ``name`` (``KeyError`` listing the names otherwise)."""
    return PURIFIERS.get(name)


# The learned purifiers register themselves on import. Their modules are imported as modules
# (not their functions) so that advviz.defenses.pix2pix / .uddn stay the modules; the
# functions are reached through get("pix2pix"), get("cgan"), get("uddn"), get("dae").
from advviz.defenses import pix2pix as _pix2pix_module  # noqa: E402, F401
from advviz.defenses import uddn as _uddn_module  # noqa: E402, F401
from advviz.defenses.defended import Defended, defended  # noqa: E402
from advviz.defenses.jpeg import jpeg  # noqa: E402  (registers itself)
