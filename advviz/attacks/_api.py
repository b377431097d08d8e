"""The attack registry: :class:`AttackSpec`, :func:`register_attack`, :func:`list_attacks`, :func:`get`.

Every attack is a plain function ``NAME(model, x, y, *, ...) -> x_adv`` registered with the
specs of its keyword parameters, so that widgets and the CLI build their controls from it and
the tests check every entry's invariants.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from advviz._registry import ParamSpec, Registry

__all__ = ["AttackSpec", "register_attack", "list_attacks", "get", "ATTACKS"]

AttackFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack.

    Attributes:
        name: registry name (also the function's name in ``advviz.attacks``).
        fn: ``fn(model, x, y, *, **params) -> x_adv``.
        params: the keyword parameters, with defaults and ranges.
        paper: citation of the method.
        norm: the threat model's norm: ``"linf"``, ``"l2"``, ``"l0"`` or ``"patch"``.
        targeted: whether ``targeted=True`` (``y`` = target labels) is supported.
        budget: name of the parameter bounding the perturbation in ``norm`` (``"eps"``), or
            ``None`` when the method is unbounded (C&W, DeepFool minimise the perturbation).
        description: one line for listings and tooltips.
        recordable: an iterative attack that reports every iterate to :func:`advviz.attacks.record`
            (``recorder = current_recorder()`` before its loop, ``recorder(x_adv)`` after each step).
        quick: parameter overrides for a fast run (tests, widget previews), e.g. fewer steps.
            Budget semantics checked by the invariant tests, by ``norm``/``budget``:
            ``linf`` + ``eps``: ``max |x_adv - x| <= eps``; ``l2`` + ``eps``: per-image L2 <= eps;
            ``l0`` + ``pixels``: at most ``pixels`` pixel locations change; ``l0`` + ``gamma``:
            at most a fraction ``gamma`` of the input features change; ``patch`` + ``area``:
            at most a fraction ``area`` of pixel locations change; ``budget=None``: unbounded.
    """

    name: str
    fn: AttackFn
    params: tuple[ParamSpec, ...]
    paper: str = ""
    norm: str = "linf"
    targeted: bool = False
    budget: str | None = "eps"
    description: str = ""
    quick: Mapping[str, object] = field(default_factory=dict)
    recordable: bool = False

    def defaults(self) -> dict[str, object]:
        """``{param: default}`` for every parameter."""
        return {p.name: p.default for p in self.params}

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return self.fn(model, x, y, **kwargs)


ATTACKS: Registry[AttackSpec] = Registry("attack")


def register_attack(name: str, *, params: Sequence[ParamSpec], paper: str = "", norm: str = "linf",
                    targeted: bool = False, budget: str | None = "eps",
                    description: str = "", quick: Mapping[str, object] | None = None,
                    recordable: bool = False) -> Callable[[AttackFn], AttackFn]:
    """Decorator registering an attack function under ``name`` (duplicates raise)."""

    def deco(fn: AttackFn) -> AttackFn:
        ATTACKS.add(name, AttackSpec(name=name, fn=fn, params=tuple(params), paper=paper, norm=norm,
                                     targeted=targeted, budget=budget,
                                     description=description or (fn.__doc__ or "").strip().split("\n")[0],
                                     quick=dict(quick or {}), recordable=recordable))
        return fn

    return deco


def list_attacks() -> list[str]:
    """Names of every registered attack, sorted."""
    return ATTACKS.names()


def get(name: str) -> AttackSpec:
    """The :class:`AttackSpec` registered as ``name``."""
    return ATTACKS.get(name)
