"""Turning tensors into pixels for the widgets: PNG bytes made with NumPy and Pillow.

No computation on the images' meaning happens here (that is ``advviz.explain``); only display:
uint8 conversion, colour maps through a cached lookup table, alpha blending, integer
up-scaling of small images (nearest neighbour, so pixels stay visible), tiling, and
matplotlib charts rendered off-screen (Agg) to PNG.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

__all__ = ["to_uint8", "colorize", "blend", "png", "grid", "bars_png", "history_png", "display_scale"]

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
    import matplotlib

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
    from PIL import Image

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


def _fig_png(fig) -> bytes:  # noqa: ANN001 - a matplotlib Figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def bars_png(series: Sequence[tuple[str, Sequence[float]]], classes: Sequence[str], *, top: int = 5,
             highlight: int | None = None) -> bytes:
    """Horizontal bar charts of class probabilities, one panel per ``(title, probs)``.

    Each panel shows its ``top`` most probable classes; ``highlight`` (the true label) is drawn
    in green, others in blue.
    """
    from matplotlib.figure import Figure

    k = len(series)
    fig = Figure(figsize=(2.7 * k, 1.9), dpi=80, layout="constrained")
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
    return _fig_png(fig)


def history_png(history: Sequence[dict[str, float]], *, batch_losses: Sequence[float] = ()) -> bytes:
    """Loss (left) and accuracy (right) per epoch; running batch losses as a faint line."""
    from matplotlib.figure import Figure

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
    return _fig_png(fig)
