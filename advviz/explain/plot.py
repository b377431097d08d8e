"""Plot helpers for images, Grad-CAM overlays, masks, feature maps and perturbations.

Tensors stay ``(C, H, W)`` (or ``(1, C, H, W)``, ``(H, W)``) until plotting; conversion to numpy
happens here. matplotlib helpers take an optional ``ax`` and return its figure; without one
they create a :class:`matplotlib.figure.Figure` directly (not through ``pyplot``, so nothing
is left open in pyplot's registry and a notebook shows the returned figure once). plotly
helpers take an optional ``fig`` (and ``row``/``col`` for a ``make_subplots`` figure) and
return the figure.

matplotlib: :func:`show_image`, :func:`overlay_heatmap`, :func:`show_mask`,
:func:`feature_map_grid`, :func:`perturbation_heatmap`.
plotly: :func:`plotly_image`, :func:`plotly_overlay`, :func:`plotly_heatmap`,
:func:`plotly_feature_grid`, :func:`plotly_perturbation_heatmap`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.figure import Figure

from advviz.explain.perturbation import perturbation_magnitude

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = [
    "feature_map_grid",
    "overlay_heatmap",
    "perturbation_heatmap",
    "plotly_feature_grid",
    "plotly_heatmap",
    "plotly_image",
    "plotly_overlay",
    "plotly_perturbation_heatmap",
    "show_image",
    "show_mask",
]


# ---------------------------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------------------------

def _as_tensor(t: Any) -> torch.Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
    return t.detach().float().cpu()


def _image_np(image: Any) -> np.ndarray:
    """``(C, H, W)`` / ``(1, C, H, W)`` / ``(H, W)`` in [0, 1] -> ``(H, W)`` or ``(H, W, 3)`` numpy."""
    t = _as_tensor(image)
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"plot one image at a time: got a batch of {t.shape[0]} (index it, e.g. x[0])")
        t = t[0]
    if t.ndim == 2:
        return t.clamp(0, 1).numpy()
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"image must be (C, H, W) with C = 1 or 3, (1, C, H, W) or (H, W); got {tuple(t.shape)}")
    t = t.clamp(0, 1)
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


def _map_np(m: Any, name: str = "map") -> np.ndarray:
    """``(H, W)`` / ``(1, H, W)`` / ``(1, 1, H, W)`` -> ``(H, W)`` numpy."""
    t = _as_tensor(m)
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2:
        raise ValueError(f"{name} must be one 2-D map ((H, W), (1, H, W) or (1, 1, H, W)); "
                         f"got {tuple(_as_tensor(m).shape)}")
    return t.numpy()


def _mosaic(fmap: Any, max_channels: int, cols: int | None) -> tuple[np.ndarray, int, int]:
    """Channels of ``(K, h, w)`` / ``(1, K, h, w)`` tiled into one array, NaN between tiles.

    Each channel is scaled to [0, 1] by its own min/max (a constant channel shows as 0).
    Returns ``(mosaic, shown, total)``.
    """
    t = _as_tensor(fmap)
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"plot one image's maps at a time: got a batch of {t.shape[0]} (index it, e.g. f[0])")
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"feature map must be (K, h, w) or (1, K, h, w), got {tuple(_as_tensor(fmap).shape)}")
    if max_channels < 1:
        raise ValueError(f"max_channels must be >= 1, got {max_channels}")
    total = t.shape[0]
    t = t[:max_channels]
    k, h, w = t.shape
    lo = t.amin(dim=(1, 2), keepdim=True)
    span = t.amax(dim=(1, 2), keepdim=True) - lo
    t = torch.where(span > 0, (t - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(t))
    cols = cols or math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    gap = 1
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, dtype=np.float32)
    arr = t.numpy()
    for i in range(k):
        r, c = divmod(i, cols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = arr[i]
    return out, k, total


# ---------------------------------------------------------------------------------------------
# matplotlib
# ---------------------------------------------------------------------------------------------

def _axes(ax: Axes | None, figsize: tuple[float, float] = (3.2, 3.2)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax

    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def _finish(ax: Axes, title: str | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def show_image(image: Any, *, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Draw an image ``(C, H, W)`` in ``[0, 1]`` (RGB or grayscale).

    Returns:
        the figure holding ``ax`` (a new one when ``ax`` is ``None``).
    """
    fig, ax = _axes(ax)
    arr = _image_np(image)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    _finish(ax, title)
    return fig


def overlay_heatmap(image: Any, cam: Any, alpha: float = 0.5, cmap: str = "jet", *, ax: Axes | None = None,
                    title: str | None = None, colorbar: bool = False) -> Figure:
    """An image with a heatmap (e.g. Grad-CAM in ``[0, 1]``) blended on top.

    Args:
        image: ``(C, H, W)`` in ``[0, 1]``.
        cam: ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)`` values in ``[0, 1]``.
        alpha: opacity of the heatmap.
        cmap: matplotlib colormap of the heatmap.
        ax: axes to draw into.
        title: axes title.
        colorbar: add a colorbar for the heatmap.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    arr = _image_np(image)
    heat = _map_np(cam, "cam")
    if heat.shape != arr.shape[:2]:
        raise ValueError(f"cam {heat.shape} and image {arr.shape[:2]} must have the same size (gradcam upsamples)")
    fig, ax = _axes(ax)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    im = ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, interpolation="bilinear")
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _finish(ax, title)
    return fig


def show_mask(mask: Any, *, ax: Axes | None = None, cmap: str = "viridis", title: str | None = None,
              colorbar: bool = True) -> Figure:
    """A mask ``(H, W)`` / ``(1, 1, H, W)``: the CFR soft mask (eq. 6), a binary CFR, a map.

    The colour scale runs from 0 to the mask's maximum (soft masks sum to 1, so their entries
    are small).
    """
    arr = _map_np(mask, "mask")
    fig, ax = _axes(ax)
    top = float(np.nanmax(arr)) if arr.size else 1.0
    im = ax.imshow(arr, cmap=cmap, vmin=0.0, vmax=top if top > 0 else 1.0, interpolation="nearest")
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _finish(ax, title)
    return fig


def feature_map_grid(fmap: Any, max_channels: int = 16, *, ax: Axes | None = None, cols: int | None = None,
                     cmap: str = "viridis", title: str | None = None) -> Figure:
    """The first ``max_channels`` channels of a feature map ``(K, h, w)`` tiled in one axes.

    Each channel is scaled to its own min/max; tiles are separated by a blank line.
    """
    mosaic, shown, total = _mosaic(fmap, max_channels, cols)
    fig, ax = _axes(ax, figsize=(4.0, 4.0))
    ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    _finish(ax, title if title is not None else f"{shown} of {total} channels")
    return fig


def perturbation_heatmap(x: Any, x_adv: Any, reduce: str = "max", *, ax: Axes | None = None, cmap: str = "hot",
                         title: str | None = None, colorbar: bool = True) -> Figure:
    """Per-pixel perturbation size ``|x_adv - x|`` (max or L2 over channels) as a heatmap.

    Args:
        x: clean image ``(C, H, W)`` or ``(1, C, H, W)``.
        x_adv: adversarial image, same shape.
        reduce: ``"max"`` or ``"l2"`` (see :func:`advviz.explain.perturbation_magnitude`).
    """
    xb, ab = _as_tensor(x), _as_tensor(x_adv)
    if xb.ndim == 3:
        xb, ab = xb[None], ab[None]
    mag = perturbation_magnitude(xb, ab, reduce)
    fig, ax = _axes(ax)
    arr = _map_np(mag, "perturbation")
    im = ax.imshow(arr, cmap=cmap, vmin=0.0, vmax=max(float(arr.max()), 1e-12), interpolation="nearest")
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _finish(ax, title if title is not None else f"|δ| ({reduce} over channels)")
    return fig


# ---------------------------------------------------------------------------------------------
# plotly
# ---------------------------------------------------------------------------------------------

def _pfig(fig: Any) -> Any:
    return go.Figure() if fig is None else fig


def _add(fig: Any, trace: Any, row: int | None, col: int | None) -> None:
    if row is not None or col is not None:
        fig.add_trace(trace, row=row or 1, col=col or 1)
    else:
        fig.add_trace(trace)


def _image_axes(fig: Any, row: int | None, col: int | None, title: str | None) -> None:
    kw = {"row": row or 1, "col": col or 1} if (row is not None or col is not None) else {}
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, **kw)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed",
                     scaleanchor="x" if not kw else None, **kw)
    if title and not kw:
        fig.update_layout(title=title)


def _rgb_uint8(image: Any) -> np.ndarray:
    arr = _image_np(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.round(arr * 255).astype(np.uint8)


def plotly_image(image: Any, *, fig: Any = None, row: int | None = None, col: int | None = None,
                 title: str | None = None) -> Any:
    """An image ``(C, H, W)`` in ``[0, 1]`` as a plotly ``Image`` trace; returns the figure."""
    fig = _pfig(fig)
    _add(fig, go.Image(z=_rgb_uint8(image), hoverinfo="x+y+z"), row, col)
    _image_axes(fig, row, col, title)
    return fig


def plotly_overlay(image: Any, cam: Any, alpha: float = 0.5, colorscale: str = "Jet", *, fig: Any = None,
                   row: int | None = None, col: int | None = None, title: str | None = None,
                   showscale: bool = False) -> Any:
    """An image with a heatmap in ``[0, 1]`` (e.g. Grad-CAM) on top, as plotly traces."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = _rgb_uint8(image)
    heat = _map_np(cam, "cam")
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"cam {heat.shape} and image {rgb.shape[:2]} must have the same size (gradcam upsamples)")
    fig = _pfig(fig)
    _add(fig, go.Image(z=rgb, hoverinfo="skip"), row, col)
    _add(fig, go.Heatmap(z=heat, zmin=0.0, zmax=1.0, colorscale=colorscale, opacity=alpha,
                         showscale=showscale, hovertemplate="x=%{x} y=%{y} cam=%{z:.3f}<extra></extra>"), row, col)
    _image_axes(fig, row, col, title)
    return fig


def plotly_heatmap(values: Any, *, fig: Any = None, row: int | None = None, col: int | None = None,
                   colorscale: str = "Viridis", zmin: float | None = 0.0, zmax: float | None = None,
                   title: str | None = None, showscale: bool = True) -> Any:
    """Any 2-D map ``(H, W)`` / ``(1, 1, H, W)`` (mask, Grad-CAM, magnitude) as a heatmap."""
    arr = _map_np(values, "values")
    fig = _pfig(fig)
    _add(fig, go.Heatmap(z=arr, zmin=zmin, zmax=zmax, colorscale=colorscale, showscale=showscale), row, col)
    _image_axes(fig, row, col, title)
    return fig


def plotly_feature_grid(fmap: Any, max_channels: int = 16, *, fig: Any = None, row: int | None = None,
                        col: int | None = None, cols: int | None = None, colorscale: str = "Viridis",
                        title: str | None = None) -> Any:
    """The first ``max_channels`` channels of ``(K, h, w)`` tiled into one heatmap (gaps blank)."""
    mosaic, shown, total = _mosaic(fmap, max_channels, cols)
    fig = _pfig(fig)
    z = np.where(np.isnan(mosaic), None, mosaic).tolist()  # plotly leaves None cells blank
    _add(fig, go.Heatmap(z=z, zmin=0.0, zmax=1.0, colorscale=colorscale, showscale=False,
                            hoverongaps=False), row, col)
    _image_axes(fig, row, col, title if title is not None else f"{shown} of {total} channels")
    return fig


def plotly_perturbation_heatmap(x: Any, x_adv: Any, reduce: str = "max", *, fig: Any = None,
                                row: int | None = None, col: int | None = None, colorscale: str = "Hot",
                                title: str | None = None) -> Any:
    """Per-pixel perturbation size ``|x_adv - x|`` (max or L2 over channels) as a heatmap."""
    xb, ab = _as_tensor(x), _as_tensor(x_adv)
    if xb.ndim == 3:
        xb, ab = xb[None], ab[None]
    mag = perturbation_magnitude(xb, ab, reduce)
    return plotly_heatmap(mag, fig=fig, row=row, col=col, colorscale=colorscale, zmin=0.0, zmax=None,
                          title=title if title is not None else f"|δ| ({reduce} over channels)")
