"""Turning tensors into pixels for the widgets: PNG bytes made with NumPy and Pillow.

No computation on the images' meaning happens here (that is ``advviz.explain``); only display:
uint8 conversion, colour maps through a cached lookup table, colour bars, alpha blending,
integer up-scaling of small images (nearest neighbour, so pixels stay visible), tiling,
matplotlib charts rendered off-screen as inline SVG (drawn at their displayed size, never
stretched; PNG kept for callers that want bytes), and the layout pieces every component uses:
:class:`ImageSlot` (a fixed-size image that shows a placeholder text while empty), :func:`row`
(a wrapping row, so the layout holds from 1024 to 1920 pixels) and :func:`captioned`.
"""

from __future__ import annotations

import html as _html
import io
from collections.abc import Sequence
from functools import lru_cache

import ipywidgets as W
import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["to_uint8", "colorize", "blend", "png", "grid", "bars_png", "history_png", "display_scale", "bars_svg",
           "history_svg", "line_svg", "colorbar_html", "signed_map", "ImageSlot", "row", "captioned", "placeholder_html"]

DISPLAY_PX = 192  # small images are scaled up to about this many pixels (nearest neighbour)


def display_scale(h: int, w: int, target: int = DISPLAY_PX) -> int:
    """Integer up-scaling factor for an ``h x w`` image (1 for images already that large)."""
    return max(1, target // max(h, w, 1))


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(C, H, W)`` or ``(H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8 RGB (grey is repeated)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr.transpose(1, 2, 0)
    else:
        arr = arr[:, :, None]
    arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


@lru_cache(maxsize=16)
def _lut(name: str) -> np.ndarray:
    cmap = matplotlib.colormaps[name]
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def colorize(values: torch.Tensor | np.ndarray, cmap: str = "jet", *, vmax: float | None = None) -> np.ndarray:
    """``(H, W)`` (or ``(1, H, W)``) values -> ``(H, W, 3)`` uint8 through a colour map.

    Values are divided by ``vmax`` (default: their maximum, so the largest value is the top
    colour; an all-zero map stays at the bottom colour) and clipped to [0, 1].
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    v = np.asarray(values, dtype=np.float32)
    if v.ndim == 3:
        v = v[0]
    top = float(v.max()) if vmax is None else float(vmax)
    if top > 0:
        v = v * (255.0 / top)
    else:
        v = np.zeros_like(v)
    idx = np.clip(v, 0, 255).astype(np.uint8)
    return _lut(cmap)[idx]


def blend(base: np.ndarray, over: np.ndarray, alpha: float | np.ndarray = 0.5) -> np.ndarray:
    """Alpha-blend two ``(H, W, 3)`` uint8 images; ``alpha`` scalar or ``(H, W)`` weight of ``over``."""
    a = np.asarray(alpha, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    out = base.astype(np.float32) * (1.0 - a) + over.astype(np.float32) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def png(arr: np.ndarray, *, scale: int | None = None) -> bytes:
    """Encode ``(H, W, 3)`` uint8 as PNG bytes, up-scaled by an integer factor (nearest)."""
    h, w = arr.shape[:2]
    k = display_scale(h, w) if scale is None else int(scale)
    if k > 1:
        arr = np.repeat(np.repeat(arr, k, axis=0), k, axis=1)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def grid(maps: torch.Tensor | np.ndarray, *, cols: int = 8, pad: int = 1, cmap: str = "viridis") -> np.ndarray:
    """Tile ``(N, h, w)`` maps (each scaled to its own max) into one ``(H, W, 3)`` uint8 image."""
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().float().cpu().numpy()
    m = np.asarray(maps, dtype=np.float32)
    n, h, w = m.shape
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    lo = m.reshape(n, -1).min(axis=1)
    for i in range(n):
        r, c = divmod(i, cols)
        tile = colorize(m[i] - lo[i], cmap)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = tile
    return out


def _fig_svg(fig) -> str:  # noqa: ANN001 - a matplotlib Figure
    """The figure as inline SVG (text kept as text), drawn at its own size: never stretched."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    svg = text[text.index("<svg"):]
    # never wider than the panel that holds it: scaled down (aspect kept) where the panel is narrower
    return svg.replace("<svg ", '<svg style="max-width:100%;height:auto" ', 1)


def _fig_png(fig) -> bytes:  # noqa: ANN001 - a matplotlib Figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def _bars_fig(series: Sequence[tuple[str, Sequence[float]]], classes: Sequence[str], *, top: int = 5,
              highlight: int | None = None, width: float = 2.7):  # noqa: ANN202 - a matplotlib Figure

    k = len(series)
    fig = Figure(figsize=(width * k, 1.9), dpi=80, layout="constrained")
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, (title, probs) in zip(axes, series):
        p = np.asarray(probs, dtype=np.float64)
        order = np.argsort(-p)[:min(top, len(p))][::-1]
        names = [str(classes[i]) if i < len(classes) else str(i) for i in order]
        colours = ["#27ae60" if (highlight is not None and i == highlight) else "#2e86c1" for i in order]
        ax.barh(range(len(order)), p[order], color=colours)
        ax.set_yticks(range(len(order)), names, fontsize=8)
        ax.set_xlim(0, 1)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("probability", fontsize=7)
    return fig


def bars_png(series: Sequence[tuple[str, Sequence[float]]], classes: Sequence[str], *, top: int = 5,
             highlight: int | None = None) -> bytes:
    """Horizontal bar charts of class probabilities, one panel per ``(title, probs)``.

    Each panel shows its ``top`` most probable classes; ``highlight`` (the true label) is drawn
    in green, others in blue.
    """
    return _fig_png(_bars_fig(series, classes, top=top, highlight=highlight))


def bars_svg(series: Sequence[tuple[str, Sequence[float]]], classes: Sequence[str], *, top: int = 5,
             highlight: int | None = None) -> str:
    """:func:`bars_png` as inline SVG for a ``W.HTML``: drawn at its displayed size, labels whole."""
    return _fig_svg(_bars_fig(series, classes, top=top, highlight=highlight))


def _history_fig(history: Sequence[dict[str, float]], *, batch_losses: Sequence[float] = ()):  # noqa: ANN202

    fig = Figure(figsize=(6.4, 2.2), dpi=80, layout="constrained")
    ax_l, ax_a = fig.subplots(1, 2)
    if batch_losses:
        n = len(batch_losses)
        ax_l.plot(np.linspace(0, max(len(history), 1), n, endpoint=False) + 1.0 / max(n, 1), batch_losses,
                  color="#aab7b8", lw=0.8, label="batch")
    if history:
        ep = [h["epoch"] for h in history]
        ax_l.plot(ep, [h["loss"] for h in history], "o-", color="#c0392b", label="epoch")
        ax_a.plot(ep, [h["accuracy"] for h in history], "o-", color="#2e86c1", label="train")
        if "val_accuracy" in history[0]:
            ax_a.plot(ep, [h["val_accuracy"] for h in history], "s--", color="#27ae60", label="held-out")
    ax_l.set_title("loss", fontsize=9)
    ax_a.set_title("accuracy", fontsize=9)
    ax_a.set_ylim(0, 1)
    for ax in (ax_l, ax_a):
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def history_png(history: Sequence[dict[str, float]], *, batch_losses: Sequence[float] = ()) -> bytes:
    """Loss (left) and accuracy (right) per epoch; running batch losses as a faint line."""
    return _fig_png(_history_fig(history, batch_losses=batch_losses))


def history_svg(history: Sequence[dict[str, float]], *, batch_losses: Sequence[float] = ()) -> str:
    """:func:`history_png` as inline SVG (sharp at any zoom, never stretched)."""
    return _fig_svg(_history_fig(history, batch_losses=batch_losses))


def line_svg(xs: Sequence[float], series: Sequence[tuple[str, Sequence[float]]], *, xlabel: str, ylabel: str,
             title: str = "", xticks: Sequence[str] | None = None, mark: float | None = None,
             current: float | None = None, size: tuple[float, float] = (4.6, 2.2),
             legend: bool | None = None) -> str:
    """Lines ``(label, ys)`` over ``xs`` as inline SVG; ``mark`` draws a dashed vertical line there,
    ``current`` a solid one with each line's point at that x ringed (the step shown); ``legend``
    (default: when there are several lines) names the lines."""
    fig = Figure(figsize=size, dpi=80, layout="constrained")
    ax = fig.subplots()
    colours = ["#c0392b", "#2e86c1", "#27ae60", "#8e44ad"]
    for i, (label, ys) in enumerate(series):
        ax.plot(list(xs), list(ys), "o-", ms=3, lw=1.4, color=colours[i % len(colours)], label=label)
    if mark is not None:
        ax.axvline(mark, color="#7f8c8d", ls="--", lw=1)
    if current is not None:
        ax.axvline(current, color="#f39c12", ls="-", lw=2, alpha=0.8)
        for _, ys in series:
            pts = [(x, y) for x, y in zip(xs, ys) if x == current and y == y]
            if pts:
                ax.plot([pts[0][0]], [pts[0][1]], "o", ms=8, mfc="none", mec="#f39c12", mew=2)
    if xticks is not None:
        ax.set_xticks(list(xs), list(xticks), rotation=45, ha="right", fontsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    if legend or (legend is None and len(series) > 1):
        ax.legend(fontsize=7)
    return _fig_svg(fig)


# ---------------------------------------------------------------------------------------------
# colour scales and signed maps
# ---------------------------------------------------------------------------------------------

def colorbar_html(cmap: str, lo: float, hi: float, *, label: str, fmt: str = "{:.2g}", width: int = 180) -> str:
    """A horizontal colour bar (CSS gradient of ``cmap``) from ``lo`` to ``hi`` with its unit ``label``."""
    lut = _lut(cmap)
    stops = ", ".join(f"rgb({r},{g},{b}) {100 * i / 10:.0f}%" for i, (r, g, b) in
                      enumerate(lut[np.linspace(0, 255, 11).astype(int)]))
    mid = (lo + hi) / 2
    return (f'<div class="advviz-colorbar" style="width:{width}px;max-width:100%;font-family:sans-serif;'
            'font-size:11px;color:#333;line-height:1.25">'
            f'<div style="height:10px;border:1px solid #999;background:linear-gradient(to right, {stops})"></div>'
            f'<div style="display:flex;justify-content:space-between"><span>{fmt.format(lo)}</span>'
            f"<span>{fmt.format(mid)}</span><span>{fmt.format(hi)}</span></div>"
            f'<div style="text-align:center">{_html.escape(label)}</div></div>')


def signed_map(values: torch.Tensor | np.ndarray, vmax: float, cmap: str = "RdBu_r") -> np.ndarray:
    """``(H, W)`` signed values -> ``(H, W, 3)`` uint8 on a diverging map: ``-vmax`` .. 0 (white) .. ``+vmax``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    v = np.asarray(values, dtype=np.float32)
    if v.ndim == 3:
        v = v[0]
    top = float(vmax) if vmax > 0 else 1.0
    idx = np.clip((v / top + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return _lut(cmap)[idx]


# ---------------------------------------------------------------------------------------------
# layout pieces shared by the components
# ---------------------------------------------------------------------------------------------

def placeholder_html(text: str, size: int) -> str:
    """A grey dashed box of ``size`` pixels with ``text`` inside: what an empty image slot shows."""
    return (f'<div class="advviz-placeholder" style="width:{size - 2}px;height:{size - 2}px;border:1px dashed #bbb;'
            'display:flex;align-items:center;justify-content:center;text-align:center;color:#888;'
            f'font-family:sans-serif;font-size:12px;padding:4px;box-sizing:border-box">{_html.escape(text)}</div>')


class ImageSlot(W.Box):
    """An image of fixed display size (aspect kept) that shows ``placeholder`` text while it is empty.

    ``.value`` (PNG bytes) reads and sets the image; ``b""`` shows the placeholder instead of a
    broken-image icon. ``.image`` is the ``W.Image`` (``css_class`` is added to it).
    """

    def __init__(self, placeholder: str, *, size: int = 180, css_class: str | None = None) -> None:
        self.image = W.Image(format="png", layout=W.Layout(width=f"{size}px", height=f"{size}px",
                                                           object_fit="contain", flex="0 0 auto"))
        if css_class:
            self.image.add_class(css_class)
        self.size = size
        self._placeholder = placeholder
        self.empty = W.HTML(placeholder_html(placeholder, size))
        super().__init__(children=[self.empty], layout=W.Layout(flex="0 0 auto"))
        self.add_class("advviz-slot")

    @property
    def placeholder(self) -> str:
        return self._placeholder

    @placeholder.setter
    def placeholder(self, text: str) -> None:
        self._placeholder = text
        self.empty.value = placeholder_html(text, self.size)

    @property
    def value(self) -> bytes:
        return self.image.value

    @value.setter
    def value(self, data: bytes) -> None:
        self.image.value = data or b""
        want = [self.image] if data else [self.empty]
        if list(self.children) != want:
            self.children = want



def row(*children: W.Widget, gap: str = "10px") -> W.HBox:
    """A wrapping row: children keep their size and flow onto the next line when space runs out."""
    return W.HBox(list(children), layout=W.Layout(flex_flow="row wrap", align_items="flex-start", grid_gap=gap,
                                                  width="100%"))


def captioned(widget: W.Widget, text: str, *, below: W.Widget | None = None) -> W.VBox:
    """``widget`` under a bold caption (and above ``below``, e.g. a colour bar)."""
    cap = W.HTML(f"<b>{_html.escape(text)}</b>")
    return W.VBox([cap, widget] + ([below] if below is not None else []), layout=W.Layout(flex="0 0 auto"))
