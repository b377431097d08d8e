"""Widget latency: the CFR τ slider (32x32 and 224x224) and one AttackLab run.

``advviz bench widgets`` (``run`` then ``format``). What is measured, kernel side, with
``time.perf_counter`` around exactly what a user action triggers:

* ``tau_step``: setting ``CFRView.tau.value`` — ``advviz.explain.cfr_mask`` on the cached
  Grad-CAM map, colour mapping, two PNG encodings, the widget updates. 32x32: ResNet-20 on a
  CIFAR-10 test image (digits + LeNet-5, 28x28, when CIFAR or the weights are missing).
  224x224: a *randomly initialised* torchvision ResNet-18 (ImageNet layout, seeded; no weights
  are needed, and the cost of a τ step does not depend on the weights) on the same image
  upsampled to 224x224 RGB. Targets: median <= 50 ms (32x32) and <= 150 ms (224x224).
* ``attack_run``: pressing Run in AttackLab with PGD-10 (steps=10, other parameters at their
  defaults) on one image, in the calling thread: the attack plus every display update.

Rows are dicts; ``median_ms`` is the median over ``n`` repetitions.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18

from advviz import data, models
from advviz.models import Normalize
from advviz.widgets import AttackLab, CFRView, ExplorerState
from advviz.widgets._state import default_pairing

__all__ = ["run", "format", "ResNet18At224"]

TARGET_MS = {"32x32": 50.0, "28x28": 50.0, "224x224": 150.0}


class ResNet18At224(nn.Module):
    """torchvision's ResNet-18 with random (seeded) weights behind ImageNet normalisation.

    ``input_size`` (3, 224, 224), ``last_conv = "net.layer4"``, 1000 classes: a stand-in with the
    shapes and cost of an ImageNet model for display-latency benchmarks, not for accuracy.
    """

    last_conv = "net.layer4"
    input_size = (3, 224, 224)
    num_classes = 1000

    def __init__(self, seed: int = 0) -> None:
        super().__init__()

        torch.manual_seed(seed)
        self.normalize = Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        self.net = resnet18(weights=None)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def _quantiles(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000.0 for t in times)
    return {"median_ms": statistics.median(ms), "p90_ms": ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))],
            "min_ms": ms[0]}


def _image_and_model(device: str) -> tuple[torch.Tensor, int, nn.Module, str, str]:
    ds, name = default_pairing()
    model = models.load(name, device=device)
    dset = data.load(ds, "test")
    x, y = data.sample(dset, 1, seed=0, model=model)
    return x[0], int(y[0]), model, name, ds


def tau_steps(state: Any, steps: int) -> list[float]:
    """Per-step seconds of moving a fresh CFRView's τ slider across ``steps`` values."""
    view = CFRView(state)
    values = [round(0.05 + 0.9 * i / max(steps - 1, 1), 4) for i in range(steps)]
    if abs(values[0] - view.tau.value) < 1e-9:
        values = values[::-1]
    times = []
    for v in values:
        t0 = time.perf_counter()
        view.tau.value = v
        times.append(time.perf_counter() - t0)
    if view.errors.last is not None:
        raise RuntimeError(f"the τ slider failed: {view.errors.last}")
    return times


def run(n: int | None = None, quick: bool = False, device: str = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    """Measure the τ slider at 32x32 and 224x224 and one PGD-10 run in AttackLab.

    Args:
        n: τ steps per size (default 40, quick 20); attack repetitions are ``max(3, n // 10)``.
        quick: fewer repetitions.
        device: where the models run.
        seed: seed of the random ResNet-18.
    """
    steps = n or (20 if quick else 40)
    x, y, model, name, ds = _image_and_model(device)
    rows: list[dict[str, Any]] = []

    state = ExplorerState(model, model_name=name, device=device)
    state.set_image(x, y, source=f"{ds} test (seed 0)")
    size = f"{x.shape[1]}x{x.shape[2]}"
    rows.append({"bench": "tau_step", "size": size, "model": name, "n": steps,
                 **_quantiles(tau_steps(state, steps)), "target_ms": TARGET_MS.get(size)})

    big = ResNet18At224(seed).to(device)
    x224 = data.load_image(x, size=224, channels=3)
    state224 = ExplorerState(big, model_name="resnet18 (random init, 224x224)", device=device)
    state224.set_image(x224, None, source=f"{ds} image upsampled to 224x224")
    rows.append({"bench": "tau_step", "size": "224x224", "model": "resnet18_random", "n": steps,
                 **_quantiles(tau_steps(state224, steps)), "target_ms": TARGET_MS["224x224"]})

    reps = max(3, steps // 10)
    lab = AttackLab(state, attack="pgd", background=False)
    if "steps" in lab.controls.controls:
        lab.controls.set_values({"steps": 10})
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        lab.run_button.click()
        times.append(time.perf_counter() - t0)
        if lab.errors.last is not None:
            raise RuntimeError(f"AttackLab failed: {lab.errors.last}")
    rows.append({"bench": "attack_run", "size": size, "model": name, "n": reps, "attack": "pgd",
                 "params": {k: v for k, v in lab.values().items() if k in ("eps", "alpha", "steps")},
                 **_quantiles(times), "target_ms": None})
    return rows


def format(rows: list[dict[str, Any]]) -> str:  # noqa: A001 - the CLI's contract
    """A text table of the rows."""
    head = f"{'bench':<11} {'size':<8} {'model':<18} {'n':>4} {'median ms':>10} {'p90 ms':>8} {'target ms':>10}  ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        tgt = r.get("target_ms")
        ok = "" if tgt is None else ("yes" if r["median_ms"] <= tgt else "NO")
        label = r["bench"] if r["bench"] != "attack_run" else f"{r['attack']}-{r['params'].get('steps', '')}"
        lines.append(f"{label:<11} {r['size']:<8} {r['model'][:18]:<18} {r['n']:>4} {r['median_ms']:>10.1f} "
                     f"{r['p90_ms']:>8.1f} {('' if tgt is None else f'{tgt:.0f}'):>10}  {ok}")
    lines.append("tau_step: one τ-slider move in CFRView (cfr_mask on the cached Grad-CAM + PNG re-render); "
                 "224x224 uses a random-weight torchvision ResNet-18. attack_run: one AttackLab Run click.")
    return "\n".join(lines)
