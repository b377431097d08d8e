"""The explorer on your own model and images (issue 26), and the other findings of the same browser walk.

* Every tab driven with three user models (a CIFAR-size network that is not in the zoo, a
  torchvision ResNet-18 with random weights at 224x224, a single-channel network) and a folder of
  images (``test_every_tab_works_on_a_user_model``).
* One test per bug of the issue; each fails on the code before it (checked against the old main).

Every test runs under ``no_hidden_errors`` (from ``tests/test_widgets.py``).
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from tests.conftest import requires_cifar
from tests.test_own_model import SmallCifarNet, write_images
from tests.test_widgets import digit_state, expect_widget_errors, lenet_state, no_hidden_errors, provoked  # noqa: F401
from tests.test_widgets_explorer import _broken_images

CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _options(dropdown) -> list[tuple[str, str]]:
    """A dropdown's options as ``(label, value)`` pairs (plain strings are both)."""
    return [o if isinstance(o, tuple) else (o, o) for o in dropdown.options]


def _gray_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 14 * 14, 10))


def _user_model(kind: str) -> tuple[nn.Module, dict]:
    """``(module, Explorer keyword arguments)`` of the three user models of the issue."""
    torch.manual_seed(0)
    if kind == "cifar_net":
        return SmallCifarNet(), {"classes": list(CIFAR), "input_size": (3, 32, 32), "mean": (0.49, 0.48, 0.45),
                                 "std": (0.25, 0.24, 0.26), "name": "my cifar net"}
    if kind == "resnet18_224":
        torchvision = pytest.importorskip("torchvision")
        return torchvision.models.resnet18(weights=None), {"input_size": (3, 224, 224), "mean": (0.485, 0.456, 0.406),
                                                           "std": (0.229, 0.224, 0.225), "name": "resnet18 (random)"}
    return _gray_net(), {"input_size": (1, 28, 28), "name": "my digits net"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cifar_net", "resnet18_224", "gray_net"])
def test_every_tab_works_on_a_user_model(kind, tmp_path):
    from advviz.widgets import Explorer

    module, kw = _user_model(kind)
    gray = kind == "gray_net"
    # a folder of images of any size, one sub-folder per class, named like the model's classes
    folder = write_images(tmp_path / "photos", {"3": 2, "7": 2} if gray else
                          ({"cat": 2, "ship": 2} if kind == "cifar_net" else {"12": 2, "400": 2}), gray=gray)
    if kind == "resnet18_224":
        kw["classes"] = [str(i) for i in range(1000)]
    ex = Explorer(module, dataset=str(folder), background=False, quick=True, **kw)
    st = ex.state
    c, h, w = kw["input_size"]
    assert st.model_name == kw["name"] and st.input_size == (c, h, w) and st.x.shape == (c, h, w)
    assert st.info.normalization == ("inside" if "mean" in kw else "none declared")
    assert st.info.provenance == "defined in this notebook" and kw["name"] in ex.model_info.value
    assert ex.picker.user_images and ex.picker.split.disabled and st.source.startswith("folder: photos #0")
    assert st.y == int(st.classes.index({"cifar_net": "cat", "gray_net": "3"}.get(kind, "12")))
    assert ex.model_choice.value == kw["name"] and (f"{kw['name']} (yours)", kw["name"]) in ex.model_choice.options
    # CFR / Grad-CAM: the model's own convolution layers, by name (the wrapper's prefix net.)
    layers = list(ex.cfr.layer.options)
    assert layers[0] == st.model.last_conv and all(n.startswith("net.") for n in layers)
    assert ex.cfr.cam.shape == (1, 1, h, w)
    ex.cfr.tau.value = 0.5
    assert 0 <= ex.cfr.mask_fraction <= 1
    ex.cfr.run_attack()
    assert st.attack == "cfr" and st.x_adv.shape == (c, h, w)
    # Attack lab and the trajectory
    lab = ex.attack_lab
    lab.attack.value = "pgd"
    lab.run()
    assert lab.status.value.startswith("done") and "result of pgd" in lab.result_title.value
    assert lab.trajectory is not None and len(lab.trajectory.frames) >= 1 and st.attack == "pgd"
    lab.step.value = 1
    assert "step 1 shown" in lab.traj_chart.value
    # Takeover: divergence over the model's layers, the last one its logits
    assert ex.takeover.divergence and list(ex.takeover.divergence)[-1].startswith("net.")
    # Features: the current model's maps, clean beside adversarial
    ex.features.render()
    assert ex.features.layer.value and ex.features.adv_tiles[0].image.value[:4] == b"\x89PNG"
    # Purifiers: those that fit, the others marked with Apply disabled
    pur = ex.purifier_lab
    assert pur.last_result is not None and pur.last_result["input"] == "adversarial"
    if gray:
        assert set(pur.unfit) == {"cgan", "dae", "pix2pix", "uddn"} and "Only jpeg fits" in pur.fit_note.value
        pur.purifier.value = "uddn"
        assert pur.apply_button.disabled
    # Robustness on the folder (labelled by its class folders)
    rob = ex.robustness
    rob.n.value, rob.steps.value, rob.eps.value = 4, 1, "0.1" if gray else "1/255"
    rob.run()
    assert rob.result["complete"] and rob.result["n_done"] == 4 and rob.result["dataset_name"] == "folder: photos"
    # Train: a single-channel 28x28 model fine-tunes on the digits; the others are told why not
    if gray:
        ex.train_panel.dataset.value = "digits"
        ex.train_panel.epochs.value, ex.train_panel.train_images.value = 1, 64
        ex.train_panel.start()
        assert ex.train_panel.wait(120) and ex.train_panel.result.epochs_completed == 1
        ex.train_panel.use_model()
        assert st.model_name.startswith("my digits net + fine-tuned on digits") and st.dataset == "digits"
        assert "trained in the Train tab" in st.info.provenance and ex.picker.dataset.value == "digits"
        ex.model_choice.value = kw["name"]  # back to the user's own model, kept in the menu
        assert st.model_name == kw["name"] and st.dataset is None
    assert _broken_images(ex) == []


def test_picker_takes_a_dataset_a_folder_and_a_list_of_files(lenet_state, tmp_path, digits_test):
    from advviz.widgets import ImagePicker

    folder = write_images(tmp_path / "mine", {"": 3}, gray=True)
    picker = ImagePicker(lenet_state, dataset=str(folder))
    assert picker.dataset.value.startswith("folder:") and lenet_state.y is None  # a flat folder: no labels
    assert "folder: mine #0 img0.png" in lenet_state.source
    picker.add_images(sorted(folder.glob("*.png"))[:2])
    assert len(picker.data) == 2 and "your 2 files" in dict((v, k) for k, v in picker.dataset.options)[
        picker.dataset.value]
    picker.add_images(digits_test)
    assert picker.data is digits_test and lenet_state.y == digits_test[0][1]
    assert picker.model_data() is digits_test  # nothing to convert: the Robustness tab takes it as it is
    picker.dataset.value = "digits"
    assert not picker.split.disabled and lenet_state.source.startswith("digits/test #0")


# ---------------------------------------------------------------------------------------------
# the bugs of the issue: each test fails on the code before it
# ---------------------------------------------------------------------------------------------

@requires_cifar
def test_picker_follows_the_dataset_of_a_model_trained_in_the_train_tab(lenet_state):
    """Bug: ``picker._on_model`` looked up ``model_dataset(state.model_name)``, None for a trained model."""
    from advviz.widgets import ImagePicker, TrainPanel

    picker = ImagePicker(lenet_state, dataset="cifar10")
    panel = TrainPanel(lenet_state, arch="lenet5", dataset="digits", epochs=1, train_images=64)
    panel.start()
    assert panel.wait(120)
    if hasattr(panel, "use_model"):  # (before "Use this model", the end of training swapped the model in)
        panel.use_model()
    assert picker.dataset.value == "digits" and lenet_state.dataset == "digits"
    assert lenet_state.source.startswith("digits/test")


@requires_cifar
def test_a_cifar_image_has_no_true_label_for_the_digits_model(lenet_state):
    """Bug: a CIFAR image converted to 1x28x28 kept its CIFAR label; FGSM then said "fooled: yes"."""
    from advviz.widgets import AttackLab, ImagePicker

    ImagePicker(lenet_state, dataset="cifar10")
    assert lenet_state.x.shape == (1, 28, 28) and lenet_state.y is None
    assert "is not one of the model's" in lenet_state.source
    lab = AttackLab(lenet_state, attack="fgsm", background=False)
    lab.run()
    assert "fooled</td><td>yes" not in lab.norms.value and "true label unknown" in lab.norms.value


def test_already_misclassified_is_not_fooled(lenet_state, digits_test):
    from advviz.widgets import AttackLab

    wrong = next(i for i in range(len(digits_test)) if lenet_state.predict(digits_test[i][0]).label != digits_test[i][1])
    x, y = digits_test[wrong]
    lenet_state.set_image(x, y)
    lab = AttackLab(lenet_state, attack="fgsm", background=False)
    lab.run()
    assert "already misclassified" in lab.norms.value and "fooled</td><td>yes" not in lab.norms.value
    assert lab.last_result["already_misclassified"]


def test_offline_menu_marks_missing_weights_and_says_what_to_set(monkeypatch, tmp_path, lenet_digits):
    from advviz.widgets import Explorer

    monkeypatch.setenv("ADVVIZ_WEIGHTS", str(tmp_path / "no weights here"))
    ex = Explorer("lenet5_digits", dataset="digits", background=False, quick=True)
    labels = dict((v, k) for k, v in _options(ex.model_choice))
    assert labels.get("resnet20_cifar10") == "resnet20_cifar10 — weights missing"
    ex.model_choice.value = "resnet20_cifar10"
    assert ex.state.model_name == "lenet5_digits" and ex.model_choice.value == "lenet5_digits"
    assert "ADVVIZ_WEIGHTS" in ex.errors.value and "resnet20-12fca82f.th" in ex.errors.value


def test_a_failed_model_load_leaves_the_menu_on_the_model_in_use(monkeypatch, lenet_digits, expect_widget_errors):
    """Bug: after a failed choice the menu named the model that failed while the title named the old one."""
    from advviz import models
    from advviz.widgets import Explorer, explorer

    # a fresh machine has no weights: every other zoo entry is "weights missing" and refused before any load,
    # so the menu is told that one of them downloads on first use, and the download is made to fail
    real_menu = explorer.model_menu
    other = next(name for name, _, _ in real_menu() if name != "lenet5_digits")
    monkeypatch.setattr(explorer, "model_menu", lambda: [(name, "download" if name == other else where, todo)
                                                         for name, where, todo in real_menu()])
    ex = Explorer("lenet5_digits", dataset="digits", background=False, quick=True)
    assert (f"{other} (downloads on first use)", other) in _options(ex.model_choice)

    def fail(name, **kw):
        raise models.CheckpointError(f"could not download {name}")

    monkeypatch.setattr(explorer, "load_model", fail)
    ex.model_choice.value = other
    assert [type(e.exc).__name__ for e in provoked(expect_widget_errors)] == ["CheckpointError"]
    assert ex.state.model_name == "lenet5_digits" and ex.model_choice.value == "lenet5_digits"
    assert "lenet5_digits" in ex.title.value


def test_first_use_notice_shows_a_measured_estimate_and_goes_away(monkeypatch, lenet_digits):
    """Bugs: the notice said "about 10 s" (a constant; a real run took 48.7 s) and stayed all session."""
    from advviz import models
    from advviz.widgets import explorer

    calls = []
    monkeypatch.setattr(explorer, "needs_first_use_training", lambda name: name == "lenet5_digits")
    monkeypatch.setattr(explorer, "first_use_estimate", lambda name: calls.append(name) or (123.0, "timed"))
    monkeypatch.setattr(models, "load", lambda name, device=None: lenet_digits)
    ex = explorer.Explorer("lenet5_digits", dataset="digits", background=False, quick=True)
    assert calls == ["lenet5_digits"] and "(estimated 123 s)" in ex.notice.message.value
    assert ex.notice.layout.display is None
    ex.picker.index.value = 2
    assert ex.notice.layout.display == "none"


def test_first_use_estimate_times_the_recipes_training_steps():
    from advviz.widgets.explorer import first_use_estimate

    seconds, how = first_use_estimate("lenet5_digits")
    steps = 10 * -(-1438 // 64)  # LENET5_DIGITS: 10 epochs over the 1,438 digits train images, batches of 64
    assert 0 < seconds < 3600 and f"x {steps} steps" in how
    assert first_use_estimate("resnet20_cifar10") is None  # downloaded, not trained


def test_charts_colour_bars_and_error_boxes_fit_a_570_pixel_panel(digit_state, expect_widget_errors):
    """Bug: at 1024x768 with the file browser open, charts (614-653 px), the Features colour bar (640 px)
    and the error box (636 px) were wider than the 570-pixel tab panel."""
    from advviz.widgets import AttackLab, FeatureMapView, TakeoverView, _render
    from advviz.widgets._errors import ErrorArea

    lab = AttackLab(digit_state, attack="pgd", background=False, quick=True)
    take = TakeoverView(digit_state)
    lab.run()
    for svg in (lab.bars.value, lab.traj_chart.value, take.chart.value, _render.history_svg([])):
        assert re.search(r'<svg style="max-width:100%;height:auto"', svg)
    feats = FeatureMapView(digit_state)
    assert "max-width:100%" in feats.tile_scale.value
    assert re.findall(r"<span>([^<]*)</span>", feats.tile_scale.value)[:3] == ["0", "0.5", "1"]
    area = ErrorArea()
    area.show(ValueError("/a/very/long/" + "path/" * 60))
    assert "max-width:100%" in area.value and "overflow-wrap:anywhere" in area.value
    assert area.layout.max_width == "100%"


def test_the_result_panel_names_its_attack_and_says_when_another_tab_made_the_current_one(digit_state):
    from advviz.widgets import AttackLab, CFRView, TakeoverView

    lab = AttackLab(digit_state, attack="fgsm", background=False)
    cfr = CFRView(digit_state)
    take = TakeoverView(digit_state)
    lab.run()
    assert "result of fgsm" in lab.result_title.value and "<b>fgsm</b>" in lab.norms.value
    cfr.run_attack()
    assert digit_state.attack == "cfr" and "takes over" in take.chart.value and "cfr" in take.chart.value
    assert "result of fgsm" in lab.result_title.value and "now <b>cfr</b>" in lab.result_title.value


def test_run_clears_the_previous_result_at_once(lenet_digits, digits_test):
    """Bug: for a moment after Run, the status and the result still showed the previous run."""
    from advviz.widgets import AttackLab, ExplorerState
    from tests.test_widgets_jobs import CLASSES, _Gated

    gated = _Gated(lenet_digits)
    st = ExplorerState(gated, model_name="gated", classes=CLASSES, dataset="digits")
    st.set_image(*digits_test[0])
    lab = AttackLab(st, attack="fgsm", background=True)
    gated.gate.set()
    lab.run(wait=True)
    assert lab.norms.value and lab.status.value.startswith("done")
    gated.gate.clear()
    gated.started.clear()
    lab.run()
    try:
        assert gated.started.wait(60)
        assert lab.status.value.startswith("running fgsm") and lab.norms.value == "" and lab.bars.value == ""
        assert lab.adversarial.value == b"" and lab.result_title.value == "" and lab.last_result is None
    finally:
        gated.gate.set()
        assert lab.wait(60)
    assert lab.status.value.startswith("done")


def test_takeover_captions_do_not_outlive_their_image(digit_state, digits_test):
    from advviz.widgets import AttackLab, TakeoverView

    take = TakeoverView(digit_state)
    AttackLab(digit_state, attack="fgsm", background=False).run()
    assert "Grad-CAM, true class" in take.true_caption.value
    digit_state.set_image(*digits_test[5])
    assert take.true_caption.value == "<b>true class</b>" and take.adv_caption.value == "<b>adversarial class</b>"


def test_purifier_not_for_this_model_disables_apply_and_keeps_the_picked_image(digit_state, expect_widget_errors):
    from advviz.widgets import PurifierLab
    from advviz.widgets.purifier_lab import MEASURED

    pur = PurifierLab(digit_state, live=False)
    assert pur.input_img.value[:4] == b"\x89PNG"  # the picked image, never "pick an image"
    assert "Only jpeg fits" in pur.fit_note.value and "ADVVIZ_WEIGHTS" in pur.fit_note.value
    pur.purifier.value = "uddn"
    assert pur.apply_button.disabled and pur.input_img.value[:4] == b"\x89PNG"
    assert "does not take this model" in pur.output_img.placeholder
    pur.purifier.value = "jpeg"
    assert not pur.apply_button.disabled
    table = pur.table.value  # one table: purifier x clean / FGSM / PGD, its threat model and its data
    assert "oblivious" in table and "256 JPEG CIFAR-10 test images" in table and "not for lenet5_digits" in table
    for name, (c, f, p) in MEASURED.items():
        assert f"{c:.3f}" in table and f"{f:.3f}" in table and f"{p:.3f}" in table


def test_the_tours_task_3_answer_quotes_the_measured_purifier_table():
    """Bug: the answer gave the old DAE's .203/.195 while the tab measures .781 clean and .348 FGSM."""
    from advviz.widgets._notebook import CELLS
    from advviz.widgets.purifier_lab import MEASURED

    tour = next(src for kind, src in CELLS if "### Task 3" in src)
    answer = tour.split("### Task 3")[1].split("### Task 4")[0]
    assert "0.203" not in answer and "0.195" not in answer
    for key in ("none", "uddn_resnet20_cifar10", "dae_resnet20_cifar10", "cgan_fgsm_cifar10"):
        c, f, _ = MEASURED[key]
        assert f"{f:.3f}" in answer, key
    assert f"{MEASURED['dae_resnet20_cifar10'][0]:.3f}" in answer
    assert "offline" in answer.lower() and "jpeg" in answer.lower()


def test_amplified_perturbation_has_a_scale(digit_state):
    from advviz.widgets import AttackLab

    lab = AttackLab(digit_state, attack="fgsm", background=False)
    lab.controls.set_values({"eps": 0.1})
    lab.run()
    assert "advviz-colorbar" in lab.amplified_scale.value and "+25.5" in lab.amplified_scale.value
    assert "grey: none" in lab.amplified_scale.value


def test_soft_mask_on_a_fixed_0_to_1_scale(digit_state):
    from advviz.widgets import CFRView

    cfr = CFRView(digit_state, tau=0.5)
    scaled, scaled_bar = cfr.mask.value, cfr.mask_scale.value
    cfr.mask_fixed.value = True
    assert cfr.mask.value != scaled and "fixed 0–1 scale" in cfr.mask_caption.value
    assert re.findall(r"<span>([^<]*)</span>", cfr.mask_scale.value)[-1] == "1"
    assert scaled_bar != cfr.mask_scale.value or re.findall(r"<span>([^<]*)</span>", scaled_bar)[-1] == "1"


def test_the_trajectory_chart_marks_the_step_shown(digit_state):
    from advviz.widgets import AttackLab

    lab = AttackLab(digit_state, attack="pgd", background=False, quick=True)
    lab.run()
    n = len(lab.trajectory.frames)
    lab.step.value = n
    last = lab.traj_chart.value
    lab.step.value = 1
    assert lab.traj_chart.value != last and "step 1 shown" in lab.traj_chart.value


def test_state_holds_the_model_as_a_unit(lenet_digits):
    from advviz.widgets import ExplorerState

    st = ExplorerState(lenet_digits, model_name="lenet5_digits")  # a zoo entry: the store describes it
    info = st.info
    assert info.dataset == "digits" and info.input_size == (1, 28, 28) and info.normalization == "inside"
    assert info.classes == tuple(str(i) for i in range(10)) and info.value_range == (0.0, 1.0)
    assert "advviz zoo entry lenet5_digits" in info.provenance
    st.set_model(_gray_net(), name="mine", classes=list("abcdefghij"), provenance="my lab, week 3")
    assert st.dataset is None and st.info.provenance == "my lab, week 3" and st.classes[0] == "a"


def test_explorer_takes_a_module_or_a_name(lenet_digits):
    from advviz.widgets import Explorer

    ex = Explorer(lenet_digits, background=False, quick=True, name="same lenet, as a module")
    assert ex.state.model is lenet_digits  # it declares its input size: used as it is
    assert ex.state.input_size == (1, 28, 28) and ex.picker.dataset.value == "digits"
    with pytest.raises(KeyError, match="no pretrained model named 'lenet99'"):
        Explorer("lenet99")
    with pytest.raises(ValueError, match="needs input_size"):
        Explorer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
