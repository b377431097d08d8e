"""JPEG compression as an input purifier (Dziugaite et al. 2016; Guo et al. 2018).

Each image is quantised to 8 bits, encoded as a baseline JPEG by Pillow in memory at the given
``quality`` and decoded again. Compression removes part of the high-frequency content in which
small adversarial perturbations live. The rounding and quantisation are not differentiable:
an adaptive attacker would need BPDA; this purifier makes no claim against one.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from advviz._registry import ParamSpec
from advviz.defenses import check_purifier_input, register_purifier

__all__ = ["jpeg"]


def jpeg(x: torch.Tensor, *, quality: int = 75) -> torch.Tensor:
    """JPEG-compress and decompress every image of a batch (Pillow, in memory).

    Args:
        x: ``(B, C, H, W)`` float images in ``[0, 1]``, ``C`` 1 or 3 (not modified).
        quality: Pillow's JPEG quality, 1 (strongest compression) to 100.

    Returns:
        ``(B, C, H, W)`` tensor of ``x``'s dtype and device, values in ``[0, 1]`` on the
        1/255 grid.
    """
    check_purifier_input(x, what="JPEG")
    q = int(quality)
    if q != quality or not 1 <= q <= 100:
        raise ValueError(f"quality must be an integer in [1, 100], got {quality!r}")
    if x.shape[0] == 0:
        return x.detach().clone()
    arr = (x.detach().float().clamp(0, 1) * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    mode = "L" if arr.shape[3] == 1 else "RGB"
    out = np.empty_like(arr)
    buf = io.BytesIO()
    for i in range(arr.shape[0]):
        img = Image.fromarray(arr[i, :, :, 0] if mode == "L" else arr[i], mode=mode)
        buf.seek(0)
        buf.truncate()
        img.save(buf, format="JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as dec:
            dec_arr = np.asarray(dec.convert(mode), dtype=np.uint8)
        out[i] = dec_arr[:, :, None] if mode == "L" else dec_arr
    res = torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype).div_(255.0)
    return res.contiguous()


def _register() -> None:
    register_purifier(
        "jpeg",
        params=[ParamSpec("quality", 75, kind="int", low=1, high=100, step=1,
                          help="JPEG quality (1 = strongest compression, 100 = nearly lossless)")],
        paper="Dziugaite, Ghahramani & Roy 2016, 'A study of the effect of JPG compression on adversarial images'",
        description="JPEG compression and decompression in memory (Pillow)",
        quick={"quality": 75},
    )(jpeg)


_register()
