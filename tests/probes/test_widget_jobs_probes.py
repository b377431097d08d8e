"""Probes of issue 24 on the widgets' background jobs (items 14 and 23).

* 14: the model or the image switched while an attack runs: the result must not be attached to
  the new state ("before" of the old model, "after" of the new one, ``x_adv`` of the old image);
  the attack lab says, in a student's words, that the result was dropped and why.
* 23: a script that exits right after ``lab.wait()`` must exit 0 (it aborted with ``terminate
  called without an active exception``, exit 134, because ``wait()`` did not join the worker).

Every widget test runs under ``no_hidden_errors`` (from ``tests/test_widgets.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.test_widgets import digit_state, expect_widget_errors, lenet_state, no_hidden_errors  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


class _Cifar(nn.Module):
    """A tiny 3x32x32 classifier: a model of another input size than the digits' LeNet."""

    input_size = (3, 32, 32)
    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.fixture
def gated_fgsm(monkeypatch):
    """FGSM that waits (in the worker) until the test opens the gate; records the model it was given."""
    from advviz import attacks

    spec = attacks.get("fgsm")
    real = type(spec).__call__
    gate, started, models_seen = threading.Event(), threading.Event(), []

    def gated(self, model, *a, **k):
        models_seen.append(model)
        started.set()
        assert gate.wait(60), "the test never opened the gate"
        return real(self, model, *a, **k)

    monkeypatch.setattr(type(spec), "__call__", gated)
    return gate, started, models_seen


def _switch_model(state, which: str) -> None:
    from advviz import models

    if which == "same size":
        state.set_model(models.create("lenet5"), name="lenet5 (untrained)", classes=[str(i) for i in range(10)])
    else:
        state.set_model(_Cifar(), name="a CIFAR-size model", classes=[str(i) for i in range(10)])


@pytest.mark.parametrize("change", ["model, same size", "model, another size", "image"])
def test_probe_14_state_switched_during_a_running_attack_drops_the_result(digit_state, digits_test, gated_fgsm,
                                                                          change):
    from advviz.widgets import AttackLab

    gate, started, models_seen = gated_fgsm
    st = digit_state
    old_model, old_x = st.model, st.x.clone()
    lab = AttackLab(st, attack="fgsm", background=True)
    lab.controls.set_values({"eps": 0.3})
    lab.run_button.click()
    assert started.wait(60) and lab.running
    if change == "image":
        st.set_image(*digits_test[7], source="digits/test #7")
    else:
        _switch_model(st, change.split(", ")[1])
    gate.set()
    assert lab.wait(60)
    assert models_seen == [old_model]  # the attack ran on the model it started with
    # nothing of the old run is attached to the new state
    assert st.x_adv is None and st.attack == ""
    assert lab.last_result is None
    assert lab.adversarial.value == b"" and lab.amplified.value == b"" and lab.heatmap.value == b""
    assert lab.bars.value == "" and lab.norms.value == ""
    what = "image" if change == "image" else "model"
    # the student is told that it was dropped, and why; no "failed", no advice that does not fit
    assert lab.status.value.startswith("dropped") and f"the {what} changed" in lab.status.value
    assert f"the {what} changed" in lab.errors.value and "Press Run" in lab.errors.value
    assert "failed" not in lab.status.value and "batch dimension" not in lab.errors.value
    assert lab.errors.last is None  # a notice, not an error
    assert not lab.run_button.disabled
    if change == "image":
        assert not torch.equal(st.x, old_x) and lab.original.value[:4] == b"\x89PNG"
    # the next run works on the new state
    if st.x is not None:
        lab.run(wait=True)
        assert lab.status.value.startswith("done") and st.x_adv is not None
        assert models_seen[-1] is st.model


_SCRIPT = """
import torch
from torch import nn
from advviz.widgets import AttackLab, ExplorerState

torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
state = ExplorerState(model, model_name="tiny", classes=[str(i) for i in range(10)])
state.set_image(torch.rand(3, 8, 8), 1)
lab = AttackLab(state, attack="pgd", background=True, quick=True)
lab.run()
{ending}
"""


def _run_script(tmp_path: Path, ending: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(_SCRIPT).format(ending=ending))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_probe_23_script_ending_right_after_wait_exits_cleanly(tmp_path):
    """Exit 134 ("terminate called without an active exception") came in about 4 runs of 5 on main:
    three runs make a pass on the old code unlikely."""
    for _ in range(3):
        p = _run_script(tmp_path, 'assert lab.wait(120)\nprint("status:", lab.status.value)')
        assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[-2000:]}"
        assert "status: done in" in p.stdout and "terminate called" not in p.stderr


@pytest.mark.slow
def test_probe_23_script_ending_while_a_job_runs_exits_cleanly(tmp_path):
    """Without ``wait()``: at exit the running job is asked to stop and joined."""
    p = _run_script(tmp_path, 'print("running:", lab.running)')
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[-2000:]}"
    assert "terminate called" not in p.stderr
