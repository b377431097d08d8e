"""The purifier contract, checked for every registered purifier (``advviz.defenses.list_purifiers()``).

Modelled on the attack invariants (``tests/test_attacks_invariants.py``). Each purifier runs with
its defaults: for the learned ones (cGAN, pix2pix, UDDN, DAE) that is the ``full`` recipe, whose
weights ship in ``advviz/weights/`` and load in well under a second; their ``quick`` recipes
would train for minutes on first use. Checked: shape, dtype (float32/float64/float16), device and
``[0, 1]``; ``x`` untouched and no autograd graph for an input that does not require grad; a
batch purified at once equals its images purified one by one; input of a channel count the
purifier does not take (a 28x28 digit for a CIFAR-10 purifier) refused with one ``ValueError``
naming what it takes.

Batch vs. single: the learned purifiers run in eval mode (BatchNorm on running statistics), so
each image's output does not depend on the rest of the batch, up to float rounding of batched
convolutions: measured at most 4.8e-7 (the test's 8 random 32x32 images, seed 1, float32, CPU, one thread) for
UDDN and DAE, 0 for the others; the tolerance is 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from advviz import data, defenses

NAMES = defenses.list_purifiers()
BATCH_TOL = 1e-5


def _spec(name: str) -> defenses.PurifierSpec:
    return defenses.get(name)


def _images(b: int, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_every_purifier_declares_the_channels_it_takes() -> None:
    assert NAMES, "no purifier registered"
    for name in NAMES:
        spec = _spec(name)
        assert spec.channels and set(spec.channels) <= {1, 3}, (name, spec.channels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_device_range_and_input_untouched(name, dtype, device) -> None:
    spec = _spec(name)
    for c in spec.channels:
        x = _images(3, c).to(device=device, dtype=dtype)
        before = x.clone()
        out = spec(x)
        assert isinstance(out, torch.Tensor)
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device, (name, c)
        assert not out.requires_grad and out.grad_fn is None, name
        assert bool(torch.isfinite(out).all()), name
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0, name
        assert torch.equal(x, before), f"{name} modified its input"
        assert not torch.equal(out.float(), x.float()), f"{name} returned its input unchanged"


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name, device) -> None:
    spec = _spec(name)
    x = _images(0, spec.channels[-1]).to(device)
    out = spec(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single_images(name, device) -> None:
    spec = _spec(name)
    x = _images(8, spec.channels[-1], seed=1).to(device)
    batch = spec(x)
    single = torch.cat([spec(x[i:i + 1]) for i in range(x.shape[0])])
    diff = float((batch - single).abs().max())
    assert diff <= BATCH_TOL, (name, diff)


@pytest.mark.parametrize("name", NAMES)
def test_unsupported_channel_count_is_refused_naming_what_fits(name) -> None:
    spec = _spec(name)
    for c in (2, 4, *(c for c in (1, 3) if c not in spec.channels)):
        x = _images(2, c, size=28)
        with pytest.raises(ValueError) as info:
            spec(x)
        msg = str(info.value)
        assert str(tuple(x.shape)) in msg, (name, msg)
        for ok in spec.channels:
            assert f"(B, {ok}, H, W)" in msg, (name, msg)


@pytest.mark.parametrize("name", NAMES)
def test_missing_batch_dimension_is_refused(name) -> None:
    spec = _spec(name)
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        spec(_images(1, spec.channels[-1])[0])


@pytest.mark.parametrize("name", [n for n in NAMES if 1 not in _spec(n).channels])
def test_a_digit_to_a_cifar_purifier_names_cifar_and_what_to_use(name) -> None:
    digits = data.load("digits", "test")
    x, _ = data.sample(digits, 2, seed=0)
    assert tuple(x.shape[1:]) == (1, 28, 28)
    with pytest.raises(ValueError, match="CIFAR-10") as info:
        _spec(name)(x)
    assert "jpeg" in str(info.value) and name in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_out_of_range_input_is_refused(name) -> None:
    spec = _spec(name)
    x = _images(1, spec.channels[-1]) * 255
    with pytest.raises(ValueError, match="255"):
        spec(x)
