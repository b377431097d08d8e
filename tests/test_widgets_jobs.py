"""The widgets' job runner (``advviz.widgets._jobs``) and the jobs of the Robustness and Train tabs.

The attack lab's probes (a model or image switch during a running attack, a script ending right
after ``wait()``) are in ``tests/probes/test_widget_jobs_probes.py``. Every test runs under
``no_hidden_errors`` (from ``tests/test_widgets.py``).
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from tests.test_widgets import expect_widget_errors, lenet_state, no_hidden_errors, provoked  # noqa: F401

CLASSES = [str(i) for i in range(10)]


class _Gated(nn.Module):
    """A model whose forward passes in a worker thread wait while ``gate`` is closed (``started`` tells
    the test that the worker got there): the test decides when a background job goes on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.input_size = tuple(inner.input_size)
        self.num_classes = inner.num_classes
        self.gate, self.started = threading.Event(), threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if threading.current_thread() is not threading.main_thread():
            self.started.set()
            assert self.gate.wait(60), "the test never opened the gate"
        return self.inner(x)


class _Component:
    """A stand-in widget for the runner: an error area and the hooks' calls."""

    def __init__(self) -> None:
        from advviz.widgets import ErrorArea

        self.errors = ErrorArea()
        self.calls: list[tuple[str, object]] = []


def _tiny_state():
    from advviz.widgets import ExplorerState

    torch.manual_seed(0)
    st = ExplorerState(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10)), model_name="tiny", classes=CLASSES)
    st.set_image(torch.rand(3, 4, 4), 1)
    return st


def _start(runner, comp, work, **kw):
    return runner.start(work, done=lambda j, r: comp.calls.append(("done", r)),
                        dropped=lambda j, why: comp.calls.append(("dropped", why)),
                        failed=lambda j, e: comp.calls.append(("failed", str(e))),
                        ended=lambda j: comp.calls.append(("ended", j.outcome)), **kw)


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------

def test_state_versions_count_model_and_image_changes(lenet_digits, digits_test):
    from advviz.widgets import ExplorerState

    st = ExplorerState(lenet_digits, model_name="lenet5_digits", classes=CLASSES, dataset="digits")
    assert st.versions() == {"model": 0, "image": 0}
    st.set_image(*digits_test[0])
    st.set_label(3)
    st.set_adversarial(digits_test[1][0])  # an attack's result is no change of the state's inputs
    assert st.versions() == {"model": 0, "image": 2}
    st.set_model(lenet_digits, name="lenet5_digits")  # the image fits: it stays
    assert st.versions() == {"model": 1, "image": 2} and st.x is not None
    from tests.probes.test_widget_jobs_probes import _Cifar

    st.set_model(_Cifar(), name="cifar-size")  # the image does not fit: dropped, so it changed too
    assert st.versions() == {"model": 2, "image": 3} and st.x is None
    assert st.versions(("model",)) == {"model": 2}


def test_runner_foreground_runs_work_and_hooks_in_the_calling_thread():
    from advviz.widgets._jobs import JobRunner

    st, comp = _tiny_state(), _Component()
    runner = JobRunner(comp, state=st, background=False)
    job = _start(runner, comp, lambda j: (threading.current_thread(), j.model, j.image, j.inputs["k"]),
                 inputs={"k": 5}, name="demo")
    assert comp.calls == [("done", (threading.main_thread(), st.model, st.x, 5)), ("ended", "done")]
    assert job.finished and job.outcome == "done" and not runner.running and runner.wait(0)
    assert job.image is st.x and job.versions == st.versions()


def test_runner_background_wait_joins_the_worker_and_the_ticker():
    from advviz.widgets._jobs import JobRunner

    st, comp = _tiny_state(), _Component()
    ticks: list[float] = []
    runner = JobRunner(comp, state=st, background=True, tick=lambda j, el: ticks.append(el))
    job = _start(runner, comp, lambda j: time.sleep(0.6) or threading.current_thread())
    with pytest.raises(RuntimeError, match="already running"):
        runner.start(lambda j: None)
    assert runner.wait(30)
    worker = comp.calls[0][1]
    assert worker is not threading.main_thread() and not worker.is_alive()  # joined, not only "done"
    assert not runner.ticking and ticks and job.outcome == "done"
    n = len(ticks)
    time.sleep(0.4)
    assert len(ticks) == n  # no tick after the job ended


def test_runner_drops_the_result_of_a_job_whose_state_changed(digits_test):
    from advviz.widgets._jobs import JobRunner

    st, comp = _tiny_state(), _Component()
    gate = threading.Event()
    runner = JobRunner(comp, state=st, background=True)
    job = _start(runner, comp, lambda j: gate.wait(30) and "old result")
    st.set_image(torch.rand(3, 4, 4))
    assert job.stale() == "the image changed"
    gate.set()
    assert runner.wait(30)
    assert comp.calls == [("dropped", "the image changed"), ("ended", "dropped")]
    assert job.result == "old result" and job.reason == "the image changed"
    # a job that depends on the model only is not dropped when the image changes; one that raised and
    # became stale is dropped without showing its error (it was about the old state)
    comp.calls.clear()
    gate.clear()
    _start(runner, comp, lambda j: gate.wait(30) and "curve", depends=("model",))
    st.set_image(torch.rand(3, 4, 4))
    gate.set()
    assert runner.wait(30) and comp.calls == [("done", "curve"), ("ended", "done")]
    comp.calls.clear()
    gate.clear()

    def broken(job):
        gate.wait(30)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    _start(runner, comp, broken)
    st.set_model(nn.Sequential(nn.Flatten(), nn.Linear(48, 10)), name="other")
    gate.set()
    assert runner.wait(30) and comp.calls == [("dropped", "the model changed"), ("ended", "dropped")]
    assert comp.errors.value == ""


def test_runner_shows_errors_in_the_component_and_relays_stop(expect_widget_errors):
    from advviz.widgets._jobs import JobRunner

    st, comp = _tiny_state(), _Component()
    runner = JobRunner(comp, state=st, background=True)

    def broken(job):
        raise ValueError("eps=8 is above 1")

    _start(runner, comp, broken)
    assert runner.wait(30)
    assert comp.calls == [("failed", "eps=8 is above 1"), ("ended", "failed")]
    assert "eps=8 is above 1" in comp.errors.value and len(provoked(expect_widget_errors)) == 1
    comp.calls.clear()

    def until_stopped(job):
        while not job.stop_requested():
            time.sleep(0.01)
        return "stopped"

    _start(runner, comp, until_stopped)
    assert runner.running and not runner.wait(0.2)
    runner.stop()
    assert runner.wait(30) and comp.calls == [("done", "stopped"), ("ended", "done")]


# ---------------------------------------------------------------------------------------------
# Robustness tab
# ---------------------------------------------------------------------------------------------

def _gated_state(lenet_digits):
    from advviz.widgets import ExplorerState

    model = _Gated(lenet_digits)
    return ExplorerState(model, model_name="gated lenet", classes=CLASSES, dataset="digits"), model


def test_robustness_cifar_defaults_start_below_1_over_255_behind_jpeg():
    """ResNet-20 is at 0 robust accuracy from 1/255 on: the grid starts at 0.25/255 and 0.5/255. JPEG is
    the first purifier offered for colour images too (the menu's first entry, cgan, was kept)."""
    from advviz import models
    from advviz._cli_parse import parse_eps
    from advviz.widgets import ExplorerState
    from advviz.widgets.robustness import RobustnessView, default_grid

    grid = [parse_eps(t) for t in default_grid("cifar10").split(",")]
    assert grid[:2] == [0.25 / 255, 0.5 / 255] and grid[-1] == 8 / 255 and grid == sorted(grid)
    assert default_grid("digits") == "0.05, 0.1, 0.2, 0.3"
    st = ExplorerState(models.create("resnet20"), model_name="resnet20 (untrained)", classes=CLASSES,
                       dataset="cifar10")
    view = RobustnessView(st, background=False)
    assert view.eps.value == default_grid("cifar10") and view.purifier.value == "jpeg"
    assert "cgan" in view.purifier.options


def test_robustness_model_switch_during_a_run_drops_its_curves(lenet_digits):
    from advviz.widgets.robustness import RobustnessView

    st, gated = _gated_state(lenet_digits)
    view = RobustnessView(st, background=True, n=16, steps=2)
    view.eps.value = "0.1, 0.3"
    view.run_button.click()
    assert gated.started.wait(60) and view.running
    st.set_model(lenet_digits, name="lenet5_digits", dataset="digits")
    gated.gate.set()
    assert view.wait(60)
    # nothing of the old model's run is shown for the new model, and the status says why
    assert view.result is None and view.chart.value == "" and view.point.options == () and view.broken.options == ()
    assert view.status.value.startswith("dropped") and "the model changed" in view.status.value
    assert "Run" in view.status.value and "the curves show" not in view.status.value
    assert not view.run_button.disabled and view.stop_button.disabled
    view.n.value = 8
    view.run(wait=True)
    assert view.result["complete"] and view.result["model"] == "lenet5_digits" and view.result["n_done"] == 8


def test_robustness_image_switch_during_a_run_keeps_its_curves(lenet_digits, digits_test):
    """The curves are the model's on its test images: another current image does not make them stale."""
    from advviz.widgets.robustness import RobustnessView

    st, gated = _gated_state(lenet_digits)
    view = RobustnessView(st, background=True, n=8, steps=2)
    view.eps.value = "0.1, 0.3"
    view.run_button.click()
    assert gated.started.wait(60)
    st.set_image(*digits_test[4])
    gated.gate.set()
    assert view.wait(60)
    assert view.result["complete"] and view.result["n_done"] == 8 and view.status.value.startswith("done")
    assert "<svg" in view.chart.value and view.point.value is not None


def test_robustness_stop_before_the_first_batch_leaves_no_old_curve(lenet_digits):
    from advviz.widgets.robustness import RobustnessView

    st, gated = _gated_state(lenet_digits)
    gated.gate.set()
    view = RobustnessView(st, background=True, n=8, steps=2)
    view.eps.value = "0.1, 0.3"
    view.run(wait=True)  # a complete run first: its curves must not survive the next one
    assert view.result["complete"] and "<svg" in view.chart.value and view.point.value is not None
    gated.gate.clear()
    gated.started.clear()
    view.n.value = 64
    view.run_button.click()
    assert view.chart.value == "" and view.point.options == ()  # cleared as the run starts
    assert gated.started.wait(60)
    view.stop_button.click()
    gated.gate.set()
    assert view.wait(60)
    assert view.status.value.startswith("stopped") and "no curve" in view.status.value
    assert view.chart.value == "" and view.point.options == () and view.broken.options == ()
    assert view.curves() == {}


def test_robustness_stop_after_a_batch_shows_the_partial_curves(lenet_digits, monkeypatch):
    from advviz.widgets.robustness import RobustnessView

    st, gated = _gated_state(lenet_digits)
    gated.gate.set()
    view = RobustnessView(st, background=True, n=64, steps=2)
    view.eps.value = "0.1, 0.3"
    publish = view._publish
    published = []

    def stop_after_the_first_batch(*args, **kwargs):  # Stop pressed as soon as the first batch shows
        publish(*args, **kwargs)
        published.append(True)
        view.stop()

    monkeypatch.setattr(view, "_publish", stop_after_the_first_batch)
    view.run_button.click()
    assert view.wait(120)
    res = view.result
    assert res is not None and not res["complete"] and published
    assert view.status.value.startswith("stopped: the curves show the images done")
    done = {c: len(res["curves"][c]["indices"]) for c in ("model", "defended")}
    assert done["model"] == 32 and done["defended"] == 0 and f"{done['model']} of 64" in view.status.value
    curves = view.curves()
    assert set(curves) == {"model"} and "(32 images)" in view.chart.value and "so far" in view.chart.value
    assert view.point.value is not None and view.point.value[0] == "model"  # a point is chosen
    assert view.progress.value < 1.0 and view.progress.bar_style == "warning"


# ---------------------------------------------------------------------------------------------
# Train tab
# ---------------------------------------------------------------------------------------------

def test_train_tab_end_does_not_replace_the_model_picked_meanwhile(lenet_state):
    from advviz import models
    from advviz.widgets import TrainPanel

    panel = TrainPanel(lenet_state, arch="lenet5", dataset="digits", epochs=1, train_images=128, batch_size=32)
    panel.start_button.click()
    assert panel.running
    picked = models.create("lenet5")  # the user picks another model in the header while it trains
    lenet_state.set_model(picked, name="picked meanwhile", classes=CLASSES, dataset="digits")
    assert panel.wait(120) and panel.result.epochs_completed == 1
    assert lenet_state.model is picked and lenet_state.model_name == "picked meanwhile"
    assert not panel.use_button.disabled
    assert "still uses picked meanwhile" in panel.status.value and "Use this model" in panel.status.value
    panel.use_button.click()
    assert lenet_state.model is panel.trained["model"] and lenet_state.model is not picked
    assert lenet_state.model_name == "lenet5 trained here on digits (1 ep)" and lenet_state.dataset == "digits"
    assert panel.use_button.disabled and "now uses" in panel.status.value
