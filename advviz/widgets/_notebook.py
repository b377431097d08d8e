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
compare with (click it open). The answers were measured on CIFAR-10 with ResNet-20 (the first line
of the explorer says which setting you have; on the offline digits with LeNet-5 the numbers
differ but the pattern is the same).

### Task 1: where does the network look? (image picker, CFR tab)

1. In the picker, choose a class (e.g. *cat*) and press **random** a few times.
2. In the **CFR** tab, drag **τ** slowly from 0 to 0.9.

*Look for:* the red part of the Grad-CAM overlay (the contributing feature region, CFR), and the
line under the mask, "τ = …: N% of the pixels are in the CFR". Is the region on the object or on
the background? At which τ does the mask keep about a quarter of the image?

<details><summary>Answer</summary>

Measured on the first four CIFAR-10 test images with ResNet-20: at τ = 0 the mask keeps 95% of the
pixels (89–100%), at τ = 0.2 (the CFR attack's default) 40% (36–43%), at τ = 0.5 15% (12–18%), at
τ = 0.8 4% (2–8%). A quarter of the image is kept near τ = 0.35. The region is a smooth blob rather
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
all four. FGSM changes nearly every element (ℓ0 3,048 of 3,072 on average: only pixels already at 0
or 1 stay) by exactly ε = 8/255: ℓ∞ 0.031, ℓ2 1.72, SSIM 0.906; the amplified perturbation is a
speckle over the whole image. PGD-10 stays inside the same ε-box but needs less: ℓ2 1.25, SSIM
0.947. DeepFool is not bounded by ε: it steps to the nearest decision boundary and just across
it, with ℓ2 0.023 (75 times smaller than FGSM's) and ℓ∞ 0.0031 (0.8/255), SSIM 1.000: invisible
even amplified, and it costs several forward and backward passes per step where FGSM needs one
(compare the time rows).
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
ResNet-20 alone, the *oblivious* threat model) answers it: without a purifier accuracy falls from
0.816 to 0.059 under FGSM (0.000 under PGD-10). **UDDN** brings it back to 0.664 (0.668 under
PGD-10) and keeps clean images at 0.824: the one to deploy. The DAE gets 0.348 under FGSM (0.535
under PGD-10), the cGAN trained on FGSM 0.336, pix2pix 0.246. Every learned purifier but UDDN
costs clean images a few points (0.766 to 0.789 against 0.816; the DAE 0.781). These attacks did
not know about the purifier: the Robustness tab's *adaptive* threat model attacks the purifier and
the model together, so compare the two curves there. One image is not a rate: a purifier with
0.664 accuracy still fails on one image in three, so try several images before you judge. JPEG
has no row in the table: compare it with UDDN on your images. Offline (digits with LeNet-5) only
`jpeg` fits the model, since the learned purifiers were trained on CIFAR-10 colour images (the tab
says so): compare JPEG qualities on the digits, or get CIFAR-10 and ResNet-20 for this task
(README, "Data and weights").
</details>

### Task 4: train a model of your own (Train tab)

1. Open **Train**, choose dataset *digits* and model *lenet5*, keep the defaults (2 epochs on 1,000
   images) and press **Start**; then train again with 10 epochs.
2. When training ends press **Use this model**: the header's model is then the one you trained
   (the tab never swaps it in by itself). Run `fgsm` on it in the **Attack lab**.

*Look for:* the loss curve falling and the accuracy rising epoch by epoch; how much the extra
epochs buy; whether your model is any harder to fool than the one it replaced.

<details><summary>Answer</summary>

Measured with LeNet-5 on the digits (held-out accuracy after each epoch, the tab's defaults
otherwise): 2 epochs gave 0.877 then 0.908; 10 epochs climbed 0.872, 0.911, 0.922, 0.961, 0.961,
0.975, 0.975, 0.975, 0.981, 0.972, so the extra epochs buy about six points, most of them by epoch
6, and the last one already dips (more epochs are not always better). A better-trained model is
not a more robust one: FGSM at the explorer's digits budget (ε = 0.3) fooled the explorer's own LeNet-5 (`lenet5_digits`) on
39 of the first 40 digits test images and the 2-epoch model on all 40. Robustness has to be
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
REMOVED_ON_SITE = ("## For maintainers", "# NBVAL_CHECK_OUTPUT")


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
