"""Defensive distillation under the adaptive suite (issue 25, item 2): a saturated softmax stops the
cross-entropy attack end to end, not the suite's scale-invariant loss, which is then at least as
strong as the transfer attack without taking the minimum by hand."""

from __future__ import annotations

import pytest
import torch

from advviz import artifacts, attacks, data
from advviz.defenses import distillation as D
from advviz.evaluate import adaptive_attack
from tests.conftest import requires_cifar, requires_resnet

EPS_DIGITS = 0.1


def _distilled_lenet() -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(undistilled LeNet-5, its defensively distilled student)`` on the digits, made with the code of
    the ``resnet20_cifar10_defensive_distillation_quick`` artefact's builder (``scale_head`` by T, then
    :func:`advviz.defenses.distillation.defensive_distillation` at T = 100), on 1,000 train images."""
    T = 100.0
    x, y = data.sample(data.load("digits", "train"), 1000, seed=0)
    teacher = D.scale_head(artifacts.fresh("lenet5_digits"), T).train()
    student = D.scale_head(artifacts.fresh("lenet5_digits"), T).train()
    D.defensive_distillation(teacher, student, x, y, T=T, epochs=2, lr=0.01, optimizer="sgd", batch_size=64,
                             device="cpu", seed=0, progress=False)
    return artifacts.fresh("lenet5_digits").eval(), student.eval()


@pytest.mark.slow
def test_suite_end_to_end_beats_transfer_on_a_distilled_stand_in(one_thread):
    """On a defensively distilled LeNet-5 the cross-entropy attack end to end leaves every image (its
    gradient underflows: the student's top logit averages ~1,500), the transfer attack (PGD-10 on the
    undistilled LeNet-5) leaves few, and the suite's end-to-end attack alone leaves no more than the
    transfer attack (measured, 32 digits test images the student classifies correctly, eps 0.1:
    APGD-CE alone 1.000, transfer .250, suite .219; about 17 s of CPU, training included)."""
    base, student = _distilled_lenet()
    x, y = data.sample(data.load("digits", "test"), 32, seed=0, model=student)
    transfer = attacks.pgd(base, x, y, eps=EPS_DIGITS, alpha=EPS_DIGITS / 4, steps=10, seed=0)
    ce_only = adaptive_attack(student, x, y, eps=EPS_DIGITS, transfer=transfer, attacks=(("apgd_ce", {"steps": 100}),))
    # the saturation the issue is about (1.000 with the seeded LeNet-5 a fresh cache trains; .969 with an older one)
    assert ce_only.end_to_end_accuracy >= 0.9 > ce_only.transfer_accuracy
    assert any(f.startswith("transfer-beats-adaptive") for f in ce_only.flags)
    res = adaptive_attack(student, x, y, eps=EPS_DIGITS, transfer=transfer)
    assert res.end_to_end_accuracy <= res.transfer_accuracy
    assert res.breakers["transfer"] == 0 and not any(f.startswith("transfer-beats") for f in res.flags)
    assert res.accuracy == res.end_to_end_accuracy


@pytest.mark.slow
@requires_cifar
@requires_resnet
def test_suite_end_to_end_beats_transfer_on_the_shipped_distillation_network(one_thread):
    """The artefact ``reproduce uddn`` reports: the suite end to end leaves no more than PGD-10 made on
    the undefended ResNet-20 (the transfer attack). On a cold cache the store trains the artefact
    first (``resnet20_cifar10_defensive_distillation_quick``: 60 s on a quiet 2-core CPU)."""
    student, _ = D.load_defensive_student("quick")
    resnet, _ = artifacts.get("resnet20_cifar10")
    x, y = data.sample(data.load("cifar10", "test"), 32, seed=0, model=student)
    transfer = attacks.pgd(resnet, x, y, eps=8 / 255, alpha=2 / 255, steps=10, seed=0)
    res = adaptive_attack(student, x, y, eps=8 / 255, transfer=transfer)
    assert res.end_to_end_accuracy <= res.transfer_accuracy
    assert res.breakers["transfer"] == 0 and res.accuracy == res.end_to_end_accuracy
