"""Sparse, universal and patch attacks: jsma, one_pixel, universal, adversarial_patch, lavan.

Contract checks on tiny models for every attack of this family, exact expectations on hand-set
linear models, and measured behaviour on ResNet-20 / CIFAR-10 (a few images).
"""

from __future__ import annotations

import math

import pytest
import torch

import advviz.attacks as A
from advviz import metrics
from advviz.attacks.jsma import _best_pairs
from advviz.attacks.patch import _paste, _rotate, disc_mask
from tests.helpers import LinearImageModel, TinyConvNet

FAMILY = ("jsma", "one_pixel", "universal", "adversarial_patch", "lavan")


def changed_locations(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per image, the number of pixel locations where any channel changed."""
    return ((x_adv - x).abs().amax(1) > 0).flatten(1).sum(1)


def changed_elements(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    return ((x_adv - x) != 0).flatten(1).sum(1)


def assert_budget(spec: A.AttackSpec, params: dict, x: torch.Tensor, x_adv: torch.Tensor) -> None:
    h, w = x.shape[2:]
    if spec.budget == "pixels":
        assert int(changed_locations(x, x_adv).max()) <= params["pixels"]
    elif spec.budget == "gamma":
        assert int(changed_elements(x, x_adv).max()) <= math.floor(params["gamma"] * x[0].numel())
    elif spec.budget == "area":
        assert int(changed_locations(x, x_adv).max()) <= params["area"] * h * w
    elif spec.budget == "eps":
        assert float((x_adv - x).abs().max()) <= params["eps"] + 1e-6
    else:  # pragma: no cover - every attack of this family is bounded
        raise AssertionError(spec.budget)


# ---------------------------------------------------------------------------------- contract

@pytest.mark.parametrize("name", FAMILY)
def test_registered_with_full_specs(name: str) -> None:
    import inspect

    spec = A.get(name)
    assert getattr(A, name) is spec.fn
    sig = inspect.signature(spec.fn)
    kw = {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    assert list(sig.parameters)[:3] == ["model", "x", "y"]
    assert spec.defaults() == kw
    assert spec.budget in kw and set(spec.quick) <= set(kw)
    assert spec.paper and spec.fn.__doc__


@pytest.mark.parametrize("name", FAMILY)
def test_contract_on_tiny_model(name: str, device: torch.device) -> None:
    spec = A.get(name)
    model = TinyConvNet(num_classes=3, seed=1).to(device)
    model.train()
    model.conv1.weight.requires_grad_(False)
    model.fc.bias.grad = torch.full_like(model.fc.bias, 0.5)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=gen).to(device)
    x_copy = x.clone()
    y = torch.tensor([0, 1, 2, 0, 1, 2], device=device)
    params = {**spec.defaults(), **spec.quick}
    out = spec.fn(model, x, y, **spec.quick)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not out.requires_grad and out.grad_fn is None
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(x, x_copy)
    assert model.training and model.bn1.training
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert torch.equal(model.fc.bias.grad, torch.full_like(model.fc.bias, 0.5))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.bias")
    assert_budget(spec, params, x, out)
    # seeded: the same call gives the same result
    assert torch.equal(spec.fn(model, x, y, **spec.quick), out)


@pytest.mark.parametrize("name", ("jsma", "one_pixel", "adversarial_patch", "lavan"))
def test_targeted_runs_within_budget(name: str) -> None:
    spec = A.get(name)
    assert spec.targeted
    model = TinyConvNet(num_classes=3, seed=2)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([2, 2, 1, 0])
    out = spec.fn(model, x, target, targeted=True, **spec.quick)
    assert_budget(spec, {**spec.defaults(), **spec.quick}, x, out)


@pytest.mark.parametrize("name", FAMILY)
def test_rejects_bad_input(name: str) -> None:
    fn = getattr(A, name)
    model = TinyConvNet()
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="divide by 255"):
        fn(model, torch.full((2, 3, 8, 8), 200.0), y)
    with pytest.raises(TypeError, match="unexpected keyword"):
        fn(model, torch.rand(2, 3, 8, 8), y, epsilon=0.1)


# -------------------------------------------------------------------------------------- JSMA

def _brute_pairs(alpha: torch.Tensor, beta: torch.Tensor, domain: torch.Tensor, increase: bool) -> torch.Tensor:
    """Best admissible score per row over the full pair table (-inf where none)."""
    if not increase:
        alpha, beta = -alpha, -beta
    best = torch.full((alpha.shape[0],), float("-inf"), dtype=torch.float64)
    for i in range(alpha.shape[0]):
        idx = domain[i].nonzero().flatten().tolist()
        for p in idx:
            for q in idx:
                a, b = float(alpha[i, p] + alpha[i, q]), float(beta[i, p] + beta[i, q])
                if p != q and a > 0 and b < 0:
                    best[i] = max(float(best[i]), -a * b)
    return best


@pytest.mark.parametrize("increase", [True, False])
def test_jsma_pair_search_is_exact(increase: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    for n in (3, 12, 40):
        alpha = torch.randn(4, n, generator=gen, dtype=torch.float64)
        beta = -0.7 * alpha + 0.5 * torch.randn(4, n, generator=gen, dtype=torch.float64)
        domain = torch.rand(4, n, generator=gen) > 0.3
        p, q, found = _best_pairs(alpha, beta, domain, increase, shortlist=2)
        ref = _brute_pairs(alpha, beta, domain, increase)
        assert found.tolist() == torch.isfinite(ref).tolist()
        s = 1.0 if increase else -1.0
        for i in found.nonzero().flatten().tolist():
            pi, qi = int(p[i]), int(q[i])
            assert pi != qi and domain[i, pi] and domain[i, qi]
            score = -(s * (alpha[i, pi] + alpha[i, qi])) * (s * (beta[i, pi] + beta[i, qi]))
            assert float(score) == pytest.approx(float(ref[i]), rel=1e-12)


def _jsma_linear() -> LinearImageModel:
    # 1x2x2 images (4 features). z0 = w0.x + 1, z1 = w1.x: the best pair for target 1 is (0, 1).
    w = torch.tensor([[-1.0, -0.5, 0.2, 1.0], [1.0, 0.5, 0.1, -1.0]])
    return LinearImageModel(w, torch.tensor([1.0, 0.0]), (1, 2, 2))


def test_jsma_exact_on_linear_model() -> None:
    model = _jsma_linear()
    x = torch.zeros(1, 1, 2, 2)
    # theta=+1: pair (0, 1) set to 1 -> z = (-0.5, 1.5): class 1 reached in one iteration
    for kwargs in ({"targeted": True}, {}):
        y = torch.tensor([1]) if kwargs else torch.tensor([0])  # untargeted: runner-up is class 1
        out = A.jsma(model, x, y, theta=1.0, gamma=1.0, **kwargs)
        assert out.flatten().tolist() == [1.0, 1.0, 0.0, 0.0]
    # theta=0.3: (0, 1) -> 0.3 is not enough (z = (0.55, 0.45)); the remaining pair (2, 3) has
    # a_2 + a_3 = -0.9 < 0, no admissible pair: the search stops there
    out = A.jsma(model, x, torch.tensor([1]), theta=0.3, gamma=1.0, targeted=True)
    assert out.flatten().tolist() == pytest.approx([0.3, 0.3, 0.0, 0.0])
    # gamma bounds the number of changed features: 0.25 * 4 = 1 feature -> no full pair
    assert torch.equal(A.jsma(model, x, torch.tensor([1]), gamma=0.25, targeted=True), x)


def test_jsma_decreasing_theta() -> None:
    # z1 grows when features 2, 3 decrease: theta < 0 removes intensity
    w = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, -1.0, -1.0]])
    model = LinearImageModel(w, torch.tensor([0.0, 0.5]), (1, 2, 2))
    x = torch.full((1, 1, 2, 2), 0.5)
    out = A.jsma(model, x, torch.tensor([1]), theta=-1.0, gamma=0.5, targeted=True)
    assert out.flatten().tolist() == [0.5, 0.5, 0.0, 0.0]
    assert metrics.predictions(model, out).tolist() == [1]


@pytest.mark.slow
def test_jsma_resnet20(resnet20, cifar_correct) -> None:
    x, y = cifar_correct[0][:3], cifar_correct[1][:3]
    gamma = 0.02
    out = A.jsma(resnet20, x, y, theta=1.0, gamma=gamma)
    assert int(changed_elements(x, out).max()) <= math.floor(gamma * 3 * 32 * 32)
    assert metrics.asr(resnet20, out, y) >= 2 / 3  # measured: 3/3 (6, 2 and 14 pairs)


# --------------------------------------------------------------------------------- one-pixel

def _one_pixel_linear() -> LinearImageModel:
    # 1x4x4 images; z1 - z0 = sum_ij w_ij x_ij - 8 with w peaking (10) at pixel (2, 3) and at most
    # 7 elsewhere: only a pixel brighter than 0.8 there flips the class; the weights guide the search.
    r, c = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    w1 = (10.0 - 3.0 * ((r - 2).abs() + (c - 3).abs())).clamp_min(0.0).flatten()
    w = torch.stack([torch.zeros(16), w1])
    return LinearImageModel(w, torch.tensor([8.0, 0.0]), (1, 4, 4))


def test_one_pixel_finds_the_single_pixel() -> None:
    model = _one_pixel_linear()
    x = torch.zeros(3, 1, 4, 4)
    y = torch.zeros(3, dtype=torch.long)
    out = A.one_pixel(model, x, y, pixels=1, population=20, max_iter=30, seed=0)
    assert metrics.asr(model, out, y) == 1.0
    changed = (out - x).flatten(1) != 0
    assert changed.sum(1).tolist() == [1, 1, 1]
    assert changed[:, 2 * 4 + 3].all() and bool((out[:, 0, 2, 3] > 0.8).all())


def test_one_pixel_targeted_and_untouched_when_already_fooled() -> None:
    model = _one_pixel_linear()
    x = torch.zeros(2, 1, 4, 4)
    x[1, 0, 2, 3] = 1.0  # already class 1
    out = A.one_pixel(model, x, torch.tensor([1, 1]), targeted=True, population=20, max_iter=30, seed=1)
    assert metrics.predictions(model, out).tolist() == [1, 1]
    assert torch.equal(out[1], x[1])


@pytest.mark.slow
def test_one_pixel_resnet20(resnet20, cifar_correct) -> None:
    x, y = cifar_correct[0][:8], cifar_correct[1][:8]
    out = A.one_pixel(resnet20, x, y, pixels=5, population=30, max_iter=5, seed=0)
    assert int(changed_locations(x, out).max()) <= 5
    assert metrics.asr(resnet20, out, y) >= 0.25  # measured: 5/8 (population 30, 5 generations)


# --------------------------------------------------------------------------------- universal

def _universal_linear() -> tuple[LinearImageModel, torch.Tensor, torch.Tensor]:
    # z1 - z0 = sum(x) - 2.3; images with sum(x) in [1.95, 2.25] are class 0, 0.05-0.35 below the
    # boundary; an L-inf shift of 0.1 adds 0.4 to the sum.
    w = torch.stack([torch.zeros(4), torch.ones(4)])
    model = LinearImageModel(w, torch.tensor([2.3, 0.0]), (1, 2, 2))
    gen = torch.Generator().manual_seed(4)
    x = 0.45 + 0.1 * torch.rand(10, 1, 2, 2, generator=gen)
    x = x - (x.flatten(1).sum(1).view(-1, 1, 1, 1) - torch.linspace(1.95, 2.25, 10).view(-1, 1, 1, 1)) / 4
    return model, x, torch.zeros(10, dtype=torch.long)


def test_universal_linear_model_linf_and_l2() -> None:
    model, x, y = _universal_linear()
    v = A.universal_perturbation(model, x, y, eps=0.1, delta=0.0, max_passes=5, seed=0)
    assert v.shape == (1, 1, 2, 2)
    assert float(v.abs().max()) <= 0.1 + 1e-7
    assert metrics.asr(model, (x + v).clamp(0, 1), y) == 1.0
    out = A.universal(model, x, y, eps=0.1, delta=0.0, max_passes=5, seed=0)
    assert torch.allclose(out - x, v.expand_as(x), atol=1e-6)  # one shared perturbation
    # L2: the boundary is sum(x) = 2.3, the farthest image is 0.35 / ||w||_2 = 0.175 away
    v2 = A.universal_perturbation(model, x, y, eps=0.3, norm="l2", delta=0.0, max_passes=5, seed=0)
    assert float(v2.norm()) <= 0.3 + 1e-6
    assert metrics.asr(model, (x + v2).clamp(0, 1), y) == 1.0
    # a ball too small to reach the nearest image's boundary fools nothing
    v3 = A.universal_perturbation(model, x, y, eps=0.01, delta=0.0, max_passes=3, seed=0)
    assert float(v3.abs().max()) <= 0.01 + 1e-7 and metrics.asr(model, (x + v3).clamp(0, 1), y) == 0.0


def test_universal_stops_at_target_fooling_rate() -> None:
    model, x, y = _universal_linear()
    # delta = 1 - 0: fooling rate 0 >= 1 - 1 at once, v stays 0
    v = A.universal_perturbation(model, x, y, eps=0.1, delta=1.0, seed=0)
    assert torch.count_nonzero(v) == 0


@pytest.mark.slow
def test_universal_resnet20(resnet20, cifar_correct) -> None:
    x, y = cifar_correct[0][:8], cifar_correct[1][:8]
    eps = 10 / 255
    v = A.universal_perturbation(resnet20, x, y, eps=eps, max_passes=1, candidates=3, df_steps=4, seed=0)
    assert v.shape == (1, 3, 32, 32) and float(v.abs().max()) <= eps + 1e-6
    fooled = metrics.asr(resnet20, (x + v).clamp(0, 1), y)
    noise = torch.randn(v.shape, generator=torch.Generator().manual_seed(0)).to(v.device)
    noise = noise / noise.norm() * v.norm()
    fooled_noise = metrics.asr(resnet20, (x + noise).clamp(0, 1), y)
    assert fooled >= 0.25 and fooled >= fooled_noise + 0.2  # measured: 0.5 vs 0.0 for noise


# ------------------------------------------------------------------------------------ patches

@pytest.mark.parametrize("budget", [0.5, 1, 5, 20, 100, 153.6, 1000])
def test_disc_mask_is_the_largest_disc_within_budget(budget: float) -> None:
    m = disc_mask(budget)
    assert int(m.sum()) <= budget
    d = m.shape[0]
    bigger = disc_mask(10 ** 9, max_side=d + 1)
    assert int(bigger.sum()) > budget
    if d:
        assert m.shape == (d, d) and bool(m[d // 2, d // 2]) and torch.equal(m, m.flip(0)) and torch.equal(m, m.t())


def test_rotated_patch_footprint_stays_inside_the_disc() -> None:
    mask = disc_mask(0.15 * 32 * 32)
    d = mask.shape[0]
    content = torch.rand(4, 3, d, d, generator=torch.Generator().manual_seed(5))
    rotated = _rotate(content, torch.tensor([0.0, 0.3, 1.0, math.pi / 4]))
    assert torch.allclose(rotated[0], content[0], atol=1e-6)  # angle 0 is the identity
    x = torch.full((4, 3, 32, 32), 0.5)
    out = _paste(x, rotated, mask, torch.tensor([0, 3, 10, 32 - d]), torch.tensor([0, 7, 2, 32 - d]))
    loc = changed_locations(x, out)
    assert int(loc.max()) <= int(mask.sum()) <= 0.15 * 32 * 32
    # the changed pixels of image 1 are exactly inside its disc (where the content differs from 0.5)
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[3:3 + d, 7:7 + d] = mask
    assert not ((out[1] != 0.5).any(0) & ~expected).any()


def test_adversarial_patch_budget_with_large_rotations() -> None:
    model = TinyConvNet(num_classes=3, seed=3)
    x = torch.rand(5, 3, 20, 20, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 1, 2, 0, 1])
    for area in (0.01, 0.1, 0.3):
        out = A.adversarial_patch(model, x, y, area=area, steps=3, max_rotation=180.0, seed=0)
        assert int(changed_locations(x, out).max()) <= area * 400
    assert torch.equal(A.adversarial_patch(model, x, y, area=0.001, steps=2, seed=0), x)  # < 1 pixel


def test_lavan_fixed_corner_square() -> None:
    model = TinyConvNet(num_classes=3, seed=3)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    y = torch.tensor([0, 1, 2])
    out = A.lavan(model, x, y, area=0.1, steps=2, location="top_left", seed=0)  # 25.6 px -> 5x5
    changed = (out != x).any(1)
    assert not changed[:, 5:, :].any() and not changed[:, :, 5:].any()
    assert int(changed_locations(x, out).max()) <= 25
    out = A.lavan(model, x, y, area=0.1, steps=2, location="bottom_right", seed=0)
    changed = (out != x).any(1)
    assert not changed[:, :11, :].any() and not changed[:, :, :11].any()


@pytest.mark.slow
def test_adversarial_patch_resnet20(resnet20, cifar_correct) -> None:
    x, y = cifar_correct[0][:8], cifar_correct[1][:8]
    out = A.adversarial_patch(resnet20, x, y, area=0.15, steps=20, seed=0)
    assert int(changed_locations(x, out).max()) <= 0.15 * 32 * 32  # a 137-pixel disc
    assert metrics.asr(resnet20, out, y) >= 0.25  # measured: 4/8


@pytest.mark.slow
def test_lavan_resnet20(resnet20, cifar_correct) -> None:
    x, y = cifar_correct[0][:4], cifar_correct[1][:4]
    out = A.lavan(resnet20, x, y, area=0.02, steps=40, location="random", seed=0)
    assert int(changed_locations(x, out).max()) <= 0.02 * 32 * 32  # a 4x4 square
    assert metrics.asr(resnet20, out, y) >= 0.25  # measured: 2/4
