"""Widget-level tests of the explorer issue ("The explorer in front of a class"), one or more per point.

Every test runs under ``no_hidden_errors`` (imported from ``test_widgets``): a callback error
shown in a widget or only logged fails it unless the test provoked it on purpose.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import io
import time

import ipywidgets as W
import numpy as np
import pytest
import torch

from tests.test_widgets import _png_bytes, digit_state, expect_widget_errors, lenet_state, no_hidden_errors  # noqa: F401


def _upload(picker, content: bytes, name: str) -> None:
    picker.upload.value = ({"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
                            "last_modified": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)},)


def _walk(widget):
    """Every widget reachable through ``children``, with whether it is displayed (no ``display: none`` above)."""
    stack = [(widget, True)]
    while stack:
        w, shown = stack.pop()
        shown = shown and getattr(getattr(w, "layout", None), "display", None) != "none"
        yield w, shown
        for c in getattr(w, "children", ()) or ():
            stack.append((c, shown))


def _broken_images(widget) -> list[W.Image]:
    """Displayed ``W.Image`` widgets without bytes: a browser draws a broken-image icon for them."""
    return [w for w, shown in _walk(widget) if isinstance(w, W.Image) and shown and not bytes(w.value)]


def _png_size(data) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(bytes(data))).size


# ---------------------------------------------------------------------------------------------
# 1. the attack status ends on "done"
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_attack_status_reads_done_after_every_run(digit_state, monkeypatch):
    from advviz import attacks
    from advviz.widgets import AttackLab

    spec = attacks.get("pgd")
    real = type(spec).__call__

    def slow(self, *a, **k):  # long enough for several progress ticks
        time.sleep(0.6)
        return real(self, *a, **k)

    monkeypatch.setattr(type(spec), "__call__", slow)
    lab = AttackLab(digit_state, attack="pgd", background=True, quick=True)
    for _ in range(6):
        lab.run_button.click()
        assert lab.wait(60)
        assert lab.status.value.startswith("done in"), lab.status.value
        assert not lab.jobs.ticking
    # a tick that arrives late (the ticker had read "not done" just before the result) writes nothing
    lab._on_tick(lab.jobs.job, 0.3)
    assert lab.status.value.startswith("done in") and lab.progress.bar_style == "success"


# ---------------------------------------------------------------------------------------------
# 2. every component follows a model change
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_model_switch_cifar_to_digits_leaves_nothing_stale(resnet20, cifar_test, lenet_digits):
    from advviz.widgets import Explorer

    ex = Explorer("resnet20_cifar10", dataset="cifar10", background=False, quick=True)
    ex.attack_lab.run()
    ex.purifier_lab.purifier.value = "cgan"
    assert ex.purifier_lab.last_result["input"] == "adversarial" and ex.purifier_lab.source.value == "adversarial"
    ex.model_choice.value = "lenet5_digits"
    st = ex.state
    assert st.model_name == "lenet5_digits" and st.x.shape == (1, 28, 28) and st.x_adv is None
    assert ex.picker.dataset.value == "digits" and ex.picker.klass.options[0] == ("all", -1)
    assert [lab for lab, _ in ex.picker.klass.options][1:3] == ["0", "1"]
    pur = ex.purifier_lab
    assert pur.purifier.value == "jpeg" and "switched to jpeg" in pur.errors.value and pur.errors.last is None
    assert dict((v, k) for k, v in pur.purifier.options)["cgan"] == "cgan — not for this model"
    assert pur.source.value == "clean" and pur.last_result["input"] == "clean"
    assert "clean input" in pur.bars.value and "input (clean)" in pur.input_caption.value
    assert _png_size(pur.input_img.value)[0] % 28 == 0  # the digit, not the old CIFAR image
    assert ex.cfr.cam.shape == (1, 1, 28, 28)
    assert [lab for lab, _ in ex.attack_lab.target.options][1] == "0"
    assert ex.train_panel.dataset.value == "digits"
    assert ex.attack_lab.adversarial.value == b"" and _broken_images(ex) == []


# ---------------------------------------------------------------------------------------------
# 4, 5. the launcher: a working copy, a log file, no news
# ---------------------------------------------------------------------------------------------

def test_explore_opens_a_working_copy_and_keeps_the_repository_clean(monkeypatch, tmp_path):
    import nbformat

    from advviz.widgets import launch

    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path / "cache"))
    repo_nb = launch.find_notebook()
    digest = hashlib.sha256(repo_nb.read_bytes()).hexdigest()
    copy = launch.working_copy()
    assert copy == tmp_path / "cache" / "explorer" / "00_explorer.ipynb"
    assert [c.source for c in nbformat.read(str(copy), as_version=4).cells] == \
        [c.source for c in nbformat.read(str(repo_nb), as_version=4).cells]
    # JupyterLab autosaves a widget output and the widget state into the copy; the user edits a cell
    nb = nbformat.read(str(copy), as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0}})]
    code.execution_count = 3
    code.source += "\n# my note"
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, str(copy))
    again = nbformat.read(str(launch.working_copy()), as_version=4)
    cell = next(c for c in again.cells if c.cell_type == "code")
    assert cell.source.endswith("# my note") and cell.outputs == [] and cell.execution_count is None
    assert "widgets" not in again.metadata
    assert hashlib.sha256(repo_nb.read_bytes()).hexdigest() == digest


def test_explore_logs_to_a_file_it_names_and_turns_news_off(monkeypatch, tmp_path):
    from advviz.widgets import launch

    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path / "cache"))
    seen = {}

    class Proc:
        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

    def fake_start(port=0, *, notebook=None, log_path=None, **kw):
        seen.update(notebook=notebook, log_path=log_path)
        return launch.LabServer(process=Proc(), url="http://127.0.0.1:1/lab?token=t", base_url="", token="t",
                                root=tmp_path, notebook=notebook)

    monkeypatch.setattr(launch, "start", fake_start)
    lines: list[str] = []
    assert launch.main(open_browser=False, report=lines.append) == 0
    assert seen["notebook"] == tmp_path / "cache" / "explorer" / "00_explorer.ipynb"
    assert seen["notebook"] != launch.find_notebook()
    assert any(str(seen["log_path"]) in line and "log" in line for line in lines), lines
    cmd = launch.lab_command(1234, "tok", tmp_path)
    assert "--LabApp.news_url=None" in cmd and "--ServerApp.ip=127.0.0.1" in cmd
    assert "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate" in cmd


def test_server_output_goes_to_the_log_file(monkeypatch, tmp_path):
    import subprocess

    from advviz.widgets import launch

    nb = tmp_path / "nb.ipynb"
    nb.write_text("{}")

    class Dead:
        returncode = 3

        def __init__(self, cmd, stdout=None, **kw):
            stdout.write(b"port already in use\n")
            stdout.flush()

        def poll(self):
            return 3

    monkeypatch.setattr(subprocess, "Popen", Dead)
    log = tmp_path / "logs" / "lab.log"
    with pytest.raises(RuntimeError, match="port already in use"):
        launch.start(0, notebook=nb, log_path=log, timeout=5)
    assert log.read_text() == "port already in use\n"


# ---------------------------------------------------------------------------------------------
# 6. labels follow what the user did
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_header_names_the_model_trained_in_the_train_tab(lenet_digits):
    from advviz.widgets import Explorer

    ex = Explorer("lenet5_digits", dataset="digits", background=False, quick=True)
    panel = ex.train_panel
    panel.epochs.value, panel.train_images.value = 1, 128
    panel.start_button.click()
    assert panel.wait(120) and panel.result.epochs_completed == 1
    assert ex.state.model_name == "lenet5_digits"  # not swapped in until the user says so
    panel.use_button.click()
    assert ex.state.model_name.startswith("lenet5_digits + fine-tuned on digits")
    assert ex.model_choice.value == ex.state.model_name and ex.state.model_name in ex.title.value
    ex.model_choice.value = "lenet5_digits"  # back to the zoo entry
    assert ex.state.model_name == "lenet5_digits"


def test_train_tab_offers_only_architectures_that_fit_the_dataset(lenet_state):
    from advviz.widgets.train_panel import CURRENT, TrainPanel

    panel = TrainPanel(lenet_state, dataset="digits")
    assert list(panel.arch.options) == [CURRENT, "lenet5"]
    note = panel.arch_note.value
    assert "Not offered for digits (28x28 images)" in note and "resnet20" in note and "32x32" in note and "64x64" in note
    with pytest.raises(ValueError, match="does not take digits images"):
        TrainPanel(lenet_state, dataset="digits", arch="resnet20")
    panel.arch.value = "lenet5"
    if "cifar10" in panel.dataset.options:  # with CIFAR-10 on disk: the menu follows the dataset
        panel.dataset.value = "cifar10"
        assert "resnet20" in panel.arch.options and "lenet5" not in panel.arch.options
        assert panel.arch.value == CURRENT and "lenet5 take 28x28" in panel.arch_note.value


def test_upload_updates_the_class_menu_and_takes_a_true_label(lenet_state):
    from advviz.widgets import ImagePicker
    from advviz.widgets.picker import UPLOAD

    picker = ImagePicker(lenet_state, dataset="digits")
    picker.klass.value = 3
    _upload(picker, _png_bytes(), "mine.png")
    assert picker.klass.value == UPLOAD and picker.klass.label == "(your upload)"
    assert picker.true_label.layout.display is None and lenet_state.y is None
    picker.true_label.value = 7
    assert lenet_state.y == 7 and "true label</b>: 7" in picker.info.value
    assert lenet_state.source.startswith("upload: mine.png")
    picker.index.value = 1  # back to the dataset
    assert picker.klass.value == 3 and UPLOAD not in [v for _, v in picker.klass.options]
    assert picker.true_label.layout.display == "none" and lenet_state.y == 3


def test_non_square_upload_is_centre_cropped(lenet_state):
    from PIL import Image

    from advviz.widgets import ImagePicker

    arr = np.zeros((20, 60), dtype=np.uint8)
    arr[:, 20:40] = 255  # white only in the middle third
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    picker = ImagePicker(lenet_state, dataset="digits")
    _upload(picker, buf.getvalue(), "wide.png")
    assert lenet_state.x.shape == (1, 28, 28)
    assert float(lenet_state.x.mean()) > 0.97  # squashing would give about 1/3


# ---------------------------------------------------------------------------------------------
# 7, 9. layout: fixed-size images with their aspect, wrapping rows, vector charts, no broken images
# ---------------------------------------------------------------------------------------------

def test_no_broken_images_before_during_and_after_use(lenet_digits):
    from advviz.widgets import Explorer

    ex = Explorer("lenet5_digits", dataset="digits", background=False, quick=True)
    assert _broken_images(ex) == []          # CFR before its attack, Train before training, ...
    ex.attack_lab.run()
    assert _broken_images(ex) == []
    ex.picker.index.value = 3                # the attack lab after changing image
    assert _broken_images(ex) == []
    assert "press Run" in ex.attack_lab.adversarial.placeholder
    assert "advviz-placeholder" in ex.train_panel.plot.value


def test_layout_holds_images_keep_aspect_and_charts_are_vector(lenet_digits):
    from advviz.widgets import Explorer

    ex = Explorer("lenet5_digits", dataset="digits", background=False, quick=True)
    ex.attack_lab.run()
    ex.purifier_lab.apply()
    for w, _ in _walk(ex):
        if isinstance(w, W.Image):  # a fixed box and object-fit: contain -> never squashed
            assert w.layout.width and w.layout.width.endswith("px") and w.layout.object_fit == "contain", w
    rows = [w for w, _ in _walk(ex.attack_lab) if type(w) is W.HBox]
    assert rows and all(r.layout.flex_flow == "row wrap" for r in rows)
    for chart in (ex.attack_lab.bars, ex.purifier_lab.bars):
        assert isinstance(chart, W.HTML) and chart.value.startswith("<svg")
    assert 'width="' in ex.attack_lab.bars.value.split(">")[0]  # drawn at its own size


# ---------------------------------------------------------------------------------------------
# 8. colour scales with units; a signed δ view that is not saturated
# ---------------------------------------------------------------------------------------------

def test_colour_scales_and_the_signed_perturbation_view(digit_state):
    from advviz import explain
    from advviz.widgets import AttackLab, CFRView, FeatureMapView

    cfr = CFRView(digit_state)
    assert "advviz-colorbar" in cfr.cam_scale.value and "Grad-CAM relevance" in cfr.cam_scale.value
    assert "advviz-colorbar" in cfr.mask_scale.value
    fm = FeatureMapView(digit_state)
    lab = AttackLab(digit_state, attack="pgd", background=False)
    lab.run()
    x, xa = digit_state.batch(), digit_state.x_adv.unsqueeze(0)
    peak = float((xa - x).abs().max())
    assert f"×{0.5 / peak:.0f}" in lab.amplified_caption.value
    assert "advviz-colorbar" in lab.heatmap_scale.value and "/255" in lab.heatmap_scale.value
    from PIL import Image

    # the signed view tells up from down: both ends of the diverging scale appear, and unchanged pixels are white
    shown = np.asarray(Image.open(io.BytesIO(bytes(lab.heatmap.value))).convert("RGB")).reshape(-1, 3).astype(int)
    delta = explain.signed_perturbation(x, xa)[0].mean(0)
    assert (delta > 0).any() and (delta < 0).any()
    assert ((shown[:, 0] - shown[:, 2]) > 100).any() and ((shown[:, 2] - shown[:, 0]) > 100).any()
    assert len(np.unique(shown, axis=0)) > 3
    assert "advviz-colorbar" in fm.big_scale.value and "activation" in fm.big_scale.value


# ---------------------------------------------------------------------------------------------
# 10. feature maps: big numbered tiles, one enlarged on click
# ---------------------------------------------------------------------------------------------

def test_feature_map_tiles_are_numbered_and_enlarge_on_click(digit_state):
    from advviz.widgets import FeatureMapView
    from advviz.widgets.features import TILE

    fm = FeatureMapView(digit_state)
    assert TILE >= 72 and fm.clean_tiles[0].image.layout.width == f"{TILE}px"
    assert [t.button.description for t in fm.clean_tiles[:3]] == ["ch 0", "ch 1", "ch 2"]
    fm.clean_tiles[3].button.click()
    assert fm.channel == 3 and "channel 3" in fm.big_caption.value and bytes(fm.big_clean.value)[:4] == b"\x89PNG"
    assert fm.clean_tiles[3].button.button_style == "info" and fm.clean_tiles[0].button.button_style == ""


# ---------------------------------------------------------------------------------------------
# 11. per-dataset default budgets that show the effect
# ---------------------------------------------------------------------------------------------

def test_digits_defaults_fool_lenet(lenet_state, digits_test):
    from advviz.widgets import AttackLab, ExplorerState

    x, y = digits_test[0]  # the 6
    st = ExplorerState(lenet_state.model, model_name="lenet5_digits", dataset="digits")
    st.set_image(x, y)
    lab = AttackLab(st, attack="pgd", background=False)
    assert lab.controls.controls["eps"].value == pytest.approx(0.3 * 255)
    assert lab.controls.controls["alpha"].value == pytest.approx(2 * 0.3 / 8 * 255)
    lab.run()
    assert lab.last_result["success"] and lab.last_result["linf"] <= 0.3 + 1e-6
    lab.attack.value = "fgsm"
    assert lab.controls.controls["eps"].value == pytest.approx(0.3 * 255)
    lab.attack.value = "pgd_l2"
    assert lab.controls.values()["eps"] == pytest.approx(2.0)


def test_cifar_keeps_the_attacks_own_budgets(resnet20):
    from advviz.widgets import AttackLab, ExplorerState

    st = ExplorerState(resnet20, model_name="resnet20_cifar10")
    st.set_image(torch.rand(3, 32, 32), None)
    lab = AttackLab(st, attack="pgd", background=False)
    assert lab.controls.values()["eps"] == pytest.approx(8 / 255)


# ---------------------------------------------------------------------------------------------
# 12. purifier options explained, with the measured accuracy from the record
# ---------------------------------------------------------------------------------------------

def test_purifier_options_are_explained_with_measured_accuracy(resnet20):
    from advviz.widgets import ExplorerState, PurifierLab
    from advviz.widgets.purifier_lab import MEASURED

    st = ExplorerState(resnet20, model_name="resnet20_cifar10")
    st.set_image(torch.rand(3, 32, 32), None)
    pur = PurifierLab(st, purifier="cgan", live=False)
    text = pur.meanings.value
    for opt in ("fgsm:", "pgd:", "full:", "quick:"):
        assert opt in text
    assert "trained here on first use" in text
    assert "cgan_fgsm_cifar10" in pur.record.value and "clean" in pur.record.value
    c, f, p = MEASURED["cgan_fgsm_cifar10"]
    assert f"{f:.1%}" in pur.record.value
    pur.controls.controls["attack"].value = "pgd"
    assert "cgan_pgd_cifar10" in pur.record.value


# ---------------------------------------------------------------------------------------------
# 13. first-use training shows a message and a progress bar
# ---------------------------------------------------------------------------------------------

def test_first_use_training_shows_message_and_progress(monkeypatch, lenet_digits, tmp_path):
    from advviz import models
    from advviz.widgets import explorer

    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path))
    monkeypatch.setenv("ADVVIZ_WEIGHTS", str(tmp_path / "none"))
    assert explorer.needs_first_use_training("lenet5_digits")
    seen = {}
    notice = explorer.TrainingNotice()

    def slow_load(name, device=None):
        time.sleep(0.8)
        seen.update(message=notice.message.value, bar=notice.bar.value, shown=notice.layout.display)
        return lenet_digits

    monkeypatch.setattr(models, "load", slow_load)
    assert explorer.load_model("lenet5_digits", notice=notice) is lenet_digits
    assert "training lenet5_digits on first use" in seen["message"] and seen["shown"] is None
    assert 0 < seen["bar"] < 1
    assert "trained in" in notice.message.value and notice.bar.value == 1.0


# ---------------------------------------------------------------------------------------------
# 14. the explorer notebook shows the explorer once and leaves it on its first tab
# ---------------------------------------------------------------------------------------------

def test_notebook_displays_the_explorer_once_and_keeps_its_tab():
    from advviz.widgets._notebook import CELLS

    code = [src for kind, src in CELLS if kind == "code"]
    last = [ast.parse(src).body[-1] for src in code]
    shown = [i for i, stmt in enumerate(last) if isinstance(stmt, ast.Expr) and not isinstance(stmt.value, ast.Call)]
    assert shown == [0], "only the first cell may display a widget (a second display is a second copy)"
    assert all("selected_index" not in src for src in code)


@pytest.mark.slow
def test_measured_purifier_table(resnet20, cifar_test):
    """Two rows of the purifier tab's accuracy table, re-measured (256 JPEG CIFAR-10 test images, seed 0)."""
    from advviz import attacks, data, defenses
    from advviz.widgets.purifier_lab import MEASURED

    x, y = data.sample(cifar_test, 256, seed=0)
    x, y = x.to(next(resnet20.parameters()).device), y.to(next(resnet20.parameters()).device)
    xf = attacks.get("fgsm")(resnet20, x, y, eps=8 / 255)

    def acc(z):
        with torch.no_grad():
            return round(float((resnet20(z).argmax(1) == y).float().mean()), 3)

    assert (acc(x), acc(xf)) == MEASURED["none"][:2]
    cgan = defenses.get("cgan")
    assert (acc(cgan(x, attack="fgsm")), acc(cgan(xf, attack="fgsm"))) == MEASURED["cgan_fgsm_cifar10"][:2]
    dae = defenses.get("dae")
    assert (acc(dae(x)), acc(dae(xf))) == MEASURED["dae_resnet20_cifar10"][:2]


# ---------------------------------------------------------------------------------------------
# 15. the attack trajectory: advviz.attacks.record and the Attack lab's scrubber
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params", [("pgd", {"eps": 0.1, "alpha": 0.01, "steps": 8}),
                                         ("bim", {"eps": 0.1, "alpha": 0.02, "steps": 5}),
                                         ("mifgsm", {"eps": 0.1, "alpha": 0.02, "steps": 4}),
                                         ("pgd_l2", {"eps": 1.5, "alpha": 0.3, "steps": 6})])
def test_record_keeps_every_iteration(lenet_digits, digits_test, name, params):
    from advviz import attacks

    x, y = digits_test[0]
    traj = attacks.record(name, lenet_digits, x, y, **params)
    assert len(traj.frames) == params["steps"] and [f.step for f in traj.frames] == list(range(1, params["steps"] + 1))
    plain = attacks.get(name)(lenet_digits, x[None], torch.tensor([y]), **params)
    assert torch.equal(plain[0], traj.x_adv) and torch.equal(traj.frames[-1].x_adv, traj.x_adv)  # nothing changed
    with torch.no_grad():
        logits = lenet_digits(torch.stack([f.x_adv for f in traj.frames]))
    for f, lg in zip(traj.frames, logits):
        other = torch.cat([lg[:y], lg[y + 1:]]).max()
        assert f.prediction == int(lg.argmax()) and f.margin == pytest.approx(float(lg[y] - other), abs=1e-4)
        assert (f.margin < 0) == (f.prediction != y)
        d = (f.x_adv - x).flatten()
        assert f.linf == pytest.approx(float(d.abs().max()), abs=1e-6) and f.l2 == pytest.approx(float(d.norm()), abs=1e-5)
        if name != "pgd_l2":
            assert f.linf <= params["eps"] + 1e-6
    flips = [f.step for f in traj.frames if f.prediction != y]
    assert traj.flip_step == (flips[0] if flips else None)
    assert traj.clean_prediction == y and traj.clean_margin > 0


@pytest.mark.parametrize("name", ["apgd_ce", "apgd_dlr"])
def test_record_apgd_follows_its_run_to_the_flip(lenet_digits, digits_test, name):
    """APGD reports every iterate after its random start and stops where the image is fooled."""
    from advviz import attacks

    x, y = digits_test[0]
    traj = attacks.record(name, lenet_digits, x, y, eps=0.3, n_iter=20)
    plain = attacks.get(name)(lenet_digits, x[None], torch.tensor([y]), eps=0.3, n_iter=20)
    assert torch.equal(plain[0], traj.x_adv)  # recording changes nothing
    assert 1 <= len(traj.frames) <= 20 and all(f.linf <= 0.3 + 1e-6 for f in traj.frames)
    assert traj.frames[-1].prediction != y and traj.flip_step == len(traj.frames)
    assert torch.equal(traj.frames[-1].x_adv, traj.x_adv)


def test_record_cfr_and_refusals(lenet_digits, digits_test):
    from advviz import attacks

    x, y = digits_test[0]
    traj = attacks.record("cfr", lenet_digits, x, y, steps=5)
    assert 1 <= len(traj.frames) <= 5 and torch.equal(traj.frames[-1].x_adv, traj.x_adv)
    assert len(attacks.record("fgsm", lenet_digits, x, y, eps=0.3).frames) == 1
    with pytest.raises(ValueError, match="no iterations to record"):
        attacks.record("deepfool", lenet_digits, x, y)
    with pytest.raises(ValueError, match="one image"):
        attacks.record("pgd", lenet_digits, torch.stack([x, x]), y)


def test_recording_off_costs_one_lookup_per_attack(lenet_digits, digits_test, monkeypatch):
    from advviz import attacks
    from advviz.attacks import trajectory

    assert trajectory.current_recorder() is None
    calls = []

    class Counting:
        def get(self):
            calls.append(1)
            return None

    monkeypatch.setattr(trajectory, "_RECORDER", Counting())
    x, y = digits_test[0]
    attacks.get("pgd")(lenet_digits, x[None], torch.tensor([y]), steps=20)
    assert calls == [1], "the recorder must be looked up once per attack, not per iteration"


def test_attack_lab_scrubs_the_trajectory(digit_state):
    from advviz.widgets import AttackLab

    lab = AttackLab(digit_state, attack="pgd", background=False)
    lab.controls.set_values({"eps": 0.3, "alpha": 0.02, "steps": 8})
    lab.run()
    traj = lab.trajectory
    assert traj is not None and lab.step.max == 8 and lab.play.max == 8 and not lab.step.disabled
    flip = traj.flip_step
    assert flip is not None and lab.step.value == flip
    assert f"flips at step <b>{flip}</b>" in lab.step_strip.value and lab.step_strip.value.count("title=") == 8
    assert lab.traj_chart.value.startswith("<svg")
    lab.step.value = 1
    assert "<b>1</b> of 8" in lab.step_info.value and bytes(lab.step_img.value)[:4] == b"\x89PNG"
    assert bytes(lab.step_img.value) != bytes(lab.adversarial.value) or flip == 1
    lab.attack.value = "deepfool"
    lab.run()
    assert lab.trajectory is None and lab.step.disabled and "no iterations" in lab.step_info.value


# ---------------------------------------------------------------------------------------------
# 16. where the attack takes over
# ---------------------------------------------------------------------------------------------

def test_feature_divergence_exact_on_a_hand_set_model():
    from torch import nn

    from advviz import explain

    conv = nn.Conv2d(1, 1, 1, bias=False)
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        lin.weight.fill_(1.0)
    model = nn.Sequential(conv, nn.Flatten(), lin)
    x = torch.ones(1, 1, 2, 2)
    x_adv = torch.tensor([[[[1.5, 1.0], [1.0, 1.0]]]])
    d = explain.feature_divergence(model, x, x_adv)
    assert list(d) == ["0", "2"]
    # conv: clean 2 everywhere (norm 4), change 1 in one place -> 1/4; linear: 8 -> 9 -> 1/8
    assert float(d["0"][0]) == pytest.approx(0.25) and float(d["2"][0]) == pytest.approx(0.125)
    assert float(explain.feature_divergence(model, x, x)["2"][0]) == 0.0


def test_takeover_view_follows_the_adversarial_image(digit_state):
    from advviz.widgets import AttackLab, TakeoverView

    view = TakeoverView(digit_state)
    assert view.divergence == {} and _broken_images(view) == []
    lab = AttackLab(digit_state, attack="pgd", background=False)
    lab.run()
    assert list(view.divergence) == ["conv1", "conv2", "fc1", "fc2"]  # LeNet-5: fc2 gives the logits
    assert all(v > 0 for v in view.divergence.values())
    assert view.chart.value.startswith("<svg") and "fc2" in view.chart.value
    assert bytes(view.cam_true.value)[:4] == b"\x89PNG" and bytes(view.cam_adv.value)[:4] == b"\x89PNG"
    after = lab.last_result["after"]
    assert f"Grad-CAM, adversarial class: {digit_state.class_name(after)}" in view.adv_caption.value
    assert "true class: 1" not in view.true_caption.value or digit_state.y == 1
    digit_state.set_image(digit_state.x, digit_state.y)
    assert view.divergence == {} and _broken_images(view) == []


def test_takeover_view_on_resnet20(resnet20, cifar_test):
    from advviz.widgets import AttackLab, ExplorerState, TakeoverView

    st = ExplorerState(resnet20, model_name="resnet20_cifar10")
    x, y = cifar_test[0]
    st.set_image(x, y)
    view = TakeoverView(st)
    AttackLab(st, attack="pgd", background=False).run()
    vals = list(view.divergence.values())
    assert len(vals) == 20 and list(view.divergence)[-1] == "linear"
    assert vals[-1] > vals[0]  # the change grows on its way to the logits


def test_explorer_shows_its_first_use_training(monkeypatch, lenet_digits):
    from advviz import models
    from advviz.widgets import explorer

    monkeypatch.setattr(explorer, "needs_first_use_training", lambda name: name == "lenet5_digits")
    monkeypatch.setattr(models, "load", lambda name, device=None: time.sleep(0.5) or lenet_digits)
    ex = explorer.Explorer("lenet5_digits", dataset="digits", background=False, quick=True)
    assert ex.notice in ex.children and ex.notice.layout.display is None
    assert "lenet5_digits trained in" in ex.notice.message.value and ex.notice.bar.bar_style == "success"
