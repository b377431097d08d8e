"""AttackLab: pick a registered attack, set its parameters, run it on the current image."""

from __future__ import annotations

import html
import threading
import time
from typing import Any

import ipywidgets as W
import torch

from advviz.widgets import _render as R
from advviz.widgets._controls import ParamControls
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._state import ExplorerState

__all__ = ["AttackLab"]

_IMG = {"width": "180px", "height": "180px", "object_fit": "contain"}


class AttackLab(W.VBox):
    """Attack dropdown (from ``advviz.attacks.list_attacks()``) with controls built from its specs.

    "Run" attacks the current image with the current model: in a worker thread with an
    elapsed-time progress bar (the notebook stays responsive) when ``background=True``, else in
    the calling thread. Shows the original, the adversarial image, the perturbation amplified
    and as a heatmap, prediction bars before/after, the ℓp norms and SSIM, and records the
    adversarial image in the shared state.

    Args:
        state: the shared :class:`ExplorerState`.
        attack: initial attack name (default ``"pgd"`` when registered, else the first).
        background: run attacks in a worker thread.
        quick: start from each attack's ``quick`` overrides (fewer steps) instead of its defaults.
    """

    def __init__(self, state: ExplorerState, *, attack: str | None = None, background: bool = True,
                 quick: bool = False) -> None:
        from advviz import attacks

        self.state = state
        self.errors = ErrorArea()
        self.background = background
        self.quick = quick
        self.last_result: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._done.set()
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
        self.original = W.Image(format="png", layout=W.Layout(**_IMG))
        self.adversarial = W.Image(format="png", layout=W.Layout(**_IMG))
        self.adversarial.add_class("advviz-adv-image")
        self.amplified = W.Image(format="png", layout=W.Layout(**_IMG))
        self.heatmap = W.Image(format="png", layout=W.Layout(**_IMG))
        self.bars = W.Image(format="png")
        self.norms = W.HTML()
        self.attack.observe(self._on_attack, names="value")
        self.run_button.on_click(self._on_run)
        state.observe(self._on_image, "image")
        state.observe(self._on_model, "model")

        def captioned(img: W.Widget, text: str) -> W.VBox:
            return W.VBox([W.HTML(f"<b>{text}</b>"), img])

        super().__init__(children=[
            W.HBox([self.attack, self.target]),
            self.describe,
            self.controls_box,
            W.HBox([self.run_button, self.progress, self.status]),
            W.HBox([captioned(self.original, "original"), captioned(self.adversarial, "adversarial"),
                    captioned(self.amplified, "perturbation (amplified)"), captioned(self.heatmap, "|δ| heatmap")]),
            W.HBox([self.bars, self.norms]),
            self.errors,
        ])
        self._build_controls()
        self._update_targets()

    # ------------------------------------------------------------------------------------ controls
    def _build_controls(self) -> None:
        from advviz import attacks

        spec = attacks.get(self.attack.value)
        start = {**spec.defaults(), **(dict(spec.quick) if self.quick else {})}
        self.controls = ParamControls(spec.params, start, skip=("targeted",))
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
        from advviz import attacks

        if not self._done.is_set():
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
        self.progress.layout.visibility = "visible"
        self.progress.value = 0.0
        self.progress.bar_style = "info"
        self.status.value = f"running {html.escape(spec.name)}…"
        self._done.clear()
        job = {"spec": spec, "x": x, "y": y, "kwargs": kwargs, "before": before, "targeted": targeted}
        if self.background:
            self._thread = threading.Thread(target=self._work, args=(job,), daemon=True, name="advviz-attack")
            self._thread.start()
            ticker = threading.Thread(target=self._tick, daemon=True, name="advviz-attack-progress")
            ticker.start()
            if wait:
                self.wait()
        else:
            self._work(job)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running attack (if any) finished; ``False`` on timeout."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        """Whether an attack is running."""
        return not self._done.is_set()

    def _tick(self) -> None:
        t0 = time.perf_counter()
        while not self._done.wait(0.25):
            el = time.perf_counter() - t0
            self.progress.value = 1.0 - 1.0 / (1.0 + el / 5.0)  # grows towards 1, never claims to be done
            self.status.value = f"running {html.escape(self.attack.value)}… {el:.1f} s"

    def _work(self, job: dict[str, Any]) -> None:
        try:
            self._attack(job)  # errors are shown in the widget before anyone is told it finished
        finally:
            self.run_button.disabled = False
            self.progress.value = 1.0
            self._done.set()

    @guarded
    def _attack(self, job: dict[str, Any]) -> None:
        try:
            t0 = time.perf_counter()
            x_adv = job["spec"](self.state.model, job["x"], job["y"], **job["kwargs"])
            secs = time.perf_counter() - t0
            self._show(job, x_adv, secs)
        except BaseException:
            self.status.value = "failed"
            self.progress.bar_style = "danger"
            raise

    def _show(self, job: dict[str, Any], x_adv: torch.Tensor, secs: float) -> None:
        from advviz import explain, metrics

        st = self.state
        x = job["x"]
        before = job["before"]
        after = st.predict(x_adv[0].cpu())
        norms = metrics.lp_norms(x, x_adv)
        s = float(metrics.ssim(x, x_adv))
        self.original.value = R.png(R.to_uint8(x[0]))
        self.adversarial.value = R.png(R.to_uint8(x_adv[0]))
        self.amplified.value = R.png(R.to_uint8(explain.amplify(explain.signed_perturbation(x, x_adv))[0]))
        self.heatmap.value = R.png(R.colorize(explain.perturbation_magnitude(x, x_adv)[0], "hot"))
        self.bars.value = R.bars_png([("before", before.probs.tolist()), ("after", after.probs.tolist())],
                                     st.classes, highlight=st.y)
        y0 = int(job["y"][0])
        success = (after.label == y0) if job["targeted"] else (after.label != y0)
        self.norms.value = (
            '<table class="advviz-norms" style="font-family:sans-serif;font-size:13px">'
            f"<tr><td>prediction</td><td>{html.escape(st.class_name(before.label))} ({before.confidence:.1%}) → "
            f"<b>{html.escape(st.class_name(after.label))}</b> ({after.confidence:.1%})</td></tr>"
            f"<tr><td>{'target reached' if job['targeted'] else 'fooled'}</td><td>{'yes' if success else 'no'}</td></tr>"
            f"<tr><td>ℓ0 (changed elements)</td><td>{norms['l0']:.0f}</td></tr>"
            f"<tr><td>ℓ1</td><td>{norms['l1']:.3f}</td></tr>"
            f"<tr><td>ℓ2</td><td>{norms['l2']:.4f}</td></tr>"
            f"<tr><td>ℓ∞</td><td>{norms['linf']:.4f} ({norms['linf'] * 255:.1f}/255)</td></tr>"
            f"<tr><td>SSIM</td><td>{s:.4f}</td></tr>"
            f"<tr><td>time</td><td>{secs:.2f} s</td></tr></table>")
        self.status.value = f"done in {secs:.2f} s"
        self.progress.bar_style = "success"
        self.last_result = {"attack": job["spec"].name, "params": dict(job["kwargs"]), "seconds": secs,
                            "before": before.label, "after": after.label, "success": bool(success),
                            "ssim": s, **norms}
        st.set_adversarial(x_adv[0], attack=job["spec"].name)

    # ------------------------------------------------------------------------------------ callbacks
    @guarded
    def _on_run(self, _button: W.Button | None = None) -> None:
        self.run()

    @guarded
    def _on_attack(self, change: dict[str, Any]) -> None:
        self.errors.clear()
        self._build_controls()

    @guarded
    def _on_image(self, state: ExplorerState) -> None:
        for img in (self.original, self.adversarial, self.amplified, self.heatmap, self.bars):
            img.value = b""
        self.norms.value = ""
        self.status.value = ""
        self.progress.layout.visibility = "hidden"
        if state.x is not None:
            self.original.value = R.png(R.to_uint8(state.x))

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        self._update_targets()
        self._on_image(state)
