"""TakeoverView: where in the network an attack takes over, for the current adversarial image.

A plot over the model's layers (``Conv2d`` and ``Linear``, in forward order) of the relative
feature divergence ``||f_l(x_adv) - f_l(x)|| / ||f_l(x)||`` (:func:`advviz.explain.feature_divergence`),
beside Grad-CAM of the adversarial image for the true class and for the class the attack
produced. Recomputed whenever the adversarial image changes; any zoo model.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import numpy as np

from advviz import explain
from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._state import ExplorerState

__all__ = ["TakeoverView"]

SLOT = 180


class TakeoverView(W.VBox):
    """Relative feature divergence per layer, and Grad-CAM of the true and the adversarial class.

    Args:
        state: the shared :class:`ExplorerState`.
        alpha: opacity of the Grad-CAM overlays.
    """

    def __init__(self, state: ExplorerState, *, alpha: float = 0.5) -> None:
        self.state = state
        self.errors = ErrorArea()
        self.alpha = alpha
        self.divergence: dict[str, float] = {}
        self.chart = W.HTML(R.placeholder_html("run an attack (Attack lab or CFR tab): this view shows where in the "
                                               "network its change takes over", SLOT).replace("width:178px", "width:460px;max-width:100%"))
        self.chart.add_class("advviz-takeover-chart")
        self.cam_true = R.ImageSlot("Grad-CAM of the true class", size=SLOT, css_class="advviz-takeover-cam")
        self.cam_adv = R.ImageSlot("Grad-CAM of the adversarial class", size=SLOT, css_class="advviz-takeover-cam")
        self.true_caption = W.HTML("<b>true class</b>")
        self.adv_caption = W.HTML("<b>adversarial class</b>")
        self.cam_scale = W.HTML(R.colorbar_html("jet", 0.0, 1.0, label="Grad-CAM relevance (1 = the map's maximum)",
                                                width=SLOT))
        self.info = W.HTML()
        state.observe(self._on_adv, "adversarial")
        state.observe(self._on_clear, "image")
        state.observe(self._on_clear, "model")
        super().__init__(children=[
            W.HTML('<div style="font-family:sans-serif;font-size:13px">Relative feature divergence '
                   "‖f<sub>l</sub>(x_adv) − f<sub>l</sub>(x)‖ / ‖f<sub>l</sub>(x)‖ at each layer l (convolutions and "
                   "linear layers in forward order; the last one is the logits): where the small input change grows "
                   "into a different representation. Grad-CAM on the adversarial image, last convolution.</div>"),
            R.row(self.chart,
                  W.VBox([self.true_caption, self.cam_true, self.cam_scale], layout=W.Layout(flex="0 0 auto")),
                  W.VBox([self.adv_caption, self.cam_adv], layout=W.Layout(flex="0 0 auto"))),
            self.info,
            self.errors,
        ])
        if state.x_adv is not None:
            self.render()

    def render(self) -> None:
        """Compute the divergence curve and both Grad-CAM maps for the current adversarial image."""
        st = self.state
        if st.x is None or st.x_adv is None:
            return
        x, xa = st.batch(), st.batch(st.x_adv)
        d = explain.feature_divergence(st.model, x, xa)
        self.divergence = {k: float(v[0]) for k, v in d.items()}
        names = list(self.divergence)
        y_true = st.y if st.y is not None else st.predict().label
        y_adv = st.predict(st.x_adv).label
        self.chart.value = R.line_svg(list(range(len(names))), [("relative divergence", list(self.divergence.values()))],
                                      xlabel="layer (forward order)", ylabel="‖Δf‖ / ‖f‖", xticks=names,
                                      title=f"where {st.attack or 'the attack'} takes over",
                                      size=(max(4.6, 0.26 * len(names) + 1.6), 2.8))
        base = R.to_uint8(st.x_adv)
        for slot, cls, cap, what in ((self.cam_true, y_true, self.true_caption, "true class"),
                                     (self.cam_adv, y_adv, self.adv_caption, "adversarial class")):
            cam = explain.gradcam(st.model, xa, target=int(cls))[0, 0].detach().float().cpu().numpy()
            slot.value = R.png(R.blend(base, R.colorize(cam, "jet", vmax=1.0), self.alpha * cam + 0.15))
            cap.value = f"<b>Grad-CAM, {what}: {html.escape(st.class_name(int(cls)))}</b>"
        vals = np.asarray(list(self.divergence.values()))
        finite = np.isfinite(vals)
        top = names[int(np.argmax(np.where(finite, vals, -1)))] if finite.any() else "?"
        jump = np.diff(np.where(finite, vals, 0.0))
        grow = names[int(np.argmax(jump)) + 1] if len(jump) else top
        self.info.value = (f'<div class="advviz-takeover-info" style="font-family:sans-serif;font-size:13px">'
                           f"first layer {vals[0]:.3f}, logits {vals[-1]:.3f}; largest at <code>{html.escape(top)}</code>,"
                           f" steepest rise into <code>{html.escape(grow)}</code>"
                           f"{' — the attack did not change the prediction' if y_adv == y_true else ''}</div>")

    def _clear(self) -> None:
        """Nothing of an earlier adversarial image stays: chart, maps, captions and the summary."""
        self.divergence = {}
        self.cam_true.value = self.cam_adv.value = b""
        self.true_caption.value, self.adv_caption.value = "<b>true class</b>", "<b>adversarial class</b>"
        self.info.value = ""
        self.chart.value = R.placeholder_html("run an attack (Attack lab or CFR tab): this view shows where in the "
                                              "network its change takes over", SLOT).replace("width:178px", "width:460px;max-width:100%")

    @guarded
    def _on_adv(self, state: ExplorerState) -> None:
        self.errors.clear()
        if state.x_adv is None:
            self._clear()
        else:
            self.render()

    @guarded
    def _on_clear(self, state: ExplorerState, *_: Any) -> None:
        self._clear()
