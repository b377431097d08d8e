"""The walkthroughs' setting: the paper's CIFAR-10 when present, else the offline digits (and what that needs)."""

from __future__ import annotations

import pytest
import torch

from advviz import setting
from tests.conftest import requires_cifar, requires_resnet


def test_fallback_names_what_is_missing_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVVIZ_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("ADVVIZ_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("ADVVIZ_OFFLINE", "1")
    s = setting.choose()
    assert (s.dataset, s.model_name, s.paper, s.channels) == ("digits", "lenet5_digits", False, 1)
    assert s.eps == setting.DIGITS_EPS
    assert "CIFAR-10" in s.missing and "not found" in s.missing
    for hint in ("offline default", "ADVVIZ_DATA", "ADVVIZ_WEIGHTS", "ADVVIZ_OFFLINE", "resnet20-12fca82f.th"):
        assert hint in s.banner
    x, y = s.test[0]
    assert x.shape == (1, 28, 28) and s.model(x[None]).shape == (1, 10)


def test_missing_weights_alone_also_falls_back(cifar_test, tmp_path, monkeypatch):
    monkeypatch.setenv("ADVVIZ_WEIGHTS", str(tmp_path / "no-weights"))
    s = setting.choose(also=("resnet32_cifar10",))
    assert s.dataset == "digits" and "resnet20_cifar10" in s.missing


def test_offline_default_on_request():
    s = setting.choose(prefer_paper=False)
    assert s.dataset == "digits" and "prefer_paper=False" in s.missing


@requires_cifar
@requires_resnet
def test_paper_setting_when_present():
    s = setting.choose(also=("resnet32_cifar10",))
    assert (s.dataset, s.model_name, s.paper, s.channels, s.missing) == ("cifar10", "resnet20_cifar10", True, 3, "")
    assert s.eps == pytest.approx(8 / 255) and set(s.extra) == {"resnet32_cifar10"}
    assert s.banner.startswith("Setting: the paper's") and "8/255" in s.banner


def test_digits_lenet5_is_fooled_at_the_digits_budget_not_at_8_over_255():
    """The reason for ``DIGITS_EPS``: PGD at 8/255 leaves LeNet-5 on digits almost intact (measured)."""
    from advviz import attacks, data, metrics

    s = setting.choose(prefer_paper=False)
    x, y = data.sample(s.test, 128, seed=0, model=s.model)
    small = attacks.pgd(s.model, x, y, eps=8 / 255, alpha=2 / 255, steps=10)
    large = attacks.pgd(s.model, x, y, eps=s.eps, alpha=s.eps / 4, steps=10)
    assert metrics.accuracy(s.model, small, y) > 0.8
    assert metrics.accuracy(s.model, large, y) < 0.2


def test_noise_generator_any_side_is_a_centre_crop():
    from advviz.defenses import gnr

    torch.manual_seed(0)
    full = gnr.NoiseGenerator(1, widths=(8, 8, 8), convs_per_unit=1)
    torch.manual_seed(0)
    crop = gnr.NoiseGenerator(1, widths=(8, 8, 8), convs_per_unit=1, size=28)
    full.eval(), crop.eval()
    z = torch.randn(3, full.z_dim)
    assert torch.equal(crop(z), full(z)[..., 2:30, 2:30])
    critic = gnr.NoiseCritic(1, widths=(8, 8, 8), size=28)
    assert critic(crop(z)).shape == (3,)
    with pytest.raises(ValueError, match="size must be in"):
        gnr.NoiseGenerator(1, size=40)


@pytest.mark.slow
def test_digits_two_stream_pair_and_perceptual_network():
    """The offline detector is accurate enough to teach with (measured on the 359 digits test images:
    high stream 99% top-1, clean images accepted right 99%)."""
    from advviz import data
    from advviz.defenses import pix2pix, twostream

    det = twostream.default_pair(dataset="digits")
    assert det.high_size == (64, 64) and det.low_size == (28, 28)
    x, y = data.load("digits", "test").tensors()
    p_high, p_low = det.probabilities(x)
    assert (p_high.argmax(1) == y).float().mean() > 0.9
    verdict = det(x)
    assert (~verdict.reject & (verdict.labels == y)).float().mean() > 0.9
    with pytest.raises(ValueError, match="no default two-stream pair"):
        twostream.default_pair(dataset="mnist")

    net, layers, desc = pix2pix.perceptual_network(dataset="digits")
    assert "digits" in desc and layers and all(name.startswith("features.relu") for name in layers)
    loss = pix2pix.PerceptualLoss(net, layers)
    a = x[:4]
    assert float(loss(a, a)) == 0.0 and float(loss(a, 1 - a)) > 0
