"""RobustnessView: the security curve of the current model and of the defended model, in the background.

For ``n`` test images of the model's dataset (a seeded draw, the same every run) and each budget of
the grid, the view attacks the bare model (white-box) and the defended model
``defended(model, purifier)`` under the chosen threat model (:func:`advviz.evaluate.threat_models`:
``oblivious`` attacks the bare model and scores the defended one; ``adaptive`` attacks the
composition end to end, with BPDA for a non-differentiable purifier), and draws robust accuracy
against the budget (the point at 0 is clean accuracy).

The curves are :func:`advviz.evaluate.robust_accuracy` (PGD, ``steps`` steps of ``eps / 4``,
:data:`SEED`, batches of :data:`BATCH`, no steps check), run through the widgets' job runner
(:mod:`advviz.widgets._jobs`): first for the model, then for the defended model. Its per-batch
callback draws the curves of the images done so far and its stop hook ends the run at the next
attack when Stop is pressed; the curves then show what was done. The per-sample results are
those of ``advviz evaluate MODEL --attacks "pgd:steps=K;alpha=eps/4" --eps ... --n N --seed 0
--batch-size 32 --no-steps-check [--defense P --threat T]`` on the same images. When the model
changes during a run, its curves are dropped (they belonged to the old model) and the status says so.

Each point of the curves can be chosen in the "point" menu (a point is chosen when the curves
appear); the images that point counts as broken (misclassified after the attack) are listed, and
choosing one shows it clean and attacked, makes it the current image (through the image picker
when the view has one, so its slider follows) and its attacked version the state's adversarial
image.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import torch

from advviz import data, defenses, metrics
from advviz._cli_parse import parse_eps
from advviz.evaluate import robust_accuracy, threat_models
from advviz.evaluate.robust import Batch, eps_key
from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._jobs import Job, JobRunner
from advviz.widgets._state import ExplorerState
from advviz.widgets.purifier_lab import purifier_fit

__all__ = ["RobustnessView", "default_grid"]

CURVES = ("model", "defended")
#: The evaluation's seed (the draw of images and every attack) and its batch size.
SEED = 0
BATCH = 32
SLOT = 140  # displayed size of the chosen image, clean and attacked (pixels)


def default_grid(dataset: str | None) -> str:
    """The budgets offered first: up to 8/255 on CIFAR-10, from 0.25/255 (ResNet-20 is already at 0
    robust accuracy from 1/255 on); up to 0.3 on the digits and MNIST (where 8/255 barely moves
    LeNet-5, see :mod:`advviz.widgets._budgets`)."""
    return ("0.05, 0.1, 0.2, 0.3" if dataset in ("digits", "mnist")
            else "0.25/255, 0.5/255, 1/255, 2/255, 4/255, 8/255")


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
        self.state = state
        self.picker = picker
        self.background = background
        self.errors = ErrorArea()
        self.result: dict[str, Any] | None = None
        self.jobs = JobRunner(self, state=state, background=background, tick=self._on_tick, name="advviz-robustness")
        self.purifier = W.Dropdown(options=[], description="purifier", layout=W.Layout(width="260px"))
        self.threat = W.Dropdown(options=["adaptive", "oblivious"], value="adaptive", description="threat",
                                 layout=W.Layout(width="220px"))
        self.eps = W.Text(value=default_grid(state.dataset), description="eps", layout=W.Layout(width="420px"))
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
        self.flags = W.HTML()
        self.flags.add_class("advviz-robust-flags")
        self.point = W.Dropdown(options=[], description="point", layout=W.Layout(width="420px"))
        self.broken = W.Select(options=[], description="broken", rows=6, layout=W.Layout(width="420px"))
        self.broken.add_class("advviz-robust-broken")
        self.clean_img = R.ImageSlot("choose a broken image", size=SLOT)
        self.attacked_img = R.ImageSlot("its attacked version", size=SLOT, css_class="advviz-robust-attacked")
        self.image_info = W.HTML()
        self.image_info.add_class("advviz-robust-image-info")
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
                   "only (Athalye et al. 2018; Tramèr et al. 2020). Computed by "
                   "<code>advviz.evaluate.robust_accuracy</code>, as <code>advviz evaluate</code> does.</div>"),
            R.row(self.purifier, self.threat, self.eps),
            R.row(self.n, self.steps, self.run_button, self.stop_button, self.progress, self.status),
            R.row(W.VBox([self.chart, self.flags]), W.VBox([self.point, self.broken])),
            R.row(R.captioned(self.clean_img, "clean"), R.captioned(self.attacked_img, "attacked"), self.image_info),
            self.errors,
        ])

    def _refresh_purifiers(self) -> None:
        """Offer the purifiers that take the model's images (``purifier_fit``); JPEG first choice."""
        size = tuple(self.state.input_size)
        fits = [n for n in defenses.list_purifiers() if purifier_fit(n, size) is None]  # type: ignore[arg-type]
        cur = self.purifier.value
        self.purifier.options = fits
        self.purifier.value = cur if cur in fits else ("jpeg" if "jpeg" in fits else (fits[0] if fits else None))

    # ------------------------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """Whether a computation is in progress."""
        return self.jobs.running

    def settings(self) -> dict[str, Any]:
        """The keyword arguments the tab gives :func:`advviz.evaluate.robust_accuracy` (besides the
        model, the data, ``attack_model`` and its callbacks)."""
        grid = sorted({parse_eps(t) for t in self.eps.value.replace(";", ",").split(",") if t.strip()})
        if not grid:
            raise ValueError("give at least one budget, e.g. 8/255 or 0.1")
        if any(e > 1 for e in grid):
            raise ValueError("budgets are on the [0, 1] pixel scale: write 8/255, not 8")
        return {"attacks": [("pgd", {"steps": int(self.steps.value), "alpha": "eps/4"})], "eps": grid,
                "n": int(self.n.value), "seed": SEED, "batch_size": BATCH, "steps_check": False, "progress": False}

    def run(self, *, wait: bool | None = None) -> None:
        """Start the computation (as the Run button does); ``wait`` blocks until it ends (default:
        ``not background``)."""
        if self.running:
            raise RuntimeError("the security curves are already being computed; press Stop first")
        settings = self.settings()
        st = self.state
        if self.purifier.value is None:
            raise ValueError(f"no registered purifier takes {st.model_name}'s images")
        picker_data = None
        if self.picker is not None and self.picker.data is not None:  # the picker's images, as the model takes them
            missing = self.picker.unknown_labels()
            if missing:
                raise ValueError(
                    f"{missing} of the {len(self.picker.data)} images of {self.picker.source_name} have no label "
                    f"{st.model_name} knows (no class folder, or a class the model does not have), and robust "
                    "accuracy needs the true label of every image: use a folder with one sub-folder per class, named "
                    "like the model's classes, or a dataset the model was trained on")
            picker_data = self.picker.data
            dataset, ds_name = self.picker.model_data(), self.picker.source_name
        elif st.dataset in data.DATASETS:
            dataset, ds_name = data.load(st.dataset, "test"), f"{st.dataset}/test"
        else:
            raise ValueError(f"{st.model_name} names no dataset advviz has: give the Robustness tab an image picker "
                             "(the explorer does) with labelled images")
        settings["n"] = min(settings["n"], len(dataset))
        attacked, scored, cfg = threat_models(st.model, self.purifier.value, threat=self.threat.value)
        inputs = {"dataset": dataset, "dataset_name": ds_name, "settings": settings, "picker_data": picker_data,
                  "models": {"model": (st.model, st.model), "defended": (attacked, scored)}, "threat": cfg,
                  "purifier": self.purifier.value, "model_name": st.model_name}
        self.errors.clear()
        self.run_button.disabled = True
        self.stop_button.disabled = False
        self.progress.value = 0.0
        self.progress.bar_style = "info"
        self.status.value = f"computing on {settings['n']} images…"
        self.result = None
        self._draw()  # nothing of an earlier run stays on screen
        self.jobs.start(self._compute, name="security curves", inputs=inputs, depends=("model",),
                        done=self._finished, dropped=self._dropped, failed=self._failed, ended=self._ended)
        if wait:
            self.wait()

    def stop(self) -> None:
        """Stop at the next attack; the curves keep the batches done (a batch counts once all its budgets are)."""
        self.jobs.stop()
        self.stop_button.disabled = True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the computation ended and its thread is joined; ``False`` on timeout."""
        return self.jobs.wait(timeout)

    def _on_tick(self, job: Job, elapsed: float) -> None:
        if job.outcome is not None:
            return  # a late tick writes nothing
        res, inp = self.result, job.inputs
        done = res["done"] if res else {c: 0 for c in CURVES}
        n = inp["settings"]["n"]
        self.status.value = (f"computing… the model: {done['model']}/{n} images, {html.escape(inp['purifier'])} "
                             f"({html.escape(inp['threat']['threat'])}): {done['defended']}/{n} ({elapsed:.0f} s)")

    def _compute(self, job: Job) -> dict[str, Any]:
        """The work (worker thread): :func:`robust_accuracy` for the model, then for the defended model."""
        inp, cfg = job.inputs, job.inputs["settings"]
        eps = cfg["eps"]
        res: dict[str, Any] = {
            "eps": eps, "n": cfg["n"], "n_done": 0, "indices": [], "labels": [], "complete": False,
            "done": {c: 0 for c in CURVES},
            # per curve, per image: clean prediction and correctness; per budget, the prediction after the
            # attack and whether the image stayed robust; the attacked images of the broken ones
            "curves": {c: {"indices": [], "labels": [], "clean": [], "clean_ok": [], "after": {e: [] for e in eps},
                           "robust": {e: [] for e in eps}, "x_adv": {e: {} for e in eps}} for c in CURVES},
            "evaluations": {}, "flags": {}, "settings": dict(cfg), "purifier": inp["purifier"],
            "threat": inp["threat"], "model": inp["model_name"], "steps": cfg["attacks"][0][1]["steps"],
            "dataset": inp["dataset"], "dataset_name": inp["dataset_name"], "picker_data": inp["picker_data"]}
        units = 2 * cfg["n"]
        for curve in CURVES:
            attack_model, eval_model = inp["models"][curve]
            per = res["curves"][curve]

            def on_batch(b: Batch, per: dict[str, Any] = per, eval_model: Any = eval_model, curve: str = curve) -> None:
                clean_pred = metrics.predictions(eval_model, b.x).tolist()
                per["indices"] += b.indices
                per["labels"] += b.y.tolist()
                per["clean"] += clean_pred
                per["clean_ok"] += [bool(b.samples[i]["clean"]) for i in b.indices]
                for e in eps:
                    k = eps_key(e)
                    xa = b.x_adv[k]["pgd"]
                    per["after"][e] += metrics.predictions(eval_model, xa).tolist()
                    robust = [bool(b.samples[i]["robust"][k]["pgd"]) for i in b.indices]
                    per["robust"][e] += robust
                    for j, (i, ok, r) in enumerate(zip(b.indices, (b.samples[i]["clean"] for i in b.indices), robust)):
                        if ok and not r:  # broken by the attack: keep what broke it
                            per["x_adv"][e][i] = xa[j].detach().float().cpu().clone()
                res["done"][curve] = len(per["indices"])
                res["n_done"] = min(res["done"].values())  # the images every curve has done
                res["indices"] = res["curves"]["model"]["indices"][:res["n_done"]]
                res["labels"] = res["curves"]["model"]["labels"][:res["n_done"]]
                job.publish(self._publish, res, sum(res["done"].values()) / units)

            result = robust_accuracy(eval_model, inp["dataset"], attack_model=attack_model, on_batch=on_batch,
                                     should_stop=job.stop_requested, meta={"model": inp["model_name"],
                                                                           "data": inp["dataset_name"],
                                                                           "curve": curve}, **cfg)
            res["evaluations"][curve] = result
            res["flags"][curve] = list(result.flags)
            if not result.complete:
                break
        res["complete"] = all(r.complete for r in res["evaluations"].values()) and len(res["evaluations"]) == 2
        return res

    def _finished(self, job: Job, res: dict[str, Any]) -> None:
        """Show the end of the run (under the state's lock, the model unchanged)."""
        self._publish(res)
        secs = job.elapsed()
        if res["complete"]:
            self.progress.bar_style = "success"
            self.progress.value = 1.0
            self.status.value = f"done: {res['n_done']} images in {secs:.1f} s"
        elif any(res["done"].values()):
            self.progress.bar_style = "warning"
            shown = ", ".join(f"{self._curve_label(res, c)}: {res['done'][c]} of {res['n']}" for c in CURVES)
            self.status.value = f"stopped: the curves show the images done ({shown}; {secs:.1f} s)"
        else:
            self.progress.bar_style = "warning"
            self.status.value = f"stopped before the first batch of {BATCH} images was done: no curve to show"

    def _dropped(self, job: Job, reason: str) -> None:
        self.result = None
        self._draw()
        self.progress.bar_style = "warning"
        self.status.value = (f"dropped: {reason} while the security curves were computed (they belonged to the old "
                             "model); press Run for the current model's curves")

    def _failed(self, job: Job, exc: BaseException) -> None:
        self.progress.bar_style = "danger"
        self.status.value = "failed"

    def _ended(self, job: Job) -> None:
        self.run_button.disabled = False
        self.stop_button.disabled = True

    # ------------------------------------------------------------------------------------ results
    @staticmethod
    def _curve_label(res: dict[str, Any], curve: str) -> str:
        return res["model"] if curve == "model" else f"{res['purifier']} ({res['threat']['threat']})"

    def curves(self) -> dict[str, list[tuple[float, float]]]:
        """``{"model" | "defended": [(eps, robust accuracy), ...]}`` starting at ``(0, clean accuracy)``,
        over the images done for each curve (a curve with none is left out)."""
        res = self.result
        if not res:
            return {}
        out = {}
        for c in CURVES:
            per = res["curves"][c]
            m = len(per["indices"])
            if m:
                out[c] = [(0.0, sum(per["clean_ok"]) / m)] + [(e, sum(per["robust"][e]) / m) for e in res["eps"]]
        return out

    def broken_images(self, curve: str, eps: float) -> list[tuple[int, int, int]]:
        """``[(dataset index, true label, prediction)]`` of the images misclassified at that point."""
        res = self.result
        if not res:
            return []
        per = res["curves"][curve]
        ok = per["clean_ok"] if eps == 0 else per["robust"][eps]
        preds = per["clean"] if eps == 0 else per["after"][eps]
        return [(i, t, p) for i, t, p, good in zip(per["indices"], per["labels"], preds, ok) if not good]

    def adversarial_image(self, curve: str, eps: float, index: int) -> torch.Tensor | None:
        """The attacked image ``(C, H, W)`` that broke dataset image ``index`` at that point (``None``
        when the attack did not break it: at eps 0, or an image misclassified without an attack)."""
        res = self.result
        if not res or eps == 0:
            return None
        return res["curves"][curve]["x_adv"][eps].get(int(index))

    def _publish(self, res: dict[str, Any], progress: float | None = None) -> None:
        """Show ``res`` (a copy: the worker goes on adding to it) and move the progress bar."""
        self.result = _copy(res)
        if progress is not None:
            self.progress.value = progress
        self._draw()

    def _draw(self) -> None:
        curves = self.curves()
        if not curves:
            self.chart.value = self.flags.value = ""
            self.point.options = []
            self.broken.options = []
            self.clean_img.value = self.attacked_img.value = b""
            self.image_info.value = ""
            return
        res = self.result
        scale = 1.0 if self.state.dataset in ("digits", "mnist") else 255.0
        xs = [0.0] + [e * scale for e in res["eps"]]
        series = [(f"{self._curve_label(res, c)} ({len(res['curves'][c]['indices'])} images)", [a for _, a in pts])
                  for c, pts in curves.items()]
        self.chart.value = R.line_svg(
            xs, series, xlabel="eps" + (" (x 1/255)" if scale == 255.0 else ""), ylabel="robust accuracy",
            title=(f"security curve, {res['n_done']} images, PGD-{res['steps']}" if res["complete"] else
                   f"security curve so far ({res['n']} images asked), PGD-{res['steps']}"), legend=True)
        flags = [f"{self._curve_label(res, c)}: {f}" for c, fl in res["flags"].items() for f in fl]
        self.flags.value = ('<div style="font-size:12px;color:#9a7d0a">sanity flags: '
                            f"{html.escape('; '.join(flags))}</div>" if flags else "")
        cur = self.point.value
        options = [(f"{self._curve_label(res, c)}: eps {e * scale:g}{'/255' if scale == 255.0 else ''} — "
                    f"accuracy {a:.3f}", (c, e)) for c, pts in curves.items() for e, a in pts]
        values = [v for _, v in options]
        if list(self.point.options) != options:
            self.point.options = options
        self.point.value = cur if cur in values else self._default_point(curves)

    @staticmethod
    def _default_point(curves: dict[str, list[tuple[float, float]]]) -> tuple[str, float]:
        """The model's first budget where the attack broke images the model got right, else its largest."""
        c = "model" if "model" in curves else next(iter(curves))
        pts = curves[c]
        clean = pts[0][1]
        return c, next((e for e, a in pts[1:] if a < clean), pts[-1][0])

    def show_image(self, index: int, *, curve: str | None = None, eps: float | None = None) -> None:
        """Make dataset image ``index`` of the last run the current image: through the picker when it
        still shows that dataset (its slider follows), else directly. With a point (``curve``,
        ``eps``) at which the attack broke it, its attacked version becomes the state's adversarial
        image (named after the point) and the tab shows both."""
        res = self.result
        if res is None:
            raise RuntimeError("no security curve yet: press Run first")
        x, y = res["dataset"][int(index)]
        x_adv = self.adversarial_image(curve, eps, index) if curve is not None and eps is not None else None
        if self.picker is not None and res["picker_data"] is not None and self.picker.data is res["picker_data"]:
            self.picker.select_index(index)
        else:
            self.state.set_image(x, int(y), source=f"{res['dataset_name']} #{index} (robustness tab)")
        self.clean_img.value = R.png(R.to_uint8(x))
        names = self.state.classes

        def name(k: int) -> str:
            return html.escape(names[k] if 0 <= k < len(names) else str(k))

        row = next(((t, p) for i, t, p in self.broken_images(curve, eps) if i == int(index)), None) \
            if curve is not None and eps is not None else None
        if x_adv is None:
            self.attacked_img.value = b""
            self.image_info.value = (f"#{index}: {name(int(y))}, misclassified as {name(row[1])} without an attack"
                                     if row is not None else f"#{index}: {name(int(y))}")
            return
        self.attacked_img.value = R.png(R.to_uint8(x_adv))
        scale = 1.0 if self.state.dataset in ("digits", "mnist") else 255.0
        where = f"eps {eps * scale:g}{'/255' if scale == 255.0 else ''}"
        label = "PGD" if curve == "model" else f"PGD on {self._curve_label(res, curve)}"
        self.image_info.value = (f"#{index}: {name(int(y))} → <b>{name(row[1]) if row else '?'}</b> after {label} at "
                                 f"{where}; the attacked image is now the explorer's adversarial image")
        st = self.state
        if st.x is not None and tuple(st.x.shape) == tuple(x_adv.shape):
            st.set_adversarial(x_adv, attack=f"pgd ({where}, Robustness tab)")

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
        if change["new"] is not None and self.point.value is not None:
            curve, e = self.point.value
            self.show_image(int(change["new"]), curve=curve, eps=e)

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        if self.running:
            self.stop()  # its result is dropped when it ends: it belongs to the old model
        self.eps.value = default_grid(state.dataset)
        self._refresh_purifiers()
        self.result = None
        self._draw()
        self.status.value = "the model changed: press Run for its curves"


def _copy(value: Any) -> Any:
    """``value`` with its lists and dicts copied (tensors and other objects shared)."""
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value
