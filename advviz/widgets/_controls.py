"""Controls generated from :class:`~advviz._registry.ParamSpec` (attacks, purifiers).

``float`` -> ``FloatSlider`` (``FloatLogSlider`` when ``log``; a budget with ``per255`` is shown
in /255 units: the slider says 8 where the function receives 8/255), ``int`` -> ``IntSlider``,
``bool`` -> ``Checkbox``, ``choice`` -> ``Dropdown``; an unbounded number gets a text box.
:class:`ParamControls` converts back to the function's units in :meth:`ParamControls.values`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as W

from advviz._registry import ParamSpec

__all__ = ["control_for", "ParamControls"]

_STYLE = {"description_width": "120px"}
_LAYOUT = {"width": "380px"}


def _label(spec: ParamSpec) -> str:
    return f"{spec.name} (/255)" if spec.per255 else spec.name


def control_for(spec: ParamSpec, value: Any = None) -> W.ValueWidget:
    """The widget for one parameter, showing ``value`` (default: the spec's default)."""
    v = spec.default if value is None else value
    common: dict[str, Any] = {"description": _label(spec), "style": _STYLE, "layout": W.Layout(**_LAYOUT),
                              "tooltip": spec.help or spec.name}
    if spec.kind == "bool":
        return W.Checkbox(value=bool(v), indent=True, **common)
    if spec.kind == "choice":
        return W.Dropdown(options=list(spec.choices or []), value=v, **common)
    if v is None:  # "no value" (e.g. seed=None): a text box where empty means None
        return W.Text(value="", placeholder="None", **common)
    bounded = spec.low is not None and spec.high is not None
    if spec.kind == "int":
        if bounded:
            return W.IntSlider(value=int(v), min=int(spec.low), max=int(spec.high),  # type: ignore[arg-type]
                               step=int(spec.step or 1), continuous_update=False, **common)
        return W.IntText(value=int(v), **common)
    # float
    if spec.log and bounded and spec.low > 0:  # type: ignore[operator]
        lo, hi = math.log10(spec.low), math.log10(spec.high)  # type: ignore[arg-type]
        return W.FloatLogSlider(value=float(v), base=10, min=lo, max=hi, step=(hi - lo) / 100,
                                continuous_update=False, readout_format=".3g", **common)
    k = 255.0 if spec.per255 else 1.0
    if bounded:
        step = spec.step * k if spec.step else (0.25 if spec.per255 else (spec.high - spec.low) / 100)  # type: ignore[operator]
        return W.FloatSlider(value=float(v) * k, min=float(spec.low) * k, max=float(spec.high) * k,  # type: ignore[arg-type]
                             step=step, continuous_update=False, readout_format=".4g", **common)
    return W.FloatText(value=float(v) * k, **common)


class ParamControls(W.VBox):
    """A column of controls for a list of ParamSpecs.

    Args:
        specs: the parameters.
        values: initial values (function units), overriding the defaults.
        skip: parameter names not to show (handled elsewhere, e.g. ``targeted``).
    """

    def __init__(self, specs: Sequence[ParamSpec], values: Mapping[str, Any] | None = None,
                 skip: Sequence[str] = ()) -> None:
        self.specs = [s for s in specs if s.name not in skip]
        vals = dict(values or {})
        self.controls: dict[str, W.ValueWidget] = {s.name: control_for(s, vals.get(s.name)) for s in self.specs}
        super().__init__(children=list(self.controls.values()))

    def values(self) -> dict[str, Any]:
        """``{name: value}`` in the function's units (/255 sliders divided back)."""
        out: dict[str, Any] = {}
        for s in self.specs:
            v = self.controls[s.name].value
            if isinstance(self.controls[s.name], W.Text):
                text = str(v).strip()
                if text in ("", "None"):
                    out[s.name] = None
                    continue
                try:
                    v = int(text) if s.kind == "int" else float(text)
                except ValueError:
                    raise ValueError(f"{s.name} must be a number or empty (None), got {text!r}") from None
                if s.kind == "float" and s.per255:
                    v = v / 255.0
                out[s.name] = v
                continue
            if s.kind == "float":
                v = float(v) / 255.0 if s.per255 and not s.log else float(v)
            elif s.kind == "int":
                v = int(v)
            elif s.kind == "bool":
                v = bool(v)
            out[s.name] = v
        return out

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Show ``values`` (function units); unknown names are ignored."""
        for s in self.specs:
            if s.name in values:
                v = values[s.name]
                if isinstance(self.controls[s.name], W.Text):
                    self.controls[s.name].value = "" if v is None else str(v * 255.0 if s.per255 else v)
                    continue
                if s.kind == "float" and s.per255 and not s.log:
                    v = float(v) * 255.0
                self.controls[s.name].value = v

    def observe_all(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Call ``callback(change)`` when any control's value changes."""
        for c in self.controls.values():
            c.observe(callback, names="value")
