"""Probes of issue 24 on evaluating a model whose numbers were silently wrong (items 4 and 5).

4. A randomized model passed unflagged: two identical ``autoattack`` calls reported .31 and .44 robust
   accuracy, and re-judging the returned ``x_adv`` gave .56-.63.
5. Saturated softmax (logits x 1e4): ``gradient_ok`` passed (it checks the margin's gradient, not the
   cross-entropy's the attacks use), PGD reported 1.00 robust where the healthy model gives .31, and the
   flag that fired (``large-eps``) blamed masking or randomness and advised BPDA/EOT.

Each case must now be flagged with what it is and what to do, and give a reproducible, defined number.
Kept forever.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advviz import evaluate as E


class NoisyLogits(nn.Module):
    """A randomized model: Gaussian noise of std 3 on the logits of every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.num_classes = model, 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return z + 3.0 * torch.randn_like(z)


class ScaledLogits(nn.Module):
    """A saturated softmax: the logits times 1e4."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.num_classes = model, 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * 1e4


@pytest.fixture(scope="module")
def batch(digits_test):
    return digits_test.tensors(torch.arange(32))


def test_randomized_model_is_flagged_judged_by_draws_and_reproducible(lenet_digits, batch):
    x, y = batch
    model = NoisyLogits(lenet_digits)
    pgd = ("pgd", {"steps": 10, "alpha": 0.02})
    one = E.autoattack(model, x, y, eps=0.08, attacks=[pgd], checks=False)
    two = E.autoattack(model, x, y, eps=0.08, attacks=[pgd], checks=False)
    assert one.robust_accuracy == two.robust_accuracy and one.per_sample == two.per_sample
    assert one.randomized is True  # the Report records the probe's verdict
    flags = [f for f in one.flags if f.startswith("randomized:")]
    assert len(flags) == 1 and "EOT" in flags[0] and ("expectation" in flags[0] or "repeated draws" in flags[0])
    judge = one.config["judge"]
    assert judge["draws"] >= 2 and "every one of the draws" in judge["rule"]
    # a deterministic model: not flagged, one forward pass
    plain = E.autoattack(lenet_digits, x, y, eps=0.08, attacks=[pgd], checks=False)
    assert plain.randomized is False and not any(f.startswith("randomized") for f in plain.flags)


def test_saturated_softmax_is_flagged_with_what_to_do(lenet_digits, batch):
    x, y = batch
    pgd = ("pgd", {"steps": 20, "alpha": 0.025})
    healthy = E.autoattack(lenet_digits, x, y, eps=0.1, attacks=[pgd])
    scaled = E.autoattack(ScaledLogits(lenet_digits), x, y, eps=0.1, attacks=[pgd])
    assert scaled.robust_accuracy > healthy.robust_accuracy  # the silent part: PGD is stopped by the scale
    codes = [f.split(":")[0] for f in scaled.flags]
    assert "saturated-softmax" in codes and "gradient-masking" not in codes
    sat = next(f for f in scaled.flags if f.startswith("saturated-softmax"))
    assert "cross-entropy" in sat and ("APGD-DLR" in sat or "APGD-T" in sat)
    for f in scaled.flags:  # no flag blames masking or randomness for it, nor advises BPDA/EOT
        if f.startswith("large-eps"):
            assert "BPDA" not in f and "saturated" in f
    assert not any(f.startswith("saturated-softmax") for f in healthy.flags)
