"""The input contract every registered attack shares (``advviz.attacks.list_attacks()``), enforced
in one place (``advviz.attacks.gradient.attack_forward``): tuple/dict model outputs are refused
with a fix, float64 and float16 inputs are attacked and returned in their dtype inside the budget,
and a model that outputs probabilities makes the attack warn once per call."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advviz import attacks
from tests.helpers import TinyConvNet
from tests.test_attacks_invariants import assert_within_budget

NAMES = attacks.list_attacks()
QUICK = {name: dict(attacks.get(name).quick) for name in NAMES}


class TupleNet(nn.Module):
    """Returns ``(logits, features)``, as many research models do."""

    def __init__(self, kind: str = "tuple") -> None:
        super().__init__()
        self.net, self.kind = TinyConvNet(num_classes=4, seed=0).eval(), kind

    def forward(self, x: torch.Tensor):
        z = self.net(x)
        return {"logits": z} if self.kind == "dict" else (z, x.mean(dim=(2, 3)))


class SoftmaxNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyConvNet(num_classes=4, seed=0).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).softmax(dim=1)


def _batch(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 8, 8, generator=g).to(dtype), torch.tensor([0, 1, 2])


@pytest.mark.parametrize("kind", ["tuple", "dict"])
@pytest.mark.parametrize("name", NAMES)
def test_tuple_or_dict_output_is_refused_with_a_fix(name, kind) -> None:
    x, y = _batch()
    with pytest.raises(TypeError, match="returns only the logits"):
        attacks.get(name).fn(TupleNet(kind), x, y, **QUICK[name])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_float64_and_float16_inputs_come_back_in_their_dtype_within_budget(name, dtype) -> None:
    model = TinyConvNet(num_classes=4, seed=0).eval()
    x, y = _batch(dtype)
    spec = attacks.get(name)
    out = spec.fn(model, x, y, **QUICK[name])
    assert out.dtype == dtype and out.shape == x.shape and not out.requires_grad
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert_within_budget(spec, x, out, QUICK[name])
    if name in ("fgsm", "deepfool"):  # deterministic: the same images as on the float32 copy
        ref = spec.fn(model, x.float(), y, **QUICK[name])
        tol = 1e-6 if dtype == torch.float64 else 1e-3
        assert float((out.float() - ref).abs().max()) <= tol, name

def test_float16_l2_rounding_stays_inside_the_ball() -> None:
    model = TinyConvNet(num_classes=4, seed=0).eval()
    x, y = _batch(torch.float16)
    for name in ("pgd", "apgd_ce", "square"):
        out = attacks.get(name).fn(model, x, y, norm="l2", eps=0.3, **QUICK[name])
        assert out.dtype == torch.float16
        assert bool(((out.double() - x.double()).flatten(1).norm(dim=1) <= 0.3).all()), name


@pytest.mark.parametrize("name", NAMES)
def test_probability_outputs_warn_once(name) -> None:
    x, y = _batch()
    with pytest.warns(UserWarning, match="probabilities") as rec:
        attacks.get(name).fn(SoftmaxNet(), x, y, **QUICK[name])
    assert sum("probabilities" in str(w.message) for w in rec) == 1


@pytest.mark.parametrize("name", NAMES)
def test_logit_outputs_do_not_warn(name) -> None:
    x, y = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attacks.get(name).fn(TinyConvNet(num_classes=4, seed=0).eval(), x, y, **QUICK[name])
