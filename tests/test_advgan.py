"""AdvGAN (Xiao et al. 2018) and FID: loss terms on tiny inputs, the perturbation bound, FID
properties on known Gaussians and identical sets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from advviz.generative.advgan import (
    ADVGAN_CONFIGS,
    AdvGAN,
    AdvGANConfig,
    cw_loss,
    hinge_loss,
)
from advviz.generative.fid import (
    FeatureNetwork,
    feature_statistics,
    fid,
    frechet_distance,
    penultimate,
)


def test_hinge_loss_exact():
    # ||p_0||_2 = 5 (3-4-5), ||p_1||_2 = 1: with c = 2 -> mean(max(0, 3), max(0, -1)) = 1.5
    p = torch.zeros(2, 1, 2, 2)
    p[0, 0, 0, 0], p[0, 0, 0, 1] = 3.0, 4.0
    p[1, 0, 1, 1] = 1.0
    assert hinge_loss(p, 2.0).item() == pytest.approx(1.5)
    assert hinge_loss(p, 6.0).item() == 0.0


def test_cw_loss_exact():
    logits = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.5, 1.0]])
    # targeted toward 0: max other - Z_t -> (3 - 1) = 2 and (1 - 2) = -1 clamped at -kappa = 0 -> mean 1
    assert cw_loss(logits, torch.tensor([0, 0]), targeted=True).item() == pytest.approx(1.0)
    assert cw_loss(logits, torch.tensor([0, 0]), targeted=True, kappa=5.0).item() == pytest.approx(0.5)
    # untargeted with true labels (1, 0): Z_y - max other -> (3 - 1) = 2, (2 - 1) = 1 -> 1.5
    assert cw_loss(logits, torch.tensor([1, 0]), targeted=False).item() == pytest.approx(1.5)


@pytest.mark.parametrize("eps", [0.3, 0.1])
def test_perturbation_linf_bound(eps):
    gan = AdvGAN(AdvGANConfig(name="t", eps=eps, width=4), (1, 8, 8))
    with torch.no_grad():
        for p in gan.generator.parameters():
            p.mul_(50.0)  # saturate tanh: the cap must still hold
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    pert = gan.generator(x)
    assert pert.abs().max().item() <= eps + 1e-6
    assert pert.abs().max().item() > 0.9 * eps  # saturated, so the bound is reached
    x_adv = gan.attack(x)
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1



@pytest.mark.slow
def test_quick_advgan_targeted_and_untargeted(one_thread, lenet_digits, digits_test):
    x, y = digits_test.tensors()
    cfg = dataclasses.replace(ADVGAN_CONFIGS["digits_quick"], epochs=3)
    before = [p.detach().clone() for p in lenet_digits.parameters()]
    targeted = AdvGAN(cfg, (1, 28, 28), target=3)
    res = targeted.fit(x, y, lenet_digits, progress=False, device="cpu")
    assert res.epochs_completed == 3 and not res.interrupted
    keep = y != 3
    x_adv = targeted.attack(x[keep])
    pred = lenet_digits(x_adv).argmax(1)
    assert (pred == 3).float().mean().item() > 0.3  # chance is 0.1
    assert (x_adv - x[keep]).abs().max().item() <= cfg.eps + 1e-6
    # kappa > 0: with kappa = 0 the untargeted loss vanishes on the boundary, the GAN and hinge
    # terms pull images back onto it, and held-out images mostly stay unfooled (measured 0.05-0.29)
    untargeted = AdvGAN(dataclasses.replace(cfg, kappa=5.0), (1, 28, 28))
    untargeted.fit(x, y, lenet_digits, progress=False, device="cpu")
    fooled = (lenet_digits(untargeted.attack(x)).argmax(1) != y).float().mean().item()
    assert fooled > 0.3, fooled  # measured 0.94 on a fresh LeNet-5; the clean model misclassifies ~0.01
    assert all(torch.equal(a, b) for a, b in zip(before, lenet_digits.parameters()))
    assert not lenet_digits.training


def test_advgan_save_load_roundtrip(tmp_path):
    gan = AdvGAN(AdvGANConfig(name="t", width=4), (1, 8, 8), target=2)
    path = gan.save(tmp_path / "a.safetensors")
    back = AdvGAN.load(path)
    x = torch.rand(3, 1, 8, 8)
    assert back.target == 2 and back.config == gan.config
    assert torch.equal(back.attack(x), gan.attack(x))


# --------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------

def test_frechet_distance_known_gaussians():
    # Diagonal covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-9)
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2 (Wasserstein-2 between Gaussians)
    assert frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == \
        pytest.approx(9 + 1)
    # a full (non-diagonal, non-commuting) pair: symmetric, zero on itself
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = m1 @ m1.T, m2 @ m2.T
    mu = rng.normal(size=5)
    d12 = frechet_distance(mu, s1, -mu, s2)
    assert d12 == pytest.approx(frechet_distance(-mu, s2, mu, s1), rel=1e-9)
    assert frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-8)
    # against the definition with a matrix square root of S1 S2 (scipy)
    from scipy import linalg

    ref = float(np.sum((2 * mu) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))
    assert d12 == pytest.approx(ref, rel=1e-6)


def test_fid_samples_and_identical_sets():
    torch.manual_seed(0)
    ident = FeatureNetwork(nn.Flatten(), "identity")
    x = torch.rand(400, 1, 2, 2)
    assert fid(x, x.clone(), ident) == pytest.approx(0.0, abs=1e-8)
    # Shifting every feature by 0.5 adds |shift|^2 = 4 * 0.25 = 1 exactly (covariance unchanged).
    assert fid(x, x + 0.5, ident) == pytest.approx(1.0, abs=1e-6)
    mu, sigma = feature_statistics(torch.randn(5000, 3, dtype=torch.float64) * 2.0)
    assert np.allclose(mu, 0, atol=0.1) and np.allclose(sigma, 4 * np.eye(3), atol=0.3)
    with pytest.raises(ValueError):
        feature_statistics(torch.randn(1, 3))


def test_penultimate_features_are_named(lenet_digits, digits_test):
    net = penultimate(lenet_digits, "lenet5_digits")
    assert "lenet5_digits" in net.name and "not Inception" in net.name
    x, _ = digits_test.tensors(torch.arange(8))
    f = net(x)
    assert f.shape == (8, 200)
    assert math.isfinite(fid(x, x.flip(0), net))
