"""AttackLab: pick a registered attack, set its parameters, run it on the current image."""

from __future__ import annotations

import html
import time
from typing import Any

import ipywidgets as W
import torch

from advviz import attacks, explain, metrics
from advviz.attacks.trajectory import record
from advviz.widgets import _render as R
from advviz.widgets._budgets import budget_overrides, widened_params
from advviz.widgets._controls import ParamControls
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._jobs import CHANGED, Job, JobRunner
from advviz.widgets._state import ExplorerState

__all__ = ["AttackLab"]

SLOT = 180  # displayed size of each result image (pixels)


def _settings(kwargs: dict[str, Any]) -> str:
    """An attack's settings in one line: budgets also in /255 (``eps 0.0314 = 8/255, steps 10``)."""
    parts = []
    for k, v in kwargs.items():
        if isinstance(v, float) and k in ("eps", "alpha") and 0 < v <= 1:
            parts.append(f"{k} {v:.4g} = {v * 255:.3g}/255")
        elif isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
        elif v is not None and k != "targeted":
            parts.append(f"{k} {v}")
    return ", ".join(parts) or "its defaults"


class AttackLab(W.VBox):
    """Attack dropdown (from ``advviz.attacks.list_attacks()``) with controls built from its specs.

    "Run" attacks the current image with the current model through the widgets' job runner
    (:mod:`advviz.widgets._jobs`): in a worker thread with an elapsed-time progress bar (the
    notebook stays responsive) when ``background=True``, else in the calling thread. The attack
    uses the model, image and settings it started with; when the model or the image changes
    before it ends, its result is dropped (not shown for the new state) and the status says why.
    Shows the original, the adversarial image, the perturbation amplified (the factor is printed)
    and as a signed map δ = x_adv − x (mean over channels, on a diverging scale symmetric about
    0 whose end is the largest change, shown in /255 on its colour bar), prediction bars before/after, the ℓp norms and SSIM, and records the
    adversarial image in the shared state. The status line ends on "done in … s", "failed" or
    "dropped: … changed while the attack ran".

    The controls start from the attack's defaults, with the budget of the model's dataset
    (:mod:`advviz.widgets._budgets`: ℓ∞ 0.3 on the digits and MNIST instead of 8/255).

    Args:
        state: the shared :class:`ExplorerState`.
        attack: initial attack name (default ``"pgd"`` when registered, else the first).
        background: run attacks in a worker thread.
        quick: start from each attack's ``quick`` overrides (fewer steps) instead of its defaults.
    """

    def __init__(self, state: ExplorerState, *, attack: str | None = None, background: bool = True,
                 quick: bool = False) -> None:
        self.state = state
        self.errors = ErrorArea()
        self.background = background
        self.quick = quick
        self.last_result: dict[str, Any] | None = None
        self.jobs = JobRunner(self, state=state, background=background, tick=self._on_tick, name="advviz-attack")
        names = attacks.list_attacks()
        if not names:
            raise RuntimeError("no attack is registered (advviz.attacks.list_attacks() is empty)")
        default = attack or ("pgd" if "pgd" in names else names[0])
        self.attack = W.Dropdown(options=names, value=default, description="attack", layout=W.Layout(width="300px"))
        self.attack.add_class("advviz-attack-name")
        self.describe = W.HTML()
        self.target = W.Dropdown(options=[("untargeted", -1)], value=-1, description="target",
                                 layout=W.Layout(width="300px"))
        self.controls = ParamControls([])
        self.controls_box = W.VBox()
        self.run_button = W.Button(description="Run", icon="play", button_style="danger")
        self.run_button.add_class("advviz-attack-run")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="300px", visibility="hidden"))
        self.status = W.HTML()
        self.status.add_class("advviz-attack-status")
        self.original = R.ImageSlot("pick an image", size=SLOT)
        self.adversarial = R.ImageSlot("press Run to attack this image", size=SLOT, css_class="advviz-adv-image")
        self.amplified = R.ImageSlot("the change the attack makes, magnified", size=SLOT)
        self.heatmap = R.ImageSlot("where and which way pixels changed", size=SLOT)
        self.amplified_caption = W.HTML("<b>perturbation (amplified)</b>")
        self.amplified_scale = W.HTML()
        self.heatmap_scale = W.HTML()
        self.result_title = W.HTML()
        self.result_title.add_class("advviz-attack-result-title")
        self.bars = W.HTML()
        self.bars.add_class("advviz-bars")
        self.norms = W.HTML()
        # the attack's trajectory (iterative gradient attacks): Play + slider over the recorded steps
        self.trajectory: Any = None
        self.play = W.Play(value=1, min=1, max=1, step=1, interval=500, description="play", disabled=True)
        self.play.add_class("advviz-traj-play")
        self.step = W.IntSlider(value=1, min=1, max=1, description="step", continuous_update=True, disabled=True,
                                layout=W.Layout(width="380px"))
        self.step.add_class("advviz-traj-step")
        W.jslink((self.play, "value"), (self.step, "value"))
        self.step_strip = W.HTML()
        self.step_img = R.ImageSlot("run an iterative attack (PGD, BIM, MI-FGSM, DI²-FGSM, CFR) to step through "
                                    "its iterations", size=SLOT, css_class="advviz-traj-image")
        self.step_info = W.HTML()
        self.step_info.add_class("advviz-traj-info")
        self.traj_chart = W.HTML()
        self.step.observe(self._on_step, names="value")
        self.attack.observe(self._on_attack, names="value")
        self.run_button.on_click(self._on_run)
        state.observe(self._on_image, "image")
        state.observe(self._on_model, "model")
        state.observe(self._on_adv, "adversarial")

        super().__init__(children=[
            R.row(self.attack, self.target),
            self.describe,
            self.controls_box,
            R.row(self.run_button, self.progress, self.status),
            self.result_title,
            R.row(R.captioned(self.original, "original"), R.captioned(self.adversarial, "adversarial"),
                  W.VBox([self.amplified_caption, self.amplified, self.amplified_scale],
                         layout=W.Layout(flex="0 0 auto")),
                  R.captioned(self.heatmap, "signed change δ = x_adv − x", below=self.heatmap_scale)),
            R.row(self.bars, self.norms),
            W.HTML("<b>attack trajectory</b> — every iteration, recorded by <code>advviz.attacks.record</code>"),
            R.row(self.play, self.step),
            self.step_strip,
            R.row(self.step_img, self.traj_chart, self.step_info),
            self.errors,
        ])
        self._build_controls()
        self._update_targets()

    # ------------------------------------------------------------------------------------ controls
    def _build_controls(self) -> None:
        spec = attacks.get(self.attack.value)
        start = {**spec.defaults(), **(dict(spec.quick) if self.quick else {}),
                 **budget_overrides(spec, self.state.dataset)}
        self.controls = ParamControls(widened_params(spec, start), start, skip=("targeted",))
        self.controls_box.children = [self.controls]
        self.target.disabled = not spec.targeted
        if not spec.targeted:
            self.target.value = -1
        norm = {"linf": "ℓ∞", "l2": "ℓ2", "l0": "ℓ0", "patch": "patch"}.get(spec.norm, spec.norm)
        self.describe.value = (f'<div style="font-size:12px;color:#555">{html.escape(spec.description)} '
                               f"— threat model {norm}{' — ' + html.escape(spec.paper) if spec.paper else ''}</div>")

    def _update_targets(self) -> None:
        names = self.state.classes
        self.target.options = [("untargeted", -1)] + [(self.state.class_name(i), i) for i in range(len(names))]
        self.target.value = -1

    def values(self) -> dict[str, Any]:
        """The keyword arguments the attack will get (function units, e.g. eps on the [0, 1] scale)."""
        return self.controls.values()

    # ------------------------------------------------------------------------------------ running
    def run(self, *, wait: bool | None = None) -> None:
        """Run the selected attack on the current image (as the Run button does).

        Args:
            wait: block until the attack finished (default: ``not background``).
        """
        if self.running:
            raise RuntimeError("an attack is already running; wait for it to finish")
        st = self.state
        spec = attacks.get(self.attack.value)
        kwargs = self.values()
        x = st.batch()
        before = st.predict()
        targeted = spec.targeted and self.target.value != -1
        if targeted:
            y = torch.tensor([int(self.target.value)], device=st.device)
            kwargs["targeted"] = True
        else:
            y = st.label_tensor(st.y if st.y is not None else before.label)
        self.errors.clear()
        self.run_button.disabled = True
        self._clear_result()  # nothing of the previous run stays on screen while this one runs
        self.progress.layout.visibility = "visible"
        self.progress.value = 0.0
        self.progress.bar_style = "info"
        self.status.value = f"running {html.escape(spec.name)}…"
        self.jobs.start(self._attack, name=spec.name,
                        inputs={"spec": spec, "x": x, "y": y, "kwargs": kwargs, "before": before, "targeted": targeted,
                                "true": st.y},
                        done=self._show, dropped=self._dropped, failed=self._failed, ended=self._ended)
        if wait:
            self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running attack (if any) finished and its threads are joined; ``False`` on timeout."""
        return self.jobs.wait(timeout)

    @property
    def running(self) -> bool:
        """Whether an attack is running."""
        return self.jobs.running

    def _on_tick(self, job: Job, elapsed: float) -> None:
        """The progress ticker's update (the runner stops it before the final status is written)."""
        if job.finished or job.outcome is not None:
            return  # a late tick writes nothing
        self.progress.value = 1.0 - 1.0 / (1.0 + elapsed / 5.0)  # grows towards 1, never claims to be done
        reason = job.stale()
        note = f" — {reason}: this result will be dropped" if reason else ""
        self.status.value = f"running {html.escape(job.name)}… {elapsed:.1f} s{note}"

    def _final_status(self, text: str, style: str) -> None:
        self.status.value = text
        self.progress.bar_style = style

    def _attack(self, job: Job) -> dict[str, Any]:
        """The work (in the worker thread): the attack on the image and model the job started with."""
        inp = job.inputs
        spec = inp["spec"]
        t0 = time.perf_counter()
        traj = None
        if spec.recordable:  # the same attack, its iterates kept
            traj = record(spec.name, job.model, inp["x"], inp["y"], **inp["kwargs"])
            x_adv = traj.x_adv.unsqueeze(0).to(inp["x"].device)
        else:
            x_adv = spec(job.model, inp["x"], inp["y"], **inp["kwargs"])
        return {"x_adv": x_adv, "trajectory": traj, "seconds": time.perf_counter() - t0}

    def _failed(self, job: Job, exc: BaseException) -> None:
        self._final_status("failed", "danger")

    def _ended(self, job: Job) -> None:
        self.run_button.disabled = False
        self.progress.value = 1.0

    def _clear_result(self) -> None:
        """Empty the result panel (images, bars, norms, scales, trajectory)."""
        self.last_result = None
        self._show_trajectory(None)
        for img in (self.adversarial, self.amplified, self.heatmap):
            img.value = b""
        self.bars.value = self.norms.value = self.heatmap_scale.value = self.amplified_scale.value = ""
        self.result_title.value = ""
        self.amplified_caption.value = "<b>perturbation (amplified)</b>"

    def _dropped(self, job: Job, reason: str) -> None:
        """The model or the image changed while the attack ran: nothing of it is shown for the new state."""
        self._clear_result()
        what = "model" if reason == CHANGED["model"] else "image"
        self._final_status(f"dropped: {reason} while {html.escape(job.name)} ran; run it again", "warning")
        self.errors.message(f"The {job.name} result was dropped: {reason} while the attack ran, and the result "
                            f"belonged to the old {what}. Press Run to attack the current {what}.", kind="warning")

    def _show(self, job: Job, out: dict[str, Any]) -> None:
        """Show the result (the runner calls it under the state's lock, only if the state did not change)."""
        st = self.state
        inp = job.inputs
        x, x_adv, secs = inp["x"], out["x_adv"], out["seconds"]
        before = inp["before"]
        after = st.predict(x_adv[0].cpu())
        norms = metrics.lp_norms(x, x_adv)
        s = float(metrics.ssim(x, x_adv))
        self.original.value = R.png(R.to_uint8(x[0]))
        self.adversarial.value = R.png(R.to_uint8(x_adv[0]))
        delta = explain.signed_perturbation(x, x_adv)
        peak = float(delta.abs().max())
        self.amplified.value = R.png(R.to_uint8(explain.amplify(delta)[0]))
        self.amplified_caption.value = (f"<b>perturbation amplified ×{0.5 / peak:.0f}</b>" if peak > 0 else
                                        "<b>perturbation (none: the image is unchanged)</b>")
        self.amplified_scale.value = (R.colorbar_html("gray", -peak * 255, peak * 255, fmt="{:+.1f}", width=SLOT,
                                                      label="change per channel (/255); grey: none")
                                      if peak > 0 else "")
        mean_delta = delta[0].mean(0)
        top = float(mean_delta.abs().max())
        self.heatmap.value = R.png(R.signed_map(mean_delta, top))
        self.heatmap_scale.value = R.colorbar_html("RdBu_r", -top * 255, top * 255, fmt="{:+.1f}",
                                                   label="δ per pixel (/255), mean over channels")
        self.bars.value = R.bars_svg([("before", before.probs.tolist()), ("after", after.probs.tolist())],
                                     st.classes, highlight=st.y)
        y0 = int(inp["y"][0])
        success = (after.label == y0) if inp["targeted"] else (after.label != y0)
        true = inp["true"]
        already = not inp["targeted"] and true is not None and before.label != true
        if inp["targeted"]:
            verdict, answer = "target reached", "yes" if success else "no"
        elif already:
            verdict, answer = "fooled", (f"already misclassified before the attack (true label "
                                         f"{html.escape(st.class_name(true))})")
        elif true is None:
            verdict, answer = "prediction changed", ("yes" if success else "no") + " (true label unknown)"
        else:
            verdict, answer = "fooled", "yes" if success else "no"
        name = inp["spec"].name
        self.result_title.value = (f'<div style="font-family:sans-serif;font-size:13px"><b>result of '
                                   f"{html.escape(name)}</b> ({html.escape(_settings(inp['kwargs']))})</div>")
        self.norms.value = (
            '<table class="advviz-norms" style="font-family:sans-serif;font-size:13px">'
            f"<tr><td>attack</td><td><b>{html.escape(name)}</b></td></tr>"
            f"<tr><td>prediction</td><td>{html.escape(st.class_name(before.label))} ({before.confidence:.1%}) → "
            f"<b>{html.escape(st.class_name(after.label))}</b> ({after.confidence:.1%})</td></tr>"
            f"<tr><td>{verdict}</td><td>{answer}</td></tr>"
            f"<tr><td>ℓ0 (changed elements)</td><td>{norms['l0']:.0f}</td></tr>"
            f"<tr><td>ℓ1</td><td>{norms['l1']:.3f}</td></tr>"
            f"<tr><td>ℓ2</td><td>{norms['l2']:.4f}</td></tr>"
            f"<tr><td>ℓ∞</td><td>{norms['linf']:.4f} ({norms['linf'] * 255:.1f}/255)</td></tr>"
            f"<tr><td>SSIM</td><td>{s:.4f}</td></tr>"
            f"<tr><td>time</td><td>{secs:.2f} s</td></tr></table>")
        self._final_status(f"done in {secs:.2f} s", "success")
        self.last_result = {"attack": inp["spec"].name, "params": dict(inp["kwargs"]), "seconds": secs,
                            "before": before.label, "after": after.label, "success": bool(success),
                            "already_misclassified": already, "ssim": s, **norms}
        self._show_trajectory(out["trajectory"])
        st.set_adversarial(x_adv[0], attack=inp["spec"].name)

    # ------------------------------------------------------------------------------------ trajectory
    def _show_trajectory(self, traj: Any) -> None:
        """Load a :class:`~advviz.attacks.trajectory.Trajectory` into the scrubber (``None`` clears it)."""
        self.trajectory = traj
        if traj is None or not traj.frames:
            self.play.disabled = self.step.disabled = True
            self.step_strip.value = self.traj_chart.value = ""
            self.step_img.value = b""
            self.step_info.value = ('<span style="font-size:12px;color:#555">this attack has no iterations to '
                                    "step through</span>" if traj is None and self.last_result is not None else "")
            return
        n = len(traj.frames)
        flip = traj.flip_step
        self.play.disabled = self.step.disabled = False
        self.play.max = self.step.max = n
        cells = []
        for f in traj.frames:
            flipped = (f.prediction == traj.y) if traj.targeted else (f.prediction != traj.y)
            edge = "2px solid #000" if f.step == flip else "1px solid #fff"
            cells.append(f'<div title="step {f.step}: class {f.prediction}" style="flex:1;height:12px;border:{edge};'
                         f'background:{"#c0392b" if flipped else "#27ae60"}"></div>')
        where = (f"the prediction flips at step <b>{flip}</b> of {n}" if flip is not None else
                 f"the prediction does not flip in {n} steps")
        self.step_strip.value = (
            '<div class="advviz-traj-strip" style="font-family:sans-serif;font-size:12px;width:380px">'
            f'<div style="display:flex;margin-left:0">{"".join(cells)}</div>'
            f'<div>green: still {"not the target" if traj.targeted else "the true class"}; red: '
            f'{"the target reached" if traj.targeted else "fooled"} — {where}</div></div>')
        k = flip if flip is not None else n
        if self.step.value == k:
            self._render_step(k)
        else:
            self.step.value = k  # renders the step (its observer)

    def _draw_chart(self, current: int) -> None:
        """Loss and margin per step, the flip dashed and the step shown marked (a solid line and dots)."""
        traj = self.trajectory
        steps = [f.step for f in traj.frames]
        self.traj_chart.value = R.line_svg(
            [0] + steps, [("loss (cross-entropy to y)", [float("nan")] + [f.loss for f in traj.frames]),
                          ("margin (logit of y − best other)", [traj.clean_margin] + [f.margin for f in traj.frames])],
            xlabel="step (0 = the clean image)", ylabel="value",
            title=f"loss and margin per step (step {current} shown" +
                  (f", flip at {traj.flip_step})" if traj.flip_step is not None else ")"),
            mark=traj.flip_step, current=current)

    def _render_step(self, k: int) -> None:
        traj = self.trajectory
        if traj is None or not 1 <= k <= len(traj.frames):
            return
        f = traj.frames[k - 1]
        st = self.state
        self._draw_chart(k)
        self.step_img.value = R.png(R.to_uint8(f.x_adv))
        self.step_info.value = (
            '<table class="advviz-traj-table" style="font-family:sans-serif;font-size:13px">'
            f"<tr><td>step</td><td><b>{f.step}</b> of {len(traj.frames)}</td></tr>"
            f"<tr><td>prediction</td><td>{html.escape(st.class_name(f.prediction))}</td></tr>"
            f"<tr><td>margin</td><td>{f.margin:+.3f}</td></tr>"
            f"<tr><td>loss</td><td>{f.loss:.3f}</td></tr>"
            f"<tr><td>ℓ∞</td><td>{f.linf:.4f} ({f.linf * 255:.1f}/255)</td></tr>"
            f"<tr><td>ℓ2</td><td>{f.l2:.4f}</td></tr></table>")

    @guarded
    def _on_step(self, change: dict[str, Any]) -> None:
        self._render_step(int(change["new"]))

    # ------------------------------------------------------------------------------------ callbacks
    @guarded
    def _on_run(self, _button: W.Button | None = None) -> None:
        self.run()

    @guarded
    def _on_attack(self, change: dict[str, Any]) -> None:
        self.errors.clear()
        self._build_controls()

    @guarded
    def _on_adv(self, state: ExplorerState) -> None:
        """Another tab made the explorer's adversarial image: the panel says whose result it shows."""
        mine = self.last_result["attack"] if self.last_result else None
        if mine is None or state.x_adv is None or state.attack == mine:
            return
        self.result_title.value = (
            '<div style="font-family:sans-serif;font-size:13px"><b>result of '
            f"{html.escape(mine)}</b> ({html.escape(_settings(self.last_result['params']))}) — the explorer's "
            f"adversarial image is now <b>{html.escape(state.attack)}</b>'s (made in another tab); the other tabs "
            "show that one</div>")

    @guarded
    def _on_image(self, state: ExplorerState) -> None:
        for img in (self.original, self.adversarial, self.amplified, self.heatmap):
            img.value = b""
        self.bars.value = self.norms.value = self.heatmap_scale.value = self.amplified_scale.value = ""
        self.result_title.value = ""
        self.amplified_caption.value = "<b>perturbation (amplified)</b>"
        if not self.running:
            self.last_result = None
            self._show_trajectory(None)
            self.status.value = ""
            self.progress.layout.visibility = "hidden"
        if state.x is not None:
            self.original.value = R.png(R.to_uint8(state.x))

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        self._update_targets()
        self._build_controls()  # the new dataset's budgets (a running attack keeps the settings it started with)
        self._on_image(state)
