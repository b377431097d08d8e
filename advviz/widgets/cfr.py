"""CFRView: Grad-CAM overlay and the CFR soft mask, with a live threshold slider.

Grad-CAM is computed once per image, model and layer (``advviz.explain.gradcam``) and cached;
moving the τ slider only re-runs ``advviz.explain.cfr_mask`` on the cached map and re-encodes
one small PNG, so a step costs a few milliseconds (see ``advviz bench widgets``).
The "run CFR attack" button calls the registered ``cfr`` attack with the current τ.
"""

from __future__ import annotations

import html
import sys
import time
import warnings
from typing import Any

import ipywidgets as W
import numpy as np
import torch
from torch import nn

from advviz import attacks, explain, metrics
from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._layers import spatial_layers
from advviz.widgets._state import ExplorerState

__all__ = ["CFRView", "cam_layers"]

SLOT = 200


def cam_layers(model: nn.Module, input_size: tuple[int, int, int], device: torch.device | str = "cpu") -> list[str]:
    """Grad-CAM layer choices: the model's ``last_conv`` first, then conv layers and stages in order."""
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    names = [n for n in spatial_layers(model, input_size, device=device) if n in convs or "." not in n]
    last = getattr(model, "last_conv", "")
    if last:
        names = [last] + [n for n in names if n != last]
    return names


class CFRView(W.VBox):
    """Image with its Grad-CAM overlay, the CFR soft mask (eq. 6) and a τ slider; runs the CFR attack.

    The soft mask is drawn scaled to its own maximum (its pattern shows at any τ; the colour bar
    gives the maximum), or, with "mask on a fixed 0–1 scale", on one scale for every τ.

    Args:
        state: the shared :class:`ExplorerState`.
        tau: initial threshold τ in [0, 1].
        layer: Grad-CAM layer name (default: the model's last conv layer).
        alpha: opacity of the Grad-CAM overlay.
    """

    def __init__(self, state: ExplorerState, *, tau: float = 0.2, layer: str | None = None,
                 alpha: float = 0.5) -> None:
        self.state = state
        self.errors = ErrorArea()
        self.alpha = alpha
        self._cam: torch.Tensor | None = None  # (1, 1, H, W) in [0, 1]
        self._base: np.ndarray | None = None   # (H, W, 3) uint8 of the image
        self._cam_key: tuple[Any, ...] | None = None
        self.step_times: list[float] = []       # seconds per τ step (kept for the benchmark)
        self.mask_fraction = float("nan")       # share of pixels inside the CFR at the current τ
        self._quiet = False                     # True while the layer list is being replaced
        self.layer = W.Dropdown(options=[], description="layer", layout=W.Layout(width="300px"))
        self.tau = W.FloatSlider(value=tau, min=0.0, max=1.0, step=0.01, description="τ (tau)",
                                 continuous_update=True, readout_format=".2f", layout=W.Layout(width="420px"))
        self.tau.add_class("advviz-tau")
        self.overlay = R.ImageSlot("pick an image", size=SLOT, css_class="advviz-cam")
        self.mask = R.ImageSlot("pick an image", size=SLOT, css_class="advviz-mask")
        self.masked = R.ImageSlot("pick an image", size=SLOT)
        self.cam_scale = W.HTML(R.colorbar_html("jet", 0.0, 1.0, label="Grad-CAM relevance (1 = the map's maximum)",
                                                width=SLOT))
        self.mask_scale = W.HTML()
        self.mask_fixed = W.Checkbox(value=False, description="mask on a fixed 0–1 scale", indent=False,
                                     layout=W.Layout(width="220px"))
        self.mask_fixed.add_class("advviz-mask-fixed")
        self.mask_caption = W.HTML("<b>soft mask M̃ (scaled to its max)</b>")
        self.mask_info = W.HTML()
        self.run_button = W.Button(description="run CFR attack", icon="bolt", button_style="danger",
                                   layout=W.Layout(width="180px"))
        self.adv = R.ImageSlot("press “run CFR attack”", size=SLOT)
        self.pert = R.ImageSlot("the CFR attack's change appears here", size=SLOT)
        self.pert_scale = W.HTML()
        self.bars = W.HTML()
        self.result = W.HTML()
        self.layer.observe(self._on_layer, names="value")
        self._populate_layers(layer)
        self.tau.observe(self._on_tau, names="value")
        self.mask_fixed.observe(self._on_tau, names="value")
        self.run_button.on_click(self._on_run)
        state.observe(self._on_model, "model")
        state.observe(self._on_image, "image")

        super().__init__(children=[
            R.row(self.layer, self.tau, self.mask_fixed),
            R.row(R.captioned(self.overlay, "image + Grad-CAM", below=self.cam_scale),
                  W.VBox([self.mask_caption, self.mask, self.mask_scale], layout=W.Layout(flex="0 0 auto")),
                  R.captioned(self.masked, "image × mask")),
            self.mask_info,
            self.run_button,
            R.row(R.captioned(self.adv, "adversarial"),
                  R.captioned(self.pert, "signed change δ = x_adv − x", below=self.pert_scale),
                  W.VBox([self.result, self.bars], layout=W.Layout(flex="0 0 auto"))),
            self.errors,
        ])
        if state.x is not None:
            self._on_image(state)

    # ------------------------------------------------------------------------------------ core
    @property
    def cam(self) -> torch.Tensor | None:
        """The cached Grad-CAM map ``(1, 1, H, W)`` in [0, 1] of the current image (``None`` before one)."""
        return self._cam

    def _populate_layers(self, layer: str | None = None) -> None:
        names = cam_layers(self.state.model, self.state.input_size, self.state.device)
        self._quiet = True
        try:
            self.layer.options = names
            self.layer.value = layer if layer in names else (names[0] if names else None)
        finally:
            self._quiet = False

    def compute_cam(self) -> None:
        """Compute and cache Grad-CAM of the current image at the chosen layer.

        The map explains the true class when the image has a label (the CFR is defined on the
        true class), else the predicted class.
        """
        st = self.state
        x = st.batch()
        self._cam = explain.gradcam(st.model, x, target=st.y, layer=self.layer.value).detach().float().cpu()
        self._base = R.to_uint8(st.x)
        cam = self._cam[0, 0].numpy()
        self.overlay.value = R.png(R.blend(self._base, R.colorize(cam, "jet", vmax=1.0), self.alpha * cam + 0.15))
        self._cam_key = (id(st.model), id(st.x), self.layer.value)
        self.render_mask()

    def render_mask(self) -> None:
        """Re-render the soft mask for the current τ from the cached Grad-CAM map (no recomputation)."""
        if self._cam is None or self._base is None:
            return
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = explain.cfr_mask(self._cam, float(self.tau.value))[0, 0].numpy()
        top = float(m.max())
        scaled = m / top if top > 0 else m
        fixed = bool(self.mask_fixed.value)  # a fixed scale: masks at different τ compare colour for colour
        self.mask.value = R.png(R.colorize(m if fixed else scaled, "inferno", vmax=1.0))
        self.mask_caption.value = f"<b>soft mask M̃ ({'on a fixed 0–1 scale' if fixed else 'scaled to its max'})</b>"
        self.mask_scale.value = R.colorbar_html("inferno", 0.0, 1.0 if fixed else top, fmt="{:.2g}", width=SLOT,
                                                label="mask weight M̃ (0 = outside the CFR)")
        self.masked.value = R.png(R.blend(np.zeros_like(self._base), self._base, scaled))
        frac = float((m > 0).mean())
        self.mask_fraction = frac
        note = " — the Grad-CAM map has nothing at or above τ: the mask is empty" if caught or top <= 0 else ""
        self.mask_info.value = (f'<span class="advviz-mask-info">τ = {self.tau.value:.2f}: '
                                f"{frac:.1%} of the pixels are in the CFR{note}</span>")
        self.step_times.append(time.perf_counter() - t0)

    # ------------------------------------------------------------------------------------ callbacks
    @guarded
    def _on_tau(self, change: dict[str, Any]) -> None:
        self.render_mask()

    @guarded
    def _on_layer(self, change: dict[str, Any]) -> None:
        if not self._quiet and self.state.x is not None:
            self.compute_cam()

    def _clear_attack(self) -> None:
        self.adv.value = self.pert.value = b""
        self.bars.value = self.result.value = self.pert_scale.value = ""

    @guarded
    def _on_image(self, state: ExplorerState) -> None:
        self.errors.clear()
        self._clear_attack()
        if state.x is None:
            self.overlay.value = self.mask.value = self.masked.value = b""
            self._cam = None
            return
        self.compute_cam()

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        self._populate_layers(self.layer.value)
        self._clear_attack()
        if state.x is not None and tuple(state.x.shape) == state.input_size:
            self.compute_cam()
        else:
            self.overlay.value = self.mask.value = self.masked.value = b""
            self._cam = None

    @guarded
    def _on_run(self, _button: W.Button | None = None) -> None:
        self.run_attack()

    def run_attack(self) -> torch.Tensor | None:
        """Run ``advviz.attacks.get("cfr")`` on the current image with the current τ.

        Shows the adversarial image, the perturbation heatmap and the predictions before and
        after, and records the result in the shared state. When no ``cfr`` attack is registered
        it says so in the widget and returns ``None``.
        """
        self.errors.clear()
        if "cfr" not in attacks.list_attacks():
            self.errors.message("The CFR attack is not available in this version of advviz yet "
                                "(advviz.attacks.get('cfr') is not registered). The Grad-CAM map and soft mask "
                                "above work; this button runs the attack once it is added.", kind="warning")
            return None
        spec = attacks.get("cfr")
        st = self.state
        x = st.batch()
        before = st.predict()
        y = st.label_tensor(before.label if st.y is None else st.y)
        tau = float(self.tau.value)
        variant = getattr(sys.modules.get(spec.fn.__module__), "cfr_attack", None)
        self.run_button.disabled = True
        try:
            t0 = time.perf_counter()
            if variant is not None and self._cam is not None:
                # the variant reuses the cached Grad-CAM map (true class) and returns the mask too
                res = variant(st.model, x, y, tau=tau, cam=self._cam.to(st.device), layer=self.layer.value)
                x_adv = res.x_adv
            else:
                kwargs = {"tau": tau} if any(p.name == "tau" for p in spec.params) else {}
                x_adv = spec(st.model, x, y, **kwargs)
            secs = time.perf_counter() - t0
        finally:
            self.run_button.disabled = False
        after = st.predict(x_adv[0].cpu())
        mean_delta = explain.signed_perturbation(x, x_adv)[0].mean(0)
        top = float(mean_delta.abs().max())
        self.adv.value = R.png(R.to_uint8(x_adv[0]))
        self.pert.value = R.png(R.signed_map(mean_delta, top))
        self.pert_scale.value = R.colorbar_html("RdBu_r", -top * 255, top * 255, fmt="{:+.1f}", width=SLOT,
                                                label="δ per pixel (/255), mean over channels")
        self.bars.value = R.bars_svg([("before", before.probs.tolist()), ("after", after.probs.tolist())],
                                     st.classes, highlight=st.y)

        n = metrics.lp_norms(x, x_adv)
        ok = after.label != int(y[0])
        self.result.value = (
            '<div style="font-family:sans-serif;font-size:13px">'
            f"<b>CFR</b> (τ = {self.tau.value:.2f}) in {secs:.2f} s: "
            f"{html.escape(st.class_name(before.label))} → <b>{html.escape(st.class_name(after.label))}</b> "
            f"({'success' if ok else 'not fooled'})<br>"
            f"ℓ0 {n['l0']:.0f}, ℓ2 {n['l2']:.3f}, ℓ∞ {n['linf'] * 255:.1f}/255, "
            f"SSIM {metrics.ssim(x, x_adv):.4f}</div>")
        st.set_adversarial(x_adv[0], attack="cfr")
        return x_adv
