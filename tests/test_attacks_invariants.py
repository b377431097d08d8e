"""The attack contract, checked for every registered attack (``advviz.attacks.list_attacks()``).

Each attack runs with its spec's ``quick`` overrides. Checked: shape/dtype/device, ``[0, 1]``,
the budget by ``spec.norm``/``spec.budget`` (``AttackSpec`` docstring), ``x`` unchanged, the
model's training flags / ``requires_grad`` / ``.grad`` / state unchanged, seeded
reproducibility, ``eps`` above 1 refused with a "divide by 255" message, targeted mode, and no
device guessing from the model's parameters (a parameter-free model).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from advviz import attacks
from advviz.models import Classifier, Normalize
from tests.helpers import TinyConvNet

NAMES = attacks.list_attacks()
TINY = (3, 8, 8)


def _spec(name: str):
    return attacks.get(name)


def _accepts(spec, kw: str) -> bool:
    return kw in inspect.signature(spec.fn).parameters


def _kwargs(spec, **over):
    kw = dict(spec.quick)
    kw.update(over)
    if "seed" in kw and not _accepts(spec, "seed"):
        kw.pop("seed")
    return kw


def _budget_value(spec, kw):
    if spec.budget is None:
        return None
    return kw.get(spec.budget, spec.defaults()[spec.budget])


def assert_within_budget(spec, x: torch.Tensor, x_adv: torch.Tensor, kw: dict) -> None:
    budget = _budget_value(spec, kw)
    if budget is None:
        return
    d = (x_adv - x).double()
    norm = str(kw.get("norm", spec.norm)).lower()  # attacks accept "Linf"/"L2" too
    if norm == "linf":
        assert float(d.abs().max()) <= budget + 1e-6, (spec.name, float(d.abs().max()), budget)
    elif norm == "l2":
        l2 = d.flatten(1).norm(dim=1)
        assert bool((l2 <= budget * (1 + 1e-5) + 1e-6).all()), (spec.name, l2.max(), budget)
    elif norm == "l0" and spec.budget == "pixels":
        changed = (d.abs().amax(dim=1) > 0).flatten(1).sum(dim=1)
        assert bool((changed <= budget).all()), (spec.name, changed, budget)
    elif norm == "l0":  # gamma: a fraction of the input features
        frac = (d != 0).flatten(1).float().mean(dim=1)
        assert bool((frac <= budget + 1e-9).all()), (spec.name, frac, budget)
    elif norm == "patch":
        frac = (d.abs().amax(dim=1) > 0).flatten(1).float().mean(dim=1)
        assert bool((frac <= budget + 1e-9).all()), (spec.name, frac, budget)
    else:  # pragma: no cover - a new norm needs a rule here
        pytest.fail(f"{spec.name}: unknown norm {norm!r}")


def assert_contract(spec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, kw: dict) -> torch.Tensor:
    """Run the attack and check everything except reproducibility; returns x_adv."""
    x_before = x.clone()
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = spec.fn(model, x, y, **kw)
    out = getattr(out, "x_adv", out)
    assert isinstance(out, torch.Tensor)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not out.requires_grad and out.grad_fn is None
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(x, x_before), "x was modified"
    assert modes == [m.training for m in model.modules()], "training flags changed"
    assert flags == [p.requires_grad for p in model.parameters()], "requires_grad changed"
    for p, g in zip(model.parameters(), grads, strict=True):
        if g is None:
            assert p.grad is None, "a .grad appeared"
        else:
            assert p.grad is not None and torch.equal(p.grad, g), ".grad changed"
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state), "model state (weights/buffers) changed"
    assert_within_budget(spec, x, out, kw)
    return out


@pytest.fixture(scope="module")
def tiny(device):
    return TinyConvNet(num_classes=3, seed=0).to(device).eval()


# ---------------------------------------------------------------------------------------------
# tiny model, hypothesis over batch sizes, budgets and seeds
# ---------------------------------------------------------------------------------------------


def _budget_strategy(spec):
    if spec.budget is None:
        return st.none()
    p = {q.name: q for q in spec.params}[spec.budget]
    if spec.norm == "linf":
        return st.floats(0.0, min(p.high or 1.0, 16 / 255))
    if spec.norm == "l2":
        return st.floats(0.0, min(p.high or 2.0, 2.0))
    if p.kind == "int":
        return st.integers(int(p.low or 1), min(int(p.high or 3), 3))
    return st.floats(0.05, min(p.high or 0.3, 0.3))


@pytest.mark.parametrize("name", NAMES)
def test_contract_tiny_model(name, tiny, device) -> None:
    spec = _spec(name)

    @settings(max_examples=3, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(b=st.integers(1, 3), budget=_budget_strategy(spec), seed=st.integers(0, 2**16),
           data_seed=st.integers(0, 2**16))
    def check(b, budget, seed, data_seed):
        g = torch.Generator().manual_seed(data_seed)
        x = torch.rand(b, *TINY, generator=g).to(device)
        y = torch.randint(0, 3, (b,), generator=g).to(device)
        over = {"seed": seed}
        if budget is not None:
            over[spec.budget] = budget
        kw = _kwargs(spec, **over)
        out = assert_contract(spec, tiny, x, y, kw)
        again = spec.fn(tiny, x, y, **kw)
        again = getattr(again, "x_adv", again)
        torch.testing.assert_close(again, out, atol=0, rtol=0, msg=f"{name}: same seed, different result")

    check()


@pytest.mark.parametrize("name", NAMES)
def test_model_state_restored_train_mode_and_grads(name, device) -> None:
    spec = _spec(name)
    model = TinyConvNet(num_classes=3, seed=1).to(device)
    model.train()
    model.conv2.eval()  # mixed modes must come back exactly
    known = torch.full_like(model.fc.weight, 0.25)
    model.fc.weight.grad = known.clone()
    model.conv1.bias.requires_grad_(False)
    x = torch.rand(2, *TINY, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.tensor([0, 2], device=device)
    assert_contract(spec, model, x, y, _kwargs(spec, seed=0))
    assert model.training and not model.conv2.training
    assert torch.equal(model.fc.weight.grad, known)
    assert not model.conv1.bias.requires_grad and model.conv1.weight.requires_grad


@pytest.mark.parametrize("name", [n for n in NAMES if _spec(n).budget == "eps"])
def test_eps_above_one_asks_to_divide_by_255(name, tiny, device) -> None:
    spec = _spec(name)
    x = torch.rand(1, *TINY).to(device)
    y = torch.tensor([0], device=device)
    # L-inf: 8 instead of 8/255; L2: 0.5*255 = 127.5 is beyond the largest L2 distance in the cube
    bad = 8.0 if spec.norm == "linf" else 0.5 * 255
    assert bad > math.sqrt(x[0].numel()) or spec.norm == "linf"
    with pytest.raises(ValueError, match="255"):
        spec.fn(tiny, x, y, **_kwargs(spec, eps=bad, seed=0))


@pytest.mark.parametrize("name", [n for n in NAMES if _spec(n).targeted])
def test_targeted_mode_runs_within_contract(name, tiny, device) -> None:
    spec = _spec(name)
    x = torch.rand(3, *TINY, generator=torch.Generator().manual_seed(5)).to(device)
    with torch.no_grad():
        t = (tiny(x).argmax(1) + 1) % 3
    assert_contract(spec, tiny, x, t, _kwargs(spec, targeted=True, seed=0))


class ParamFreeNet(Classifier):
    """No parameters at all (weights are buffers): an attack that guesses its device from
    ``next(model.parameters())`` fails here."""

    last_conv = "relu"

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.num_classes = 3
        self.input_size = TINY
        self.normalize = Normalize((0.5,) * 3, (0.25,) * 3)
        self.register_buffer("w", torch.randn(4, 3, 3, 3, generator=g))
        self.register_buffer("fc", torch.randn(3, 4, generator=g))
        self.relu = nn.ReLU()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(F.conv2d(self.normalize(x), self.w, padding=1))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3)) @ self.fc.t()


@pytest.mark.parametrize("name", NAMES)
def test_device_comes_from_x_not_parameters(name, device) -> None:
    spec = _spec(name)
    model = ParamFreeNet().to(device).eval()
    x = torch.rand(2, *TINY, generator=torch.Generator().manual_seed(1)).to(device)
    y = torch.tensor([0, 1], device=device)
    assert_contract(spec, model, x, y, _kwargs(spec, seed=0))


# ---------------------------------------------------------------------------------------------
# ResNet-20 on a few CIFAR-10 images
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_contract_resnet20(name, resnet20, cifar_correct) -> None:
    spec = _spec(name)
    x, y = cifar_correct
    x, y = x[:2], y[:2]
    assert_contract(spec, resnet20, x, y, _kwargs(spec, seed=0))  # (reproducibility: on the tiny model)


# ---------------------------------------------------------------------------------------------
# "can be recorded" is the spec's field: every attack marked so reports its iterates, no other does
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_recordable_is_true_exactly_for_the_attacks_that_report_their_iterates(tiny, device, name):
    spec = _spec(name)
    x = torch.rand(1, *TINY, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = tiny(x).argmax(1)  # a correctly classified point: every attack runs on it
    kw = _kwargs(spec)
    if spec.recordable:
        traj = attacks.record(name, tiny, x, int(y), **kw)
        assert len(traj.frames) >= 1  # at least one iterate reported
        out = spec.fn(tiny, x, y, **kw)
        assert torch.allclose(getattr(out, "x_adv", out)[0].cpu(), traj.x_adv, atol=1e-6)
    else:
        with pytest.raises(ValueError, match="no iterations to record"):
            attacks.record(name, tiny, x, int(y), **kw)
