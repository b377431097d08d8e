"""The purifier registry and the JPEG purifier."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from advviz import defenses
from advviz._registry import ParamSpec


def test_registry_lists_and_gets_jpeg():
    assert "jpeg" in defenses.list_purifiers()
    spec = defenses.get("jpeg")
    assert spec.fn is defenses.jpeg and [p.name for p in spec.params] == ["quality"]
    assert spec.defaults() == {"quality": 75} and not spec.differentiable
    with pytest.raises(KeyError, match="available: .*jpeg"):
        defenses.get("no-such-purifier")


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        defenses.register_purifier("jpeg", params=[])(lambda x: x)


def test_spec_call_validates_params():
    spec = defenses.get("jpeg")
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="quality must be <= 100"):
        spec(x, quality=101)
    with pytest.raises(TypeError, match="unexpected keyword 'qualty'"):
        spec(x, qualty=50)


@pytest.mark.parametrize("c", [1, 3])
def test_jpeg_matches_pillow_per_image(c):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, c, 16, 20, generator=g)
    x_copy = x.clone()
    out = defenses.jpeg(x, quality=30)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(x, x_copy)
    assert out.min() >= 0 and out.max() <= 1
    for i in range(4):
        arr = (x[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        im = Image.fromarray(arr[:, :, 0] if c == 1 else arr, mode="L" if c == 1 else "RGB")
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=30)
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L" if c == 1 else "RGB"))
        ref_t = torch.from_numpy(ref.copy()).float().div(255)
        ref_t = ref_t.unsqueeze(0) if c == 1 else ref_t.permute(2, 0, 1)
        assert torch.equal(out[i], ref_t)


def test_lower_quality_removes_more():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g)
    err = {q: float((defenses.jpeg(x, quality=q) - x).abs().mean()) for q in (10, 50, 95)}
    assert err[10] > err[50] > err[95] > 0


def test_smooth_image_survives_high_quality():
    ramp = torch.linspace(0, 1, 32)
    x = (ramp[None, :] * ramp[:, None]).expand(1, 3, 32, 32).contiguous()
    assert float((defenses.jpeg(x, quality=95) - x).abs().max()) < 0.05


def test_jpeg_rejects_bad_input():
    with pytest.raises(ValueError, match="batch dimension"):
        defenses.jpeg(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="divide 0-255"):
        defenses.jpeg(torch.rand(1, 3, 8, 8) * 255)
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3"):
        defenses.jpeg(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="quality"):
        defenses.jpeg(torch.rand(1, 3, 8, 8), quality=0)


def test_jpeg_keeps_device_and_dtype(device):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, device=device)
    out = defenses.jpeg(x)
    assert out.device == x.device and out.dtype == torch.float64


def test_custom_purifier_registration_is_visible():
    from advviz.defenses import PURIFIERS

    name = "_test_identity"
    try:
        defenses.register_purifier(name, params=[ParamSpec("k", 1, kind="int", low=1, high=3)])(
            lambda x, *, k=1: x.clone())
        assert name in defenses.list_purifiers() and defenses.get(name)(torch.zeros(1, 1, 2, 2), k=2).shape == (1, 1, 2, 2)
    finally:
        PURIFIERS._items.pop(name, None)
