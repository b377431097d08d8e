"""FeatureMapView: a channel grid of any layer's activations, clean beside adversarial."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as W
import torch
from torch import nn

from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._layers import spatial_layers
from advviz.widgets._state import ExplorerState

__all__ = ["FeatureMapView"]

CURRENT = "current model"


def _vgg16_untrained() -> nn.Module:
    from advviz import models

    return models.create("vgg16").eval()


class FeatureMapView(W.VBox):
    """Layer dropdown and a grid of channels for the current image (and the adversarial one).

    Feature maps come from ``advviz.explain.feature_maps``: its ``vgg16_blocks`` preset for a
    VGG-16, the end of each stage for other models, or every spatial layer ("all layers") and are cached per image and network; changing the layer or
    the channel page only re-renders.

    Args:
        state: the shared :class:`ExplorerState`.
        networks: extra networks by display name (factories are called on first use); the
            default adds an untrained CIFAR VGG-16 when the current model takes 3x32x32 images.
        channels: channels per page.
        cols: grid columns.
    """

    def __init__(self, state: ExplorerState, *, networks: dict[str, nn.Module | Callable[[], nn.Module]] | None = None,
                 channels: int = 16, cols: int = 8) -> None:
        self.state = state
        self.errors = ErrorArea()
        self.per_page = channels
        self.cols = cols
        if networks is None:
            networks = {"vgg16 (untrained weights, VGG-16 preset)": _vgg16_untrained}
        self._networks: dict[str, Any] = dict(networks)
        self._cache: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        self.network = W.Dropdown(options=[CURRENT], value=CURRENT, description="network",
                                  layout=W.Layout(width="380px"))
        self.layer = W.Dropdown(options=[], description="layer", layout=W.Layout(width="300px"))
        self.page = W.IntSlider(value=0, min=0, max=0, description="channels", continuous_update=False,
                                readout=False, layout=W.Layout(width="300px"))
        self.page_label = W.HTML()
        self.compare = W.Checkbox(value=True, description="beside the adversarial image", indent=False)
        self.all_layers = W.Checkbox(value=False, description="all layers (not only stage ends)", indent=False)
        self.clean_grid = W.Image(format="png")
        self.clean_grid.add_class("advviz-fmap-clean")
        self.adv_grid = W.Image(format="png")
        self.adv_caption = W.HTML()
        self._refresh_networks()
        self.network.observe(self._on_network, names="value")
        self.layer.observe(self._on_render, names="value")
        self.page.observe(self._on_render, names="value")
        self.compare.observe(self._on_render, names="value")
        self.all_layers.observe(self._on_render, names="value")
        state.observe(self._on_image, "image")
        state.observe(self._on_image, "model")
        state.observe(self._on_adv, "adversarial")
        super().__init__(children=[
            W.HBox([self.network, self.layer, self.all_layers]),
            W.HBox([self.page, self.page_label, self.compare]),
            W.HBox([W.VBox([W.HTML("<b>clean</b>"), self.clean_grid]),
                    W.VBox([self.adv_caption, self.adv_grid])]),
            self.errors,
        ])
        if state.x is not None:
            self._on_image(state)

    def _refresh_networks(self) -> None:
        opts = [CURRENT]
        if tuple(self.state.input_size) == (3, 32, 32):
            opts += list(self._networks)
        cur = self.network.value
        self.network.options = opts
        self.network.value = cur if cur in opts else CURRENT

    def _model(self) -> nn.Module:
        name = self.network.value
        if name == CURRENT:
            return self.state.model
        net = self._networks[name]
        if not isinstance(net, nn.Module):
            net = self._networks[name] = net()
        return net.to(self.state.device)

    def maps(self, which: str = "clean") -> dict[str, torch.Tensor]:
        """``{layer: (1, K, h, w)}`` for the current (``"clean"``) or adversarial image (cached)."""
        from advviz import explain

        st = self.state
        img = st.x if which == "clean" else st.x_adv
        if img is None:
            return {}
        key = (self.network.value, which, self.all_layers.value)
        if key not in self._cache:
            net = self._model()
            x = st.batch(img)
            if self.all_layers.value:
                out = explain.feature_maps(net, x, layers=spatial_layers(net, tuple(x.shape[1:]), device=x.device))
            elif type(net).__name__ == "CifarVGG" and getattr(net, "depth", None) == 16:
                out = explain.feature_maps(net, x, preset="vgg16_blocks")
            else:
                out = explain.feature_maps(net, x)  # the end of each stage
            self._cache[key] = {k: v.detach().float().cpu() for k, v in out.items()}
        return self._cache[key]

    def render(self) -> None:
        """Draw the chosen layer's channel page for the clean (and adversarial) image."""
        clean = self.maps("clean")
        if not clean:
            return
        names = list(clean)
        if list(self.layer.options) != names:
            cur = self.layer.value
            self.layer.unobserve(self._on_render, names="value")
            self.layer.options = names
            self.layer.value = cur if cur in names else names[-1]
            self.layer.observe(self._on_render, names="value")
        fm = clean[self.layer.value][0]
        k = fm.shape[0]
        pages = max(1, -(-k // self.per_page))
        self.page.unobserve(self._on_render, names="value")
        self.page.max = pages - 1
        self.page.observe(self._on_render, names="value")
        lo = self.page.value * self.per_page
        hi = min(k, lo + self.per_page)
        self.page_label.value = f"{lo}–{hi - 1} of {k} ({fm.shape[1]}×{fm.shape[2]})"
        scale = R.display_scale(fm.shape[1], fm.shape[2], target=48)
        self.clean_grid.value = R.png(R.grid(fm[lo:hi], cols=self.cols), scale=scale)
        adv = self.maps("adversarial") if self.compare.value else {}
        if adv:
            self.adv_caption.value = f"<b>adversarial ({self.state.attack})</b>"
            self.adv_grid.value = R.png(R.grid(adv[self.layer.value][0][lo:hi], cols=self.cols), scale=scale)
        else:
            self.adv_caption.value = ("<i>run an attack to compare</i>" if self.compare.value else "")
            self.adv_grid.value = b""

    @guarded
    def _on_render(self, change: dict[str, Any]) -> None:
        self.render()

    @guarded
    def _on_network(self, change: dict[str, Any]) -> None:
        self._cache.clear()
        self.render()

    @guarded
    def _on_image(self, state: ExplorerState) -> None:
        self.errors.clear()
        self._cache.clear()
        self._refresh_networks()
        if state.x is not None and tuple(state.x.shape) == state.input_size:
            self.render()

    @guarded
    def _on_adv(self, state: ExplorerState) -> None:
        for key in [k for k in self._cache if k[1] == "adversarial"]:
            del self._cache[key]
        self.render()
