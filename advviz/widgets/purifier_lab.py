"""PurifierLab: apply a registered purifier to the current (attacked) image, live."""

from __future__ import annotations

import html
import time
from typing import Any

import ipywidgets as W
import torch

from advviz.widgets import _render as R
from advviz.widgets._controls import ParamControls
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._state import ExplorerState

__all__ = ["PurifierLab"]

_IMG = {"width": "180px", "height": "180px", "object_fit": "contain"}


class PurifierLab(W.VBox):
    """Purifier dropdown (``advviz.defenses.list_purifiers()``), its controls, and the result.

    The input is the adversarial image when there is one (else the clean image; the "input"
    toggle chooses). With "live" on, every control change re-purifies and re-predicts.

    Args:
        state: the shared :class:`ExplorerState`.
        purifier: initial purifier name (default ``"jpeg"``).
        live: re-run on every change.
    """

    def __init__(self, state: ExplorerState, *, purifier: str | None = None, live: bool = True) -> None:
        from advviz import defenses

        self.state = state
        self.errors = ErrorArea()
        self.last_result: dict[str, Any] | None = None
        names = defenses.list_purifiers()
        if not names:
            raise RuntimeError("no purifier is registered (advviz.defenses.list_purifiers() is empty)")
        self.purifier = W.Dropdown(options=names, value=purifier or ("jpeg" if "jpeg" in names else names[0]),
                                   description="purifier", layout=W.Layout(width="300px"))
        self.source = W.ToggleButtons(options=["adversarial", "clean"], value="adversarial", description="input")
        self.live = W.Checkbox(value=live, description="live", indent=False)
        self.apply_button = W.Button(description="Apply", icon="magic")
        self.controls = ParamControls([])
        self.controls_box = W.VBox()
        self.describe = W.HTML()
        self.input_img = W.Image(format="png", layout=W.Layout(**_IMG))
        self.output_img = W.Image(format="png", layout=W.Layout(**_IMG))
        self.output_img.add_class("advviz-purified")
        self.bars = W.Image(format="png")
        self.summary = W.HTML()
        self.purifier.observe(self._on_purifier, names="value")
        self.source.observe(self._on_change, names="value")
        self.apply_button.on_click(self._on_apply)
        state.observe(self._on_state, "image")
        state.observe(self._on_state, "adversarial")
        state.observe(self._on_state, "model")

        def captioned(img: W.Widget, text: str) -> W.VBox:
            return W.VBox([W.HTML(f"<b>{text}</b>"), img])

        super().__init__(children=[
            W.HBox([self.purifier, self.live, self.apply_button]),
            self.describe,
            self.source,
            self.controls_box,
            W.HBox([captioned(self.input_img, "input"), captioned(self.output_img, "purified"), self.bars]),
            self.summary,
            self.errors,
        ])
        self._build_controls()
        if live and state.x is not None:
            self._on_state(state)

    def _build_controls(self) -> None:
        from advviz import defenses

        spec = defenses.get(self.purifier.value)
        self.controls = ParamControls(spec.params, spec.defaults())
        self.controls.observe_all(self._on_change)
        self.controls_box.children = [self.controls]
        self.describe.value = (f'<div style="font-size:12px;color:#555">{html.escape(spec.description)}'
                               f"{' — ' + html.escape(spec.paper) if spec.paper else ''}</div>")

    def apply(self) -> torch.Tensor | None:
        """Purify the chosen input with the current settings; show it and the predictions."""
        from advviz import defenses

        st = self.state
        if st.x is None:
            return None
        use_adv = self.source.value == "adversarial" and st.x_adv is not None
        x_in = st.x_adv if use_adv else st.x
        assert x_in is not None
        spec = defenses.get(self.purifier.value)
        t0 = time.perf_counter()
        out = spec(x_in.unsqueeze(0).to(st.device), **self.controls.values())
        secs = time.perf_counter() - t0
        before = st.predict(x_in)
        after = st.predict(out[0].cpu())
        self.input_img.value = R.png(R.to_uint8(x_in))
        self.output_img.value = R.png(R.to_uint8(out[0]))
        self.bars.value = R.bars_png([(f"{'adversarial' if use_adv else 'clean'} input", before.probs.tolist()),
                                      ("purified", after.probs.tolist())], st.classes, highlight=st.y)
        restored = st.y is not None and after.label == st.y
        label = f" from {html.escape(st.attack)}" if use_adv else ""
        self.summary.value = (
            '<div class="advviz-purify-summary" style="font-family:sans-serif;font-size:13px">'
            f"input{label}: {html.escape(st.class_name(before.label))} ({before.confidence:.1%}) → purified: "
            f"<b>{html.escape(st.class_name(after.label))}</b> ({after.confidence:.1%})"
            f"{' — true label restored' if restored else ''} in {secs * 1000:.0f} ms</div>")
        self.last_result = {"purifier": spec.name, "params": self.controls.values(), "input": "adversarial" if use_adv
                            else "clean", "before": before.label, "after": after.label, "restored": restored}
        return out

    @guarded
    def _on_purifier(self, change: dict[str, Any]) -> None:
        self.errors.clear()
        self._build_controls()
        if self.live.value:
            self.apply()

    @guarded
    def _on_change(self, change: dict[str, Any]) -> None:
        if self.live.value:
            self.errors.clear()
            self.apply()

    @guarded
    def _on_apply(self, _button: W.Button | None = None) -> None:
        self.errors.clear()
        self.apply()

    @guarded
    def _on_state(self, state: ExplorerState) -> None:
        if self.live.value and state.x is not None and tuple(state.x.shape) == state.input_size:
            self.apply()
