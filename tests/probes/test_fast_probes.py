"""Probes of the fast model copy (advviz.attacks._fast, issue 24 item 13 and issue 23's table):
after a change of anything the forward pass reads, an attack runs the changed model, never a
stale copy; and switching the copies off in one thread leaves the other threads alone."""

from __future__ import annotations

import threading

import torch
from torch import nn

from advviz import attacks
from advviz.attacks._fast import fast_enabled, fast_model, fast_models

X = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 0])


class _Linear(nn.Module):
    """Logits ``W x`` on the flattened 3x4x4 image, ``W`` seeded."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(48, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(3, 48, generator=torch.Generator().manual_seed(1)))
            self.fc.bias.zero_()


class _TensorAttr(_Linear):
    """Logits ``W x * scale``, where ``scale`` is a plain tensor attribute (not a buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.ones(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * self.scale


class _DictAttr(_Linear):
    """Logits ``W x`` with the classes reordered by a dict attribute, ``cfg["order"]``."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = {"order": [0, 1, 2]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))[:, self.cfg["order"]]


def _pgd(m: nn.Module) -> torch.Tensor:
    return attacks.pgd(m, X, Y, eps=0.3, alpha=0.1, steps=5, seed=0)


def _assert_runs_the_model_itself(m: nn.Module, before: torch.Tensor) -> None:
    got = _pgd(m)
    with fast_models(False):
        ref = _pgd(m)
    assert not torch.equal(ref, before)  # the change matters to the attack
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_plain_tensor_attribute_reassigned() -> None:
    m = _TensorAttr().eval()
    before = _pgd(m)  # builds and caches whatever the attack uses
    m.scale = torch.tensor([1.0, -1.0, 1.0])
    _assert_runs_the_model_itself(m, before)


def test_plain_tensor_attribute_changed_in_place() -> None:
    m = _TensorAttr().eval()
    before = _pgd(m)
    m.scale.mul_(torch.tensor([-1.0, 1.0, -1.0]))
    _assert_runs_the_model_itself(m, before)


def test_dict_attribute_changed_in_place() -> None:
    m = _DictAttr().eval()
    before = _pgd(m)
    assert fast_model(m, X) is not m  # a plain model: its copy is cached, and must follow the dict
    m.cfg["order"] = [2, 0, 1]
    _assert_runs_the_model_itself(m, before)
    with torch.no_grad():
        assert torch.equal(fast_model(m, X)(X), m(X))


def test_parameter_changed_through_data() -> None:
    # p.data.mul_ does not bump p's version counter (an EMA update, WGAN weight clipping, old code)
    m = _DictAttr().eval()
    before = _pgd(m)
    m.fc.weight.data.mul_(-1.0)
    _assert_runs_the_model_itself(m, before)


def test_fooled_count_follows_the_changed_model() -> None:
    """The issue's measurement: after the change the attack fools every point, as on the model itself
    (measured on main's stale copy: 1 of 4)."""
    m = _TensorAttr().eval()
    flipped = torch.tensor([1.0, -1.0, 1.0])
    with torch.no_grad():
        y = (m.fc(X.flatten(1)) * flipped).argmax(1)  # the changed model's classes: all 4 correct
    attacks.pgd(m, X, y, eps=0.1, alpha=0.025, steps=10, seed=0)
    m.scale = flipped
    with torch.no_grad():
        assert torch.equal(m(X).argmax(1), y)
        fooled = int((m(attacks.pgd(m, X, y, eps=0.1, alpha=0.025, steps=10, seed=0)).argmax(1) != y).sum())
        with fast_models(False):
            ref = int((m(attacks.pgd(m, X, y, eps=0.1, alpha=0.025, steps=10, seed=0)).argmax(1) != y).sum())
    assert fooled == ref == 4, (fooled, ref)


def test_switching_off_in_one_thread_leaves_another_thread_on() -> None:
    m = _DictAttr().eval()
    inside, release = threading.Event(), threading.Event()
    worker_saw: list[bool] = []

    def worker() -> None:
        with fast_models(False):
            worker_saw.append(fast_enabled())
            worker_saw.append(fast_model(m, X) is m)
            inside.set()
            release.wait(30)
        worker_saw.append(fast_enabled())

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert inside.wait(30)
        assert fast_enabled()  # this thread was never switched off
        assert fast_model(m, X) is not m
    finally:
        release.set()
        t.join(30)
    assert worker_saw == [False, True, True]
    assert fast_enabled()


def test_switching_off_here_does_not_reach_a_thread_running_meanwhile() -> None:
    m = _DictAttr().eval()
    started, go = threading.Event(), threading.Event()
    seen: list[bool] = []

    def worker() -> None:
        started.set()
        go.wait(30)
        seen.append(fast_enabled())
        seen.append(fast_model(m, X) is not m)

    t = threading.Thread(target=worker)
    t.start()
    assert started.wait(30)
    with fast_models(False):
        go.set()
        t.join(30)
        assert not fast_enabled()
    assert seen == [True, True]
