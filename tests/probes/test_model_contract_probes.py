"""Probes of the model-call contract (issue 24, items 15-18): each bad model or batch gives one
clear error that says what is wrong and what to do, through the attacks, the metrics (the batched
forward ``advviz.metrics.logits``), ``evaluate.autoattack`` and ``evaluate.robust_accuracy``.

Choice for item 17 (a model passed as a plain function): refused, not wrapped. advviz must put the
network in eval mode, freeze and restore its parameters and read its device and dtype; a function
hides its network, so a silent wrapper would, e.g., run dropout and batch norm in training mode.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from advviz import attacks, evaluate, explain, metrics, models

NAMES = attacks.list_attacks()
QUICK = {name: dict(attacks.get(name).quick) for name in NAMES}


@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    torch.manual_seed(0)
    return models.create("lenet5").eval()  # untrained: the contract does not depend on the weights


class Wrapped(nn.Module):
    """A user's wrapper: no ``num_classes``, no ``input_size``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TupleOut(Wrapped):
    def forward(self, x: torch.Tensor):
        return self.net(x), x.mean(dim=(2, 3))


class OneScore(nn.Module):
    """A binary classifier returning one score per image, shape ``(B,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)).squeeze(1)


def _digits(n: int = 4, size: int = 28, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g).to(dtype), torch.arange(n) % 10


# ---------------------------------------------------------------------------------------------
# 15. a 32x32 batch into LeNet (28x28): say which size the model takes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_size_names_the_size_the_model_takes_in_every_attack(lenet, name) -> None:
    x, y = _digits(2, size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"takes images of size \(1, 28, 28\).*\(2, 1, 32, 32\)"):
            attacks.get(name).fn(lenet, x, y, **QUICK[name])


def test_wrong_input_size_through_metrics_and_autoattack(lenet) -> None:
    x, y = _digits(2, size=32)
    for call in (lambda: metrics.accuracy(lenet, x, y), lambda: metrics.predictions(lenet, x),
                 lambda: evaluate.autoattack(lenet, x, y, eps=8 / 255, attacks=["fgsm"], checks=False)):
        with pytest.raises(ValueError, match=r"takes images of size \(1, 28, 28\).*interpolate"):
            call()


def test_wrong_input_size_without_input_size_attribute_gives_the_batch_shape() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).eval()
    x, y = _digits(2, size=32)
    with pytest.raises(ValueError, match=r"cannot take a batch of shape \(2, 1, 32, 32\).*size and channels"):
        metrics.accuracy(model, x, y)
    with pytest.raises(ValueError, match=r"cannot take a batch of shape \(2, 1, 32, 32\)"):
        attacks.pgd(model, x, y, eps=8 / 255, steps=2)


# ---------------------------------------------------------------------------------------------
# 16. label 10 on a wrapper without num_classes; a model with 1-D output
# ---------------------------------------------------------------------------------------------

def test_label_outside_the_classes_of_a_wrapper_without_num_classes(lenet) -> None:
    model = Wrapped(lenet)
    assert not hasattr(model, "num_classes")
    x, _ = _digits(2)
    y = torch.tensor([10, 1])
    for call in (lambda: attacks.pgd(model, x, y, eps=8 / 255, steps=2),
                 lambda: attacks.fgsm(model, x, y, eps=8 / 255),
                 lambda: evaluate.autoattack(model, x, y, eps=8 / 255, attacks=["pgd"], checks=False)):
        with pytest.raises(ValueError, match=r"outside"):
            call()
    for call in (lambda: metrics.accuracy(model, x, y), lambda: metrics.confidence(model, x, y),
                 lambda: metrics.asr(model, x, y)):
        with pytest.raises(ValueError, match=r"holds \[10\], outside the model's 10 classes"):
            call()


def test_one_score_per_image_is_refused_with_what_to_return() -> None:
    x, y = _digits(2)
    for call in (lambda: metrics.predictions(OneScore(), x), lambda: metrics.accuracy(OneScore(), x, y % 2),
                 lambda: attacks.pgd(OneScore(), x, y % 2, eps=8 / 255, steps=2)):
        with pytest.raises(ValueError, match=r"one number per image.*\(B, K\).*torch.stack"):
            call()


# ---------------------------------------------------------------------------------------------
# 17. a model passed as a plain function: refused with how to wrap it
# ---------------------------------------------------------------------------------------------

def test_plain_function_is_refused_with_how_to_wrap_it(lenet) -> None:
    def my_model(x: torch.Tensor) -> torch.Tensor:
        return lenet(x)

    x, y = _digits(2)
    calls = (lambda: attacks.pgd(my_model, x, y, eps=8 / 255, steps=2),
             lambda: metrics.accuracy(my_model, x, y),
             lambda: evaluate.autoattack(my_model, x, y, eps=8 / 255, attacks=["pgd"], checks=False),
             lambda: explain.gradcam(my_model, x),
             lambda: explain.feature_maps(my_model, x, ["conv1"]))
    for call in calls:
        with pytest.raises(TypeError, match=r"must be a torch.nn.Module, got a function \(my_model\).*Wrap it"):
            call()


# ---------------------------------------------------------------------------------------------
# 18. autoattack / robust_accuracy: tuple outputs refused as the attacks refuse them; float64 cast
# ---------------------------------------------------------------------------------------------

def test_autoattack_and_robust_accuracy_refuse_a_tuple_output_as_the_attacks_do(lenet) -> None:
    x, y = _digits(4)
    with pytest.raises(TypeError, match="returns only the logits"):
        evaluate.autoattack(TupleOut(lenet), x, y, eps=8 / 255, attacks=["pgd"])
    with pytest.raises(TypeError, match="returns only the logits"):
        evaluate.robust_accuracy(TupleOut(lenet), TensorDataset(x, y), attacks=["pgd"], eps=[8 / 255],
                                 progress=False)


@pytest.mark.slow
def test_autoattack_and_robust_accuracy_cast_float64_input_to_the_model(lenet) -> None:
    x, y = _digits(4)
    y = metrics.predictions(lenet, x)  # every point correct: robust_accuracy's checks (gradients, large eps) run
    pgd = [("pgd", {"steps": 2})]
    rep32 = evaluate.autoattack(lenet, x, y, eps=8 / 255, attacks=pgd, checks=False)
    rep64 = evaluate.autoattack(lenet, x.double(), y, eps=8 / 255, attacks=pgd, checks=False)
    assert rep64.clean_accuracy == rep32.clean_accuracy == 1.0 and rep64.x_adv.dtype == torch.float64
    kw = {"attacks": pgd, "eps": [8 / 255], "progress": False, "steps_check": False}
    res32 = evaluate.robust_accuracy(lenet, TensorDataset(x, y), **kw)
    res64 = evaluate.robust_accuracy(lenet, TensorDataset(x.double(), y), **kw)
    assert [r["clean"] for r in res64.samples.values()] == [r["clean"] for r in res32.samples.values()]
    assert res64.flags == res32.flags
    assert all(r["checks"]["grad_ok"] for r in res64.samples.values())  # the gradient check ran on float64 input


@pytest.mark.parametrize("name", ["apgd_ce", "apgd_dlr", "apgd_t", "fab", "square"])
def test_autoattack_stages_refuse_a_label_the_output_has_no_column_for(name):
    """Issue 24 item 16 for the AutoAttack stages: label 10 on a 10-class model without
    ``num_classes`` used to count as misclassified and never be attacked (a silent answer)."""
    from advviz import attacks

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10)).eval()
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"label outside \[0, 10\)"):
        attacks.get(name).fn(model, x, torch.tensor([1, 10]), **attacks.get(name).quick)
