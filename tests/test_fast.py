"""The cached BatchNorm-folded fast copy used inside attacks (advviz.attacks._fast)."""

from __future__ import annotations

import functools
import gc
import weakref

import torch
from torch import nn

from advviz import attacks
from advviz.attacks import _fast
from advviz.attacks._fast import fast_model, fast_models, fingerprint, fold_batchnorm
from advviz.models import Classifier, Normalize
from tests.helpers import TinyConvNet


def _trained_bn(seed: int = 0) -> TinyConvNet:
    """A TinyConvNet whose BatchNorm has non-trivial running statistics and affine parameters."""
    m = TinyConvNet(seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        m.bn1.running_mean.copy_(torch.randn(4, generator=g) * 0.3)
        m.bn1.running_var.copy_(torch.rand(4, generator=g) + 0.5)
        m.bn1.weight.copy_(torch.rand(4, generator=g) + 0.5)
        m.bn1.bias.copy_(torch.randn(4, generator=g) * 0.2)
    return m.eval()


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_fold_matches_model_tiny() -> None:
    m = _trained_bn()
    net, n = fold_batchnorm(m)
    assert n == 1
    assert isinstance(net.bn1, nn.Identity) and isinstance(m.bn1, nn.BatchNorm2d)
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net(x), m(x), atol=1e-5, rtol=1e-5)
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_fast_copy_matches_resnet20_and_leaves_it_alone(resnet20, cifar_correct) -> None:
    x = cifar_correct[0][:16]
    before = _state(resnet20)
    flags = [p.requires_grad for p in resnet20.parameters()]
    net = fast_model(resnet20, x)
    assert net is not resnet20
    n_bn_copy = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert n_bn_copy == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in resnet20.modules()) == 19
    with torch.no_grad():
        torch.testing.assert_close(net(x), resnet20(x), atol=5e-5, rtol=1e-5)
    after = resnet20.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == [p.requires_grad for p in resnet20.parameters()]
    assert not resnet20.training


def test_cache_hit_and_rebuild_on_load_state_dict() -> None:
    m = _trained_bn(0)
    x = torch.rand(3, 3, 8, 8)
    a = fast_model(m, x)
    assert fast_model(m, x) is a  # cached
    m.load_state_dict(_trained_bn(1).state_dict())
    b = fast_model(m, x)
    assert b is not a
    with torch.no_grad():
        torch.testing.assert_close(b(x), m(x), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(a(x), m(x), atol=1e-3)


def test_attack_uses_new_weights_after_optimizer_step() -> None:
    torch.manual_seed(0)
    m = _trained_bn(0)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0])
    attacks.pgd(m, x, y, steps=3, seed=0)  # builds and caches the fast copy
    # one training step (train mode, then back to eval), as in a notebook retraining cell
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    m.eval()
    got = attacks.pgd(m, x, y, steps=3, seed=0)
    with fast_models(False):
        ref = attacks.pgd(m, x, y, steps=3, seed=0)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(fast_model(m, x)(x), m(x), atol=1e-5, rtol=1e-5)


def test_fingerprint_sees_weights_buffers_layers_and_attributes() -> None:
    m = _trained_bn()
    k0 = fingerprint(m)
    assert fingerprint(m) == k0
    with torch.no_grad():
        m.fc.bias.add_(0.0)  # in-place, even a no-op, bumps the version counter
    k1 = fingerprint(m)
    assert k1 != k0
    m.bn1.running_var.mul_(1.0)
    assert fingerprint(m) != k1
    k2 = fingerprint(m)
    m.relu1 = nn.Tanh()
    assert fingerprint(m) != k2
    k3 = fingerprint(m)
    m.conv2.stride = (2, 2)
    assert fingerprint(m) != k3
    k4 = fingerprint(m)
    m.train()  # the training flag is not part of the key: the copy is always the eval-mode function
    assert fingerprint(m) == k4


def test_cache_does_not_keep_models_alive() -> None:
    m = _trained_bn()
    fast_model(m, torch.rand(2, 3, 8, 8))
    ref = weakref.ref(m)
    assert m in _fast._CACHE
    del m
    gc.collect()
    assert ref() is None


def test_train_mode_model_gives_eval_function_and_stays_in_train_mode() -> None:
    m = _trained_bn()
    m.train()
    x = torch.rand(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    got = attacks.pgd(m, x, y, steps=2, seed=3)
    assert m.training and all(mod.training for mod in m.modules())
    m.eval()
    with fast_models(False):
        ref = attacks.pgd(m, x, y, steps=2, seed=3)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_models_with_hooks_are_used_directly() -> None:
    m = _trained_bn()
    seen = []
    h = m.conv1.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    try:
        x = torch.rand(2, 3, 8, 8)
        assert fast_model(m, x) is m
        attacks.fgsm(m, x, torch.tensor([0, 1]))
        assert seen  # the user's hook ran: the attack went through the model itself
    finally:
        h.remove()
    assert fast_model(m, torch.rand(2, 3, 8, 8)) is not m  # hooks are part of the key: rebuilt


class _Untraceable(Classifier):
    """Data-dependent Python control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 3
        self.normalize = Normalize((0.5,) * 3, (0.25,) * 3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(self.normalize(x)))
        if h.mean() > 100:  # data-dependent branch
            h = -h
        return self.fc(h.mean(dim=(2, 3)))


def test_untraceable_model_falls_back_to_itself() -> None:
    m = _Untraceable().eval()
    x = torch.rand(2, 3, 8, 8)
    assert fast_model(m, x) is m
    out = attacks.pgd(m, x, torch.tensor([0, 1]), steps=2)
    assert out.shape == x.shape


class _SharedBN(nn.Module):
    """A BatchNorm fed by a conv whose output is also used elsewhere: must not be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.bn.running_mean.fill_(0.3)
            self.bn.running_var.fill_(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.fc((self.bn(h) + h).mean(dim=(2, 3)))


def test_conv_output_used_twice_is_not_folded() -> None:
    m = _SharedBN().eval()
    _net, n = fold_batchnorm(m)
    assert n == 0
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast_model(m, x)(x), m(x), atol=1e-5, rtol=1e-5)


def test_disabled_returns_the_model() -> None:
    m = _trained_bn()
    with fast_models(False):
        assert fast_model(m, torch.rand(1, 3, 8, 8)) is m
        assert not _fast.fast_enabled()
    assert _fast.fast_enabled()


class _Configured(nn.Module):
    """Keeps a class, a partial and a function as attributes, as torchvision's ResNet and ViT do."""

    def __init__(self) -> None:
        super().__init__()
        self._norm_layer = nn.BatchNorm2d
        self.head_norm = functools.partial(nn.LayerNorm, eps=1e-6)
        self.act = nn.functional.relu
        self.settings = {"pool": "mean", "dims": (2, 3)}
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = self._norm_layer(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.bn(self.conv(x))).mean(dim=self.settings["dims"]))


def test_classes_partials_functions_and_dicts_keep_the_fast_copy() -> None:
    m = _Configured().eval()
    x = torch.rand(2, 3, 8, 8)
    net = fast_model(m, x)
    assert net is not m and fast_model(m, x) is net  # copied (BN folded) and cached
    k = fingerprint(m)
    m.head_norm = functools.partial(nn.LayerNorm, eps=1e-5)
    assert fingerprint(m) != k
    k = fingerprint(m)
    m.settings["pool"] = "max"  # a dict changed in place
    assert fingerprint(m) != k
    k = fingerprint(m)
    m.act = torch.tanh
    assert fingerprint(m) != k


def test_attributes_no_key_can_follow_mean_the_model_itself() -> None:
    m = _trained_bn()
    x = torch.rand(2, 3, 8, 8)
    assert fast_model(m, x) is not m
    for value in (torch.ones(3), object(), [nn.Linear(2, 2)], m.forward):
        m.extra = value
        assert fingerprint(m) is None and fast_model(m, x) is m, type(value)
    del m.extra
    assert fingerprint(m) is not None and fast_model(m, x) is not m


def test_fingerprint_sees_values_the_version_counter_misses() -> None:
    m = _trained_bn()
    k = fingerprint(m)
    m.fc.weight.data.mul_(-1.0)  # no version bump through .data
    assert fingerprint(m) != k
    k = fingerprint(m)
    with torch.no_grad():
        w = m.fc.weight.detach().clone()
        m.fc.weight.data.copy_(w.flip(1))  # the same values, permuted
    assert fingerprint(m) != k


def test_switch_nests_and_restores() -> None:
    with fast_models(False):
        with fast_models(True):
            assert _fast.fast_enabled()
        assert not _fast.fast_enabled()
    assert _fast.fast_enabled()
