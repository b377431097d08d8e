"""FeatureMapView: a channel grid of any layer's activations, clean beside adversarial."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W
import torch
from torch import nn

from advviz import explain, models
from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._layers import spatial_layers
from advviz.widgets._state import ExplorerState

__all__ = ["FeatureMapView"]

CURRENT = "current model"


def _vgg16_untrained() -> nn.Module:
    return models.create("vgg16").eval()


TILE = 76      # displayed size of one channel tile (pixels)
BIG = 200      # displayed size of an enlarged channel


class _Tile(W.VBox):
    """One channel: its map (scaled to its own range) above a numbered button that enlarges it."""

    def __init__(self, on_click: Any) -> None:
        self.channel = -1
        self.image = W.Image(format="png", layout=W.Layout(width=f"{TILE}px", height=f"{TILE}px",
                                                           object_fit="contain"))
        self.button = W.Button(description="", layout=W.Layout(width=f"{TILE}px", height="24px", padding="0"))
        self.button.add_class("advviz-fmap-channel")
        self.button.on_click(lambda _b: on_click(self.channel))
        super().__init__([self.image, self.button], layout=W.Layout(flex="0 0 auto", margin="0 4px 4px 0"))

    def show(self, channel: int, png: bytes, *, selected: bool) -> None:
        self.channel = channel
        self.image.value = png
        self.button.description = f"ch {channel}"
        self.button.tooltip = f"enlarge channel {channel}"
        self.button.button_style = "info" if selected else ""
        self.layout.display = None

    def hide(self) -> None:
        self.channel = -1
        self.layout.display = "none"


class FeatureMapView(W.VBox):
    """Layer dropdown and a grid of channels for the current image (and the adversarial one).

    Each channel is a numbered tile (scaled to its own range, so that its pattern shows);
    clicking its number enlarges it, clean beside adversarial, with a colour bar in the
    layer's activation units.

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
        self.channel = 0  # the enlarged channel
        self.clean_tiles = [_Tile(self._enlarge_clicked) for _ in range(channels)]
        self.adv_tiles = [_Tile(self._enlarge_clicked) for _ in range(channels)]
        width = f"{cols * (TILE + 4) + 4}px"  # `cols` tiles a row where there is room, fewer where not
        self.clean_grid = W.HBox(self.clean_tiles, layout=W.Layout(flex_flow="row wrap", width=width, max_width="100%"))
        self.clean_grid.add_class("advviz-fmap-clean")
        self.adv_grid = W.HBox(self.adv_tiles, layout=W.Layout(flex_flow="row wrap", width=width, max_width="100%"))
        self.adv_caption = W.HTML()
        self.tile_scale = W.HTML(R.colorbar_html("viridis", 0, 1, fmt="{:g}", width=cols * (TILE + 4),
                                                 label="each tile: its own minimum (0) to maximum (1)"))
        self.big_clean = R.ImageSlot("click a channel number to enlarge it", size=BIG, css_class="advviz-fmap-big")
        self.big_adv = R.ImageSlot("run an attack to compare", size=BIG)
        self.big_caption = W.HTML()
        self.big_scale = W.HTML()
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
            R.row(self.network, self.layer, self.all_layers),
            R.row(self.page, self.page_label, self.compare),
            R.row(W.VBox([W.HTML("<b>clean</b>"), self.clean_grid, self.tile_scale],
                         layout=W.Layout(flex="0 1 auto", max_width="100%")),
                  W.VBox([self.adv_caption, self.adv_grid], layout=W.Layout(flex="0 1 auto", max_width="100%"))),
            self.big_caption,
            R.row(R.captioned(self.big_clean, "clean"), R.captioned(self.big_adv, "adversarial"), self.big_scale),
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
        self.page_label.value = f"channels {lo}–{hi - 1} of {k} ({fm.shape[1]}×{fm.shape[2]} each)"
        if not lo <= self.channel < hi:
            self.channel = lo
        scale = R.display_scale(fm.shape[1], fm.shape[2], target=TILE)
        adv = self.maps("adversarial") if self.compare.value else {}
        for tiles, maps in ((self.clean_tiles, fm), (self.adv_tiles, adv[self.layer.value][0] if adv else None)):
            for j, tile in enumerate(tiles):
                c = lo + j
                if maps is None or c >= hi:
                    tile.hide()
                    continue
                m = maps[c]
                tile.show(c, R.png(R.colorize(m - m.min(), "viridis"), scale=scale), selected=c == self.channel)
        if adv:
            self.adv_caption.value = f"<b>adversarial ({self.state.attack})</b>"
        else:
            self.adv_caption.value = ("<i>run an attack to compare</i>" if self.compare.value else "")
        self.enlarge(self.channel)

    def enlarge(self, channel: int) -> None:
        """Show channel ``channel`` of the current layer large, clean beside adversarial, on one colour scale."""
        clean = self.maps("clean")
        if not clean:
            return
        fm = clean[self.layer.value][0]
        if not 0 <= channel < fm.shape[0]:
            raise ValueError(f"layer {self.layer.value} has channels 0..{fm.shape[0] - 1}, not {channel}")
        self.channel = channel
        adv = self.maps("adversarial") if self.compare.value else {}
        am = adv[self.layer.value][0][channel] if adv else None
        cm = fm[channel]
        lo = float(cm.min()) if am is None else min(float(cm.min()), float(am.min()))
        hi = float(cm.max()) if am is None else max(float(cm.max()), float(am.max()))
        span = hi - lo if hi > lo else 1.0
        scale = R.display_scale(cm.shape[0], cm.shape[1], target=BIG)
        self.big_clean.value = R.png(R.colorize(cm - lo, "viridis", vmax=span), scale=scale)
        self.big_adv.value = R.png(R.colorize(am - lo, "viridis", vmax=span), scale=scale) if am is not None else b""
        self.big_caption.value = f"<b>channel {channel} of {html.escape(str(self.layer.value))}</b>"
        self.big_scale.value = R.colorbar_html("viridis", lo, hi, fmt="{:.3g}", width=BIG,
                                               label="activation value (both images on this scale)")
        for tiles in (self.clean_tiles, self.adv_tiles):
            for t in tiles:
                if t.channel >= 0:
                    t.button.button_style = "info" if t.channel == channel else ""

    @guarded
    def _enlarge_clicked(self, channel: int) -> None:
        if channel >= 0:
            self.enlarge(channel)

    @guarded
    def _on_render(self, change: dict[str, Any]) -> None:
        self.render()

    @guarded
    def _on_network(self, change: dict[str, Any]) -> None:
        self._cache.clear()
        self.render()

    def _blank(self) -> None:
        for t in self.clean_tiles + self.adv_tiles:
            t.hide()
        self.big_clean.value = self.big_adv.value = b""
        self.big_caption.value = self.big_scale.value = self.adv_caption.value = ""

    @guarded
    def _on_image(self, state: ExplorerState) -> None:
        self.errors.clear()
        self._cache.clear()
        self._refresh_networks()
        if state.x is not None and tuple(state.x.shape) == state.input_size:
            self.render()
        else:
            self._blank()

    @guarded
    def _on_adv(self, state: ExplorerState) -> None:
        for key in [k for k in self._cache if k[1] == "adversarial"]:
            del self._cache[key]
        self.render()
