"""The explorer notebook, defined in code so that an installed advviz can recreate it.

``notebooks/00_explorer.ipynb`` in the repository is exactly :func:`build_notebook` written by
:func:`write_notebook` (a test checks that they agree); ``advviz explore`` opens the repository
copy when advviz runs from a checkout, and otherwise writes this one to the user's cache.
Regenerate the repository copy with ``python -m advviz.widgets._notebook notebooks/00_explorer.ipynb``.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["CELLS", "build_notebook", "write_notebook"]

# (kind, source) pairs
CELLS: list[tuple[str, str]] = [
    ("markdown", """\
# advviz explorer

Pick an image (or upload your own), look at its Grad-CAM contributing-feature region (CFR) and
move the **τ** slider to see the soft mask change, run any registered attack, purify the result,
look at feature maps, and retrain the model — all around one shared image and model.

* Offline with no data, the explorer uses scikit-learn's **digits** with **LeNet-5** (trained on
  first use, about 15 s). With CIFAR-10 and the ResNet-20 weights available (`ADVVIZ_DATA`,
  `ADVVIZ_WEIGHTS`, or a network), it uses **CIFAR-10** with **ResNet-20**.
* `ADVVIZ_FAST=1` starts the attack controls from each attack's quick settings (used in CI).
* Errors in any control appear in a red box inside the widget."""),
    ("code", """\
from advviz.widgets import Explorer, fast_mode

explorer = Explorer()  # CIFAR-10 + ResNet-20 when available, else digits + LeNet-5
explorer"""),
    ("markdown", """\
## The components one by one

Every tab is also a component of its own (`advviz.widgets.ImagePicker`, `CFRView`,
`FeatureMapView`, `AttackLab`, `PurifierLab`, `TrainPanel`) that takes an `ExplorerState`;
here the explorer's are driven from code. Setting a control's `.value` or calling a button's
`.click()` does exactly what the mouse does; the results appear in the explorer above (a
component is displayed once only: showing it again would make a second, linked copy)."""),
    ("code", """\
st = explorer.state
explorer.cfr.tau.value = 0.5          # the mask in the explorer above follows
explorer.attack_lab.attack.value = "fgsm" if "fgsm" in explorer.attack_lab.attack.options else explorer.attack_lab.attack.value
explorer.attack_lab.run(wait=True)    # the same as pressing Run: see the "Attack lab" tab above
r = explorer.attack_lab.last_result
print(st.source, "->", r and f"{r['attack']}: {st.class_name(r['before'])} -> {st.class_name(r['after'])}")"""),
    ("markdown", """\
## A seeded summary (checked by CI)

The same steps on a fixed configuration — digits test image 0, LeNet-5 — printed with rounding
that does not depend on the machine."""),
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


def build_notebook():  # noqa: ANN201 - nbformat.NotebookNode
    """The explorer notebook as an ``nbformat`` v4 node, without outputs."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, src) in enumerate(CELLS):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
        cell["id"] = f"advviz-explorer-{i:02d}"
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
