"""The explorer notebook, defined in code so that an installed advviz can recreate it.

``notebooks/00_explorer.ipynb`` in the repository is exactly :func:`build_notebook` written by
:func:`write_notebook` (a test checks that they agree); ``advviz explore`` opens the repository
copy when advviz runs from a checkout, and otherwise writes this one to the user's cache.
Regenerate the repository copy with ``python -m advviz.widgets._notebook notebooks/00_explorer.ipynb``.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["CELLS", "REMOVED_ON_SITE", "build_notebook", "write_notebook"]

# (kind, source) pairs
CELLS: list[tuple[str, str]] = [
    ("markdown", """\
# advviz explorer

Pick an image (or upload your own), look at its Grad-CAM contributing-feature region (CFR) and
move the **τ** slider to see the soft mask change, run any registered attack, purify the result,
look at feature maps, and retrain the model — all around one shared image and model.

* Offline with no data, the explorer uses scikit-learn's **digits** with **LeNet-5** (trained on
  first use: the notice gives the time it will take on your machine, timed just before it starts;
  8.9 s on a quiet 2-core CPU, 48.7 s on a busy one). With CIFAR-10 and the ResNet-20 weights
  available (`ADVVIZ_DATA`, `ADVVIZ_WEIGHTS`, or a network), it uses **CIFAR-10** with **ResNet-20**.
* Your own model and images: `Explorer(my_module, classes=..., input_size=..., mean=..., std=...,
  dataset="my_photos/")`; notebook 06 walks through it.
* `ADVVIZ_FAST=1` starts the attack controls from each attack's quick settings (used in CI).
* Errors in any control appear in a red box inside the widget."""),
    ("code", """\
from advviz.widgets import Explorer, fast_mode

explorer = Explorer()  # CIFAR-10 + ResNet-20 when available, else digits + LeNet-5
explorer"""),
    ("markdown", """\
## A guided tour: four tasks

Work in the explorer above; each task says what to do, what to look for, and has an answer to
compare with (click it open). The answers were measured on CIFAR-10 (its JPEG copy) with the
published ResNet-20 and the attacks' default settings, `ADVVIZ_FAST` unset (the first line of the
explorer says which setting you have; on the offline digits with LeNet-5 the numbers differ but the
pattern is the same).

### Task 1: where does the network look? (image picker, CFR tab)

1. In the picker, choose a class (e.g. *cat*) and press **random** a few times.
2. In the **CFR** tab, drag **τ** slowly from 0 to 0.9.

*Look for:* the red part of the Grad-CAM overlay (the contributing feature region, CFR), and the
line under the mask, "τ = …: N% of the pixels are in the CFR". Is the region on the object or on
the background? At which τ does the mask keep about a quarter of the image?

<details><summary>Answer</summary>

Measured on the first four CIFAR-10 test images with ResNet-20: at τ = 0 the mask
keeps <!--fig:task1.tau0.0.mean-->95% of the pixels (<!--fig:task1.tau0.0.min-->89%
to <!--fig:task1.tau0.0.max-->100%), at τ = 0.2 (the CFR attack's default) <!--fig:task1.tau0.2.mean-->40%
(<!--fig:task1.tau0.2.min-->36% to <!--fig:task1.tau0.2.max-->43%), at τ =
0.5 <!--fig:task1.tau0.5.mean-->15% (<!--fig:task1.tau0.5.min-->12% to <!--fig:task1.tau0.5.max-->18%),
at τ = 0.8 <!--fig:task1.tau0.8.mean-->4% (<!--fig:task1.tau0.8.min-->2%
to <!--fig:task1.tau0.8.max-->8%). A quarter of the image is kept near τ = 0.35
(<!--fig:task1.tau0.35.mean-->23% there). The region is a smooth blob rather
than an outline of the object: ResNet-20's last convolution sees an 8×8 grid, which Grad-CAM
upsamples to 32×32. Whether it sits on the object or on the background varies from image to image:
Grad-CAM shows what the network uses for its decision, which need not be the object.
</details>

### Task 2: attack the image and look at the perturbation (Attack lab)

1. Open the **Attack lab**, choose `fgsm` and press **Run**.
2. Do the same with `pgd` (ten FGSM-like steps) and with `deepfool` (the smallest step across the
   nearest decision boundary).

*Look for:* the prediction line (before → after, with confidence), the amplified perturbation and
its heatmap, and the ℓ0 / ℓ2 / ℓ∞ / SSIM rows. Which attack changes every pixel? Which one makes
the smallest change that still fools the network, and what does it cost in time?

<details><summary>Answer</summary>

On the same four images (ε = 8/255, the attacks' defaults), all three attacks fooled ResNet-20 on
all four<!--claim:task2.all_fooled-->. FGSM changes nearly every element
(ℓ0 <!--fig:task2.fgsm.l0-->3,048 of 3,072 on average: only pixels already at 0 or 1 stay) by exactly
ε = 8/255: ℓ∞ <!--fig:task2.fgsm.linf-->0.031, ℓ2 <!--fig:task2.fgsm.l2-->1.72,
SSIM <!--fig:task2.fgsm.ssim-->0.906; the amplified perturbation is a speckle over the whole image.
PGD-10 stays inside the same ε-box but needs less: ℓ2 <!--fig:task2.pgd.l2-->1.25,
SSIM <!--fig:task2.pgd.ssim-->0.947. DeepFool is not bounded by ε: it steps to the nearest decision
boundary and just across it, with ℓ2 <!--fig:task2.deepfool.l2-->0.023
(<!--fig:task2.fgsm_over_deepfool_l2-->76 times smaller than FGSM's) and
ℓ∞ <!--fig:task2.deepfool.linf-->0.0031 (<!--fig:task2.deepfool.linf-->0.8/255),
SSIM <!--fig:task2.deepfool.ssim-->1.000: invisible even amplified, and it costs several forward and
backward passes per step where FGSM needs one (compare the time rows).
</details>

### Task 3: can a purifier undo the attack? (Purifiers tab)

1. After an `fgsm` run, open **Purifiers**, set **input** to *adversarial*, choose `uddn` and press
   **Apply**.
2. Try `jpeg`, `cgan` and `dae` on the same image, then switch **input** to *clean*.

*Look for:* whether the prediction goes back to the true class, and the table in the tab that
gives each purifier's measured accuracy on clean and on attacked images. Which purifier would you
put in front of a classifier, and which one harms clean images?

<details><summary>Answer</summary>

The tab's table (ResNet-20 on 256 CIFAR-10 test images, seed 0; FGSM 8/255 and PGD-10 made on
ResNet-20 alone, the *oblivious* threat model) answers it: without a purifier accuracy falls
from <!--fig:task3.none.clean-->0.816 to <!--fig:task3.none.fgsm-->0.059 under FGSM
(<!--fig:task3.none.pgd-->0.000 under PGD-10).
**UDDN** brings it back to <!--fig:task3.uddn_resnet20_cifar10.fgsm-->0.664
(<!--fig:task3.uddn_resnet20_cifar10.pgd-->0.668 under PGD-10), the best of the
table<!--claim:task3.uddn_best-->, and keeps clean images
at <!--fig:task3.uddn_resnet20_cifar10.clean-->0.824: the one to deploy. The cGAN (trained on FGSM)
gets <!--fig:task3.cgan_fgsm_cifar10.fgsm-->0.336,
pix2pix <!--fig:task3.pix2pix_fgsm_cifar10.fgsm-->0.246 and the
**DAE** <!--fig:task3.dae_resnet20_cifar10.fgsm-->0.348 under FGSM
(<!--fig:task3.dae_resnet20_cifar10.pgd-->0.535 under PGD-10). Every purifier but UDDN costs a few
points on *clean* images<!--claim:task3.only_uddn_keeps_clean-->: the
cGAN <!--fig:task3.cgan_fgsm_cifar10.clean-->0.766, the DAE <!--fig:task3.dae_resnet20_cifar10.clean-->0.781,
pix2pix <!--fig:task3.pix2pix_fgsm_cifar10.clean-->0.789
against <!--fig:task3.none.clean-->0.816 without one: they blur away detail the classifier uses together
with the noise (notebook 05 discusses the DAE). These attacks did not know about the purifier: the
Robustness tab's *adaptive* threat model attacks the purifier and the model together, so compare the
two curves there. One image is not a rate: a purifier
with <!--fig:task3.uddn_resnet20_cifar10.fgsm-->0.664 accuracy still fails on one image in three, so
try several images before you judge. JPEG has no row in the table: compare it with UDDN on your
images. Offline (digits with LeNet-5) only `jpeg` fits the model, since the learned purifiers were
trained on CIFAR-10 colour images (the tab says so): compare JPEG qualities on the digits, or get
CIFAR-10 and ResNet-20 for this task (README, "Data and weights").
</details>

### Task 4: train a model of your own (Train tab)

1. Open **Train**, choose dataset *digits* and model *lenet5*, keep the defaults (2 epochs on 1,000
   images) and press **Start**; then train again with 10 epochs.
2. When training ends press **Use this model**: the header's model is then the one you trained
   (the tab never swaps it in by itself). Run `fgsm` on it in the **Attack lab**.

*Look for:* the loss curve falling and the accuracy rising epoch by epoch; how much the extra
epochs buy; whether your model is any harder to fool than the one it replaced.

<details><summary>Answer</summary>

Measured with LeNet-5 on the digits (held-out accuracy after each epoch, the tab's defaults, the
network's starting weights drawn with `torch.manual_seed(0)`: yours start elsewhere, so your numbers
differ by a few points): 2 epochs gave <!--fig:task4.e2.acc1-->0.836 then <!--fig:task4.e2.acc2-->0.925;
10 epochs climbed <!--fig:task4.e10.acc1-->0.836, <!--fig:task4.e10.acc2-->0.925 and
then <!--fig:task4.e10.acc3-->0.922 in epochs 1–3, <!--fig:task4.e10.acc4-->0.975, <!--fig:task4.e10.acc5-->0.972
and <!--fig:task4.e10.acc6-->0.983 in epochs 4–6, <!--fig:task4.e10.acc7-->0.967, <!--fig:task4.e10.acc8-->0.978,
then <!--fig:task4.e10.acc9-->0.986 and <!--fig:task4.e10.acc10-->0.975 in epochs 7–10, so the extra epochs buy
about <!--fig:task4.gain_points-->5 points, most of them by epoch 4<!--claim:task4.most_by_4-->, and the last
one already dips<!--claim:task4.last_dips--> (more epochs are not always better). A better-trained
model is not a more robust one: FGSM at the explorer's digits budget (ε = 0.3) fooled the 10-epoch
model on <!--fig:task4.fooled.e10-->40 of the first 40 digits test images, as it fooled the 2-epoch
model it replaced (<!--fig:task4.fooled.e2-->40 of 40). Robustness has to be
trained for (adversarial training: `advviz.train.adversarial_fit`).
</details>"""),
    ("markdown", """\
## Driving the explorer from code

Every tab is also a component of its own (`advviz.widgets.ImagePicker`, `CFRView`,
`FeatureMapView`, `AttackLab`, `PurifierLab`, `TrainPanel`) that takes an `ExplorerState`;
here the explorer's are driven from code. Setting a control's `.value` or calling a button's
`.click()` does exactly what the mouse does; the results appear in the explorer above (a
component is displayed once only: showing it again would make a second, linked copy)."""),
    ("code", """\
st = explorer.state
explorer.cfr.tau.value = 0.5          # the mask in the explorer above follows
print(f"tau = 0.5 keeps {explorer.cfr.mask_fraction:.0%} of the pixels in the CFR")
explorer.attack_lab.attack.value = "fgsm" if "fgsm" in explorer.attack_lab.attack.options else explorer.attack_lab.attack.value
explorer.attack_lab.run(wait=True)    # the same as pressing Run: see the "Attack lab" tab above
r = explorer.attack_lab.last_result
if r:
    print(f"{r['attack']}: {st.class_name(r['before'])} -> {st.class_name(r['after'])}, "
          f"l2 {r['l2']:.3f}, linf {r['linf'] * 255:.1f}/255, {r['seconds']:.2f} s")"""),
    ("markdown", """\
## For maintainers: a seeded check

Hidden on the documentation site. The same steps on a fixed configuration (digits test image 0,
LeNet-5), printed with rounding that does not depend on the machine; the tests compare this
output with the stored one."""),
    ("code", """\
# NBVAL_CHECK_OUTPUT
import torch

from advviz.widgets import Explorer

torch.manual_seed(0)
ex = Explorer("lenet5_digits", dataset="digits", index=0, background=False, quick=True)
st = ex.state
pred = st.predict()
print("image", tuple(st.x.shape), "label", st.y, "classified correctly:", pred.label == st.y)
fractions = []
for tau in (0.0, 0.3, 0.6):
    ex.cfr.tau.value = tau
    fractions.append(ex.cfr.mask_fraction)  # share of pixels in the CFR
print("CFR shrinks as tau grows:", fractions[0] >= fractions[1] >= fractions[2])
ex.attack_lab.attack.value = "fgsm"
ex.attack_lab.controls.set_values({"eps": 0.1})
ex.attack_lab.run_button.click()
r = ex.attack_lab.last_result
print("attack", r["attack"], "linf", round(r["linf"], 3), "within budget:", r["linf"] <= 0.1 + 1e-6)
ex.purifier_lab.source.value = "adversarial"
out = ex.purifier_lab.apply()
print("purified", tuple(out.shape), "in [0, 1]:", bool(out.min() >= 0 and out.max() <= 1))"""),
    ("code", """\
# For maintainers (hidden on the documentation site): every number the tasks' answers quote is
# marked in the markdown (<!--fig:KEY-->) and compared here (advviz.papers.quoted) with the tab's
# table and, when ADVVIZ_CHECK_EXERCISES=1 (the tests set it), with the tasks re-done from code on
# a second explorer; a stale number fails the notebook's test.
import torch

from advviz import attacks, data
from advviz.papers.quoted import check_notebook, exercises_enabled
from advviz.widgets.purifier_lab import MEASURED

APPLIES = explorer.state.dataset == "cifar10" and not fast_mode()
EXERCISES = APPLIES and exercises_enabled()
FIGURES = {f"task3.{name}.{col}": v for name, row in MEASURED.items() for col, v in zip(("clean", "fgsm", "pgd"), row)}
FIGURES["task3.uddn_best"] = max(MEASURED, key=lambda k: MEASURED[k][1]) == "uddn_resnet20_cifar10"
FIGURES["task3.only_uddn_keeps_clean"] = [k for k, row in MEASURED.items() if row[0] >= MEASURED["none"][0]] == [
    "none", "uddn_resnet20_cifar10"]
if EXERCISES:
    ex = Explorer("resnet20_cifar10", dataset="cifar10", background=False, quick=False)
    taus = (0.0, 0.2, 0.35, 0.5, 0.8)
    frac = {tau: [] for tau in taus}
    for i in range(4):  # Task 1: the first four test images
        ex.picker.select_index(i)
        for tau in taus:
            ex.cfr.tau.value = tau
            frac[tau].append(ex.cfr.mask_fraction)
    for tau, f in frac.items():
        FIGURES.update({f"task1.tau{tau}.mean": sum(f) / 4, f"task1.tau{tau}.min": min(f),
                        f"task1.tau{tau}.max": max(f)})
    for name in ("fgsm", "pgd", "deepfool"):  # Task 2: the attacks' default settings, the same images
        ex.attack_lab.attack.value = name
        res = []
        for i in range(4):
            ex.picker.select_index(i)
            ex.attack_lab.run(wait=True)
            res.append(ex.attack_lab.last_result)
        FIGURES.update({f"task2.{name}.{k}": sum(r[k] for r in res) / 4 for k in ("l0", "l2", "linf", "ssim")})
        FIGURES[f"task2.{name}.fooled"] = sum(r["success"] for r in res)
    FIGURES["task2.all_fooled"] = all(FIGURES[f"task2.{name}.fooled"] == 4 for name in ("fgsm", "pgd", "deepfool"))
    FIGURES["task2.fgsm_over_deepfool_l2"] = FIGURES["task2.fgsm.l2"] / FIGURES["task2.deepfool.l2"]
    panel = ex.train_panel  # Task 4: LeNet-5 on the digits, the tab's defaults (seeded here)
    panel.dataset.value = "digits"
    panel.arch.value = "lenet5"
    trained = {}
    for epochs in (2, 10):
        torch.manual_seed(0)
        panel.epochs.value = epochs
        panel.start()
        panel.wait()
        panel.use_model()  # as the task's "Use this model"
        trained[epochs] = ex.state.model
        FIGURES.update({f"task4.e{epochs}.acc{h['epoch']}": h["val_accuracy"] for h in panel.result.history})
    x40, y40 = data.load("digits", "test").tensors()
    x40, y40 = x40[:40], y40[:40]
    for name, net in (("e10", trained[10]), ("e2", trained[2])):
        with torch.no_grad():
            FIGURES[f"task4.fooled.{name}"] = int((net(attacks.fgsm(net, x40, y40, eps=0.3)).argmax(1) != y40).sum())
    acc = [FIGURES[f"task4.e10.acc{e}"] for e in range(1, 11)]
    FIGURES.update({"task4.gain_points": 100 * (acc[-1] - FIGURES["task4.e2.acc2"]),
                    "task4.most_by_4": acc[3] - acc[1] >= (acc[-1] - acc[1]) / 2, "task4.last_dips": acc[-1] < acc[-2]})
check = check_notebook("00_explorer.ipynb", FIGURES, applies=APPLIES, exercises=EXERCISES,
                       measured_in="CIFAR-10 (the JPEG copy) with the published ResNet-20 and the attacks' default "
                                   "settings (ADVVIZ_FAST unset)",
                       this_run=f"{explorer.state.dataset} with {explorer.state.model_name}"
                                + (", the attacks' quick settings (ADVVIZ_FAST=1)" if fast_mode() else ""))"""),
]


# The checked cell's expected output (nbval compares it; the rounding keeps it machine-independent).
EXPECTED_SUMMARY = """\
image (1, 28, 28) label 6 classified correctly: True
CFR shrinks as tau grows: True
attack fgsm linf 0.1 within budget: True
purified (1, 1, 28, 28) in [0, 1]: True
"""


#: Cells the documentation site leaves out (MyST-NB's ``remove-cell`` tag): those whose source
#: starts with one of these (the maintainers' check and its heading). The tests still run them.
REMOVED_ON_SITE = ("## For maintainers", "# NBVAL_CHECK_OUTPUT", "# For maintainers")


def build_notebook():  # noqa: ANN201 - nbformat.NotebookNode
    """The explorer notebook as an ``nbformat`` v4 node, without outputs."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, src) in enumerate(CELLS):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
        cell["id"] = f"advviz-explorer-{i:02d}"
        if src.startswith(REMOVED_ON_SITE):
            cell.metadata["tags"] = ["remove-cell"]
        if kind == "code" and src.startswith("# NBVAL_CHECK_OUTPUT"):
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=EXPECTED_SUMMARY)]
            cell.execution_count = 1  # nbval refuses reference outputs of a cell that never ran
        nb.cells.append(cell)
    return nb


def write_notebook(path: str | Path) -> Path:
    """Write :func:`build_notebook` to ``path`` (parents created) and return the path."""
    import nbformat

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_notebook(), str(path))
    return path


if __name__ == "__main__":  # pragma: no cover
    write_notebook(sys.argv[1] if len(sys.argv) > 1 else "notebooks/00_explorer.ipynb")
