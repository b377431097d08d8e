"""Registries of named things: attacks, purifiers, architectures, artefacts (one mechanism for all).

A registry maps a string name to a spec that carries the callable and a description of its
keyword parameters (:class:`ParamSpec`: name, default, range, help). The widgets build their
controls from these specs, the CLI builds its options from them, and the tests parametrise
over every entry. Registering a name twice raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["ParamSpec", "Registry", "check_params", "parse_number"]


@dataclass(frozen=True)
class ParamSpec:
    """One keyword parameter of a registered callable.

    Attributes:
        name: the keyword argument's name.
        default: its default value.
        kind: ``"float"``, ``"int"``, ``"bool"`` or ``"choice"``.
        low: smallest allowed value (numbers).
        high: largest allowed value (numbers).
        step: a sensible slider step (numbers).
        choices: allowed values (``"choice"``).
        help: one sentence for tooltips and ``--help``.
        per255: the value is an intensity on the [0, 1] scale usually quoted in /255 units
            (``eps``, ``alpha``); widgets may display it as ``k/255``.
        log: a logarithmic slider suits it (e.g. C&W's constant).
    """

    name: str
    default: Any
    kind: str = "float"
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: Sequence[Any] | None = None
    help: str = ""
    per255: bool = False
    log: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("float", "int", "bool", "choice"):
            raise ValueError(f"ParamSpec {self.name}: unknown kind {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"ParamSpec {self.name}: a choice needs choices")

    def validate(self, value: Any) -> None:
        """Raise ``ValueError`` when ``value`` is outside the declared range or choices."""
        if self.kind == "choice":
            if value not in self.choices:  # type: ignore[operator]
                raise ValueError(f"{self.name} must be one of {list(self.choices or [])}, got {value!r}")
            return
        if self.kind == "bool" or value is None:
            return
        if self.low is not None and value < self.low:
            raise ValueError(f"{self.name} must be >= {self.low}, got {value}")
        if self.high is not None and value > self.high:
            hint = " (values are on the [0, 1] scale: divide by 255)" if self.per255 and value > 1 else ""
            raise ValueError(f"{self.name} must be <= {self.high}, got {value}{hint}")


S = TypeVar("S")
_MISSING: Any = object()


@dataclass
class Registry(Generic[S]):
    """A name -> spec mapping that refuses duplicates.

    Args:
        kind: what it holds, for messages (``"attack"``, ``"purifier"``).
    """

    kind: str
    _items: dict[str, S] = field(default_factory=dict)

    def add(self, name: str, spec: S, *, replace: bool = False) -> S:
        """Register ``spec`` under ``name``; raises ``ValueError`` on a duplicate unless ``replace``."""
        if name in self._items and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = spec
        return spec

    def remove(self, name: str) -> S:
        """Unregister ``name`` and return its spec (``KeyError`` when absent)."""
        spec = self.get(name)
        del self._items[name]
        return spec

    def values(self) -> list[S]:
        """The registered specs, in name order."""
        return [self._items[n] for n in self.names()]

    def get(self, name: str, default: Any = _MISSING) -> S:
        """The spec named ``name``; ``default`` when given, else ``KeyError`` listing the available names."""
        try:
            return self._items[name]
        except KeyError:
            if default is not _MISSING:
                return default
            raise KeyError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._items))}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> S:
        return self.get(name)

    def __setitem__(self, name: str, spec: S) -> None:  # replace in place (tests swap an entry this way)
        self._items[name] = spec

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def check_params(specs: Sequence[ParamSpec], values: dict[str, Any], owner: str) -> None:
    """Validate keyword values against specs; unknown keywords raise (no silent typos)."""
    by_name = {p.name: p for p in specs}
    for key, val in values.items():
        if key not in by_name:
            raise TypeError(f"{owner}() got an unexpected keyword {key!r}; valid: {', '.join(by_name)}")
        by_name[key].validate(val)



def parse_number(text: str | float) -> float:
    """A number written as text: ``"0.03"``, ``"1e-3"`` or a fraction ``"8/255"`` (a float-kind
    :class:`ParamSpec`'s value, or a budget, typed on a command line or in a text box).

    Raises:
        ValueError: not a number or fraction (division by zero included).
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip()
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return float(num) / float(den)
        return float(s)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"cannot read {text!r} as a number: write one like 0.03 or a fraction like 8/255") from None
