"""RobustnessView: the security curve of the current model and of the defended model, in the background.

For ``n`` test images of the model's dataset (a seeded draw, the same every run) and each budget of
the grid, the view attacks the bare model (white-box) and the defended model
``defended(model, purifier)`` under the chosen threat model (:func:`advviz.evaluate.threat_models`:
``oblivious`` attacks the bare model and scores the defended one; ``adaptive`` attacks the
composition end to end, with BPDA for a non-differentiable purifier), and draws robust accuracy
against the budget (the point at 0 is clean accuracy). The work runs in a worker thread in small
units (one batch, one budget, one model), so the progress bar moves and Stop takes effect after
the unit in progress; the curves drawn are those of the units done.

Each point of the curves can be chosen in the "point" menu; the images that point counts as
broken (misclassified after the attack) are listed, and choosing one makes it the current image
(through the image picker when the view has one, so its slider follows).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ipywidgets as W
import torch

from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._state import ExplorerState

__all__ = ["RobustnessView", "default_grid"]

CURVES = ("model", "defended")


def default_grid(dataset: str | None) -> str:
    """The budgets offered first: up to 8/255 on CIFAR-10, up to 0.3 on the digits and MNIST
    (where 8/255 barely moves LeNet-5, see :mod:`advviz.widgets._budgets`)."""
    return "0.05, 0.1, 0.2, 0.3" if dataset in ("digits", "mnist") else "1/255, 2/255, 4/255, 8/255"


class RobustnessView(W.VBox):
    """Security curves (robust accuracy against the budget) of the model and the defended model.

    Args:
        state: the shared :class:`ExplorerState`.
        picker: the explorer's :class:`~advviz.widgets.picker.ImagePicker` (optional): a chosen
            image is shown through it.
        background: compute in a worker thread (``False``: in the calling thread, for tests).
        n: initial number of test images.
        steps: initial PGD steps (step size ``eps / 4``).
    """

    def __init__(self, state: ExplorerState, *, picker: Any = None, background: bool = True, n: int = 32,
                 steps: int = 10) -> None:
        from advviz import defenses

        self.state = state
        self.picker = picker
        self.background = background
        self.errors = ErrorArea()
        self.result: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.purifier = W.Dropdown(options=defenses.list_purifiers(), description="purifier",
                                   layout=W.Layout(width="260px"))
        self.threat = W.Dropdown(options=["adaptive", "oblivious"], value="adaptive", description="threat",
                                 layout=W.Layout(width="220px"))
        self.eps = W.Text(value=default_grid(state.dataset), description="eps", layout=W.Layout(width="320px"))
        self.n = W.BoundedIntText(value=n, min=1, max=10_000, description="images", layout=W.Layout(width="180px"))
        self.steps = W.BoundedIntText(value=steps, min=1, max=1000, description="PGD steps",
                                      layout=W.Layout(width="180px"))
        self.run_button = W.Button(description="Run", icon="play", button_style="danger")
        self.run_button.add_class("advviz-robust-run")
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="warning", disabled=True)
        self.stop_button.add_class("advviz-robust-stop")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="300px"))
        self.status = W.HTML()
        self.status.add_class("advviz-robust-status")
        self.chart = W.HTML()
        self.chart.add_class("advviz-robust-chart")
        self.point = W.Dropdown(options=[], description="point", layout=W.Layout(width="420px"))
        self.broken = W.Select(options=[], description="broken", rows=6, layout=W.Layout(width="420px"))
        self.broken.add_class("advviz-robust-broken")
        self.run_button.on_click(self._on_run)
        self.stop_button.on_click(self._on_stop)
        self.point.observe(self._on_point, names="value")
        self.broken.observe(self._on_broken, names="value")
        state.observe(self._on_model, "model")
        self._refresh_purifiers()
        super().__init__(children=[
            W.HTML('<div style="font-size:12px;color:#555">Robust accuracy of the current model (white-box PGD) and '
                   "of the model behind a purifier, per budget; <i>adaptive</i> attacks the purifier and the model "
                   "together (BPDA through a non-differentiable purifier), <i>oblivious</i> attacks the bare model "
                   "only (Athalye et al. 2018; Tramèr et al. 2020).</div>"),
            R.row(self.purifier, self.threat, self.eps),
            R.row(self.n, self.steps, self.run_button, self.stop_button, self.progress, self.status),
            R.row(self.chart, W.VBox([self.point, self.broken])),
            self.errors,
        ])

    def _refresh_purifiers(self) -> None:
        """Offer the purifiers that take the model's images (``purifier_fit``); JPEG first choice."""
        from advviz import defenses
        from advviz.widgets.purifier_lab import purifier_fit

        size = tuple(self.state.input_size)
        fits = [n for n in defenses.list_purifiers() if purifier_fit(n, size) is None]  # type: ignore[arg-type]
        cur = self.purifier.value
        self.purifier.options = fits
        self.purifier.value = cur if cur in fits else ("jpeg" if "jpeg" in fits else (fits[0] if fits else None))

    # ------------------------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """Whether a computation is in progress."""
        return not self._done.is_set()

    def run(self, *, wait: bool | None = None) -> None:
        """Start the computation (as the Run button does); ``wait`` blocks until it ends (default:
        ``not background``)."""
        from advviz import data
        from advviz.evaluate import parse_eps, threat_models

        if self.running:
            raise RuntimeError("the security curves are already being computed; press Stop first")
        grid = sorted({parse_eps(t) for t in self.eps.value.replace(";", ",").split(",") if t.strip()})
        if not grid:
            raise ValueError("give at least one budget, e.g. 8/255 or 0.1")
        if any(e > 1 for e in grid):
            raise ValueError("budgets are on the [0, 1] pixel scale: write 8/255, not 8")
        st = self.state
        if self.purifier.value is None:
            raise ValueError(f"no registered purifier takes {st.model_name}'s images")
        if self.picker is not None and self.picker.data is not None:  # the picker's dataset and split
            dataset, ds_name = self.picker.data, f"{self.picker.dataset.value}/{self.picker.split.value}"
        else:
            dataset, ds_name = data.load(st.dataset or "digits", "test"), f"{st.dataset or 'digits'}/test"
        n = min(int(self.n.value), len(dataset))
        idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
        attacked, scored, cfg = threat_models(st.model, self.purifier.value, threat=self.threat.value)
        job = {"dataset": dataset, "dataset_name": ds_name, "indices": idx, "eps": grid, "steps": int(self.steps.value),
               "models": {"model": (st.model, st.model), "defended": (attacked, scored)}, "threat": cfg,
               "purifier": self.purifier.value, "model_name": st.model_name}
        self._stop.clear()
        self._done.clear()
        self.errors.clear()
        self.run_button.disabled = True
        self.stop_button.disabled = False
        self.progress.value = 0.0
        self.progress.bar_style = "info"
        self.status.value = f"computing on {n} images…"
        self.result = None
        if self.background:
            self._thread = threading.Thread(target=self._work, args=(job,), daemon=True, name="advviz-robustness")
            self._thread.start()
            if wait:
                self.wait()
        else:
            self._work(job)

    def stop(self) -> None:
        """Stop after the unit (one batch, one budget, one model) in progress; the curves keep what is done."""
        self._stop.set()
        self.stop_button.disabled = True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the computation ended; ``False`` on timeout."""
        return self._done.wait(timeout)

    def _work(self, job: dict[str, Any]) -> None:
        try:
            self._compute(job)
        finally:
            self.run_button.disabled = False
            self.stop_button.disabled = True
            self._done.set()

    @guarded
    def _compute(self, job: dict[str, Any]) -> None:
        from advviz import attacks

        dev = self.state.device
        idx = job["indices"]
        batches = [idx[s:s + 32] for s in range(0, len(idx), 32)]
        units = len(batches) * len(job["eps"]) * len(CURVES)
        done = 0
        # per curve, per image: clean correctness and, per budget, (robust, prediction after the attack)
        res: dict[str, Any] = {"eps": job["eps"], "n_done": 0, "indices": [], "labels": [],
                               "clean": {c: [] for c in CURVES},
                               "after": {c: {e: [] for e in job["eps"]} for c in CURVES},
                               "purifier": job["purifier"], "threat": job["threat"], "model": job["model_name"],
                               "steps": job["steps"], "complete": False, "dataset": job["dataset"],
                               "dataset_name": job["dataset_name"]}
        t0 = time.perf_counter()
        try:
            for b in batches:
                items = [job["dataset"][int(i)] for i in b]
                x = torch.stack([it[0] for it in items]).to(dev)
                y = torch.tensor([int(it[1]) for it in items], device=dev)
                part = {c: {} for c in CURVES}
                for curve in CURVES:
                    attack_model, eval_model = job["models"][curve]
                    with torch.no_grad():
                        clean = eval_model(x).argmax(1)
                    part[curve]["clean"] = clean
                    for e in job["eps"]:
                        if self._stop.is_set():
                            raise _Stopped
                        xa = attacks.pgd(attack_model, x, y, eps=e, alpha=e / 4, steps=job["steps"], seed=0)
                        with torch.no_grad():
                            part[curve][e] = eval_model(xa).argmax(1)
                        done += 1
                        self.progress.value = done / units
                        self.status.value = f"computing… {done}/{units} ({time.perf_counter() - t0:.0f} s)"
                # a batch counts once every curve and budget is done for it
                res["indices"] += [int(i) for i in b]
                res["labels"] += y.tolist()
                for curve in CURVES:
                    res["clean"][curve] += part[curve]["clean"].tolist()
                    for e in job["eps"]:
                        res["after"][curve][e] += part[curve][e].tolist()
                res["n_done"] = len(res["indices"])
                self._publish(res)
            res["complete"] = True
            self._publish(res)
            self.progress.bar_style = "success"
            self.status.value = f"done: {res['n_done']} images in {time.perf_counter() - t0:.1f} s"
        except _Stopped:
            self.progress.bar_style = "warning"
            self.status.value = (f"stopped: the curves show the {res['n_done']} images done "
                                 f"({time.perf_counter() - t0:.1f} s)")
        except BaseException:
            self.progress.bar_style = "danger"
            self.status.value = "failed"
            raise

    # ------------------------------------------------------------------------------------ results
    def curves(self) -> dict[str, list[tuple[float, float]]]:
        """``{"model" | "defended": [(eps, robust accuracy), ...]}`` starting at ``(0, clean accuracy)``."""
        res = self.result
        if not res or not res["n_done"]:
            return {}
        y = res["labels"]
        out = {}
        for c in CURVES:
            pts = [(0.0, sum(p == t for p, t in zip(res["clean"][c], y)) / len(y))]
            pts += [(e, sum(p == t for p, t in zip(res["after"][c][e], y)) / len(y)) for e in res["eps"]]
            out[c] = pts
        return out

    def broken_images(self, curve: str, eps: float) -> list[tuple[int, int, int]]:
        """``[(dataset index, true label, prediction)]`` of the images misclassified at that point."""
        res = self.result
        if not res:
            return []
        preds = res["clean"][curve] if eps == 0 else res["after"][curve][eps]
        return [(i, t, p) for i, t, p in zip(res["indices"], res["labels"], preds) if p != t]

    def _publish(self, res: dict[str, Any]) -> None:
        with self._lock:
            self.result = {**res, "indices": list(res["indices"]), "labels": list(res["labels"])}
            self._draw()

    def _draw(self) -> None:
        curves = self.curves()
        if not curves:
            self.chart.value = ""
            self.point.options = []
            return
        res = self.result
        scale = 1.0 if self.state.dataset in ("digits", "mnist") else 255.0
        xs = [e * scale for e, _ in curves["model"]]
        label = f"{res['purifier']} ({res['threat']['threat']})"
        self.chart.value = R.line_svg(
            xs, [(f"{res['model']}", [a for _, a in curves["model"]]), (label, [a for _, a in curves["defended"]])],
            xlabel="eps" + (" (x 1/255)" if scale == 255.0 else ""), ylabel="robust accuracy",
            title=f"security curve, {res['n_done']} images, PGD-{res['steps']}")
        cur = self.point.value
        options = [(f"{'model' if c == 'model' else label}: eps {e * scale:g}{'/255' if scale == 255.0 else ''} — "
                    f"accuracy {a:.3f}", (c, e)) for c in CURVES for e, a in curves[c]]
        self.point.options = options
        if cur in [v for _, v in options]:
            self.point.value = cur

    def show_image(self, index: int) -> None:
        """Make dataset image ``index`` of the last run the current image: through the picker when it
        still shows that dataset (its slider follows), else directly."""
        res = self.result
        if res is None:
            raise RuntimeError("no security curve yet: press Run first")
        if self.picker is not None and self.picker.data is res["dataset"]:
            self.picker.select_index(index)
            return
        x, y = res["dataset"][int(index)]
        self.state.set_image(x, int(y), source=f"{res['dataset_name']} #{index} (robustness tab)")

    # ------------------------------------------------------------------------------------ callbacks
    @guarded
    def _on_run(self, _button: W.Button | None = None) -> None:
        self.run()

    @guarded
    def _on_stop(self, _button: W.Button | None = None) -> None:
        self.stop()

    @guarded
    def _on_point(self, change: dict[str, Any]) -> None:
        if change["new"] is None:
            self.broken.options = []
            return
        curve, e = change["new"]
        names = self.state.classes
        self.broken.options = [(f"#{i}: {names[t] if t < len(names) else t} → {names[p] if p < len(names) else p}", i)
                               for i, t, p in self.broken_images(curve, e)]

    @guarded
    def _on_broken(self, change: dict[str, Any]) -> None:
        if change["new"] is not None:
            self.show_image(int(change["new"]))

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        if self.running:
            self.stop()
        self.eps.value = default_grid(state.dataset)
        self._refresh_purifiers()
        self.result = None
        self.chart.value = ""
        self.point.options = []
        self.broken.options = []
        self.status.value = "the model changed: press Run for its curves"


class _Stopped(Exception):
    """Raised inside the worker when Stop was pressed."""
