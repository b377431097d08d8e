"""PurifierLab: apply a registered purifier to the current (attacked) image, live."""

from __future__ import annotations

import functools
import html
import time
from typing import Any

import ipywidgets as W
import torch

from advviz import artifacts, defenses
from advviz.defenses import pix2pix, uddn
from advviz.widgets import _render as R
from advviz.widgets._controls import ParamControls
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._state import ExplorerState

__all__ = ["PurifierLab", "purifier_fit", "OPTION_MEANINGS", "MEASURED", "measured_table"]

SLOT = 180

#: One line per option value of the learned purifiers' menus: what choosing it means.
OPTION_MEANINGS: dict[str, dict[str, str]] = {
    "attack": {
        "fgsm": "fgsm: trained to undo FGSM (one step, 8/255) noise made on ResNet-20",
        "pgd": "pgd: trained to undo PGD-10 (8/255, step 2/255) noise made on ResNet-20",
    },
    "config": {
        "full": "full: the weights shipped with advviz (10,000 training pairs)",
        "quick": "quick: a small recipe (1,000 pairs) trained here on first use — takes minutes the first time",
    },
}

#: Accuracy of ResNet-20 behind each shipped purifier (default options besides ``attack``):
#: clean, FGSM 8/255, PGD-10 8/255 (step 2/255, random start, seed 0), the attacks made on
#: ResNet-20 alone; 256 JPEG CIFAR-10 test images (``data.sample(test, 256, seed=0)``). Keys: the
#: weights' record name ("none": no purifier). The FGSM column agrees with advviz/weights/README.md;
#: ``tests/test_widgets_explorer.py::test_measured_purifier_table`` re-measures two rows.
MEASURED: dict[str, tuple[float, float, float]] = {
    "none": (0.816, 0.059, 0.000),
    "cgan_fgsm_cifar10": (0.766, 0.336, 0.379),
    "cgan_pgd_cifar10": (0.773, 0.285, 0.320),
    "pix2pix_fgsm_cifar10": (0.789, 0.246, 0.316),
    "pix2pix_pgd_cifar10": (0.766, 0.250, 0.285),
    "uddn_resnet20_cifar10": (0.824, 0.664, 0.668),
    "dae_resnet20_cifar10": (0.781, 0.348, 0.535),
}
MEASURED_SOURCE = "ResNet-20 accuracy on 256 JPEG CIFAR-10 test images (seed 0)"
#: The model and threat model behind :data:`MEASURED`.
MEASURED_MODEL = "resnet20_cifar10"
MEASURED_THREAT = ("oblivious threat model: FGSM (8/255) and PGD-10 (8/255, step 2/255, random start) made on "
                   "ResNet-20 alone, then purified and classified")


def measured_table(current: str | None = None, *, same: bool = False) -> str:
    """:data:`MEASURED` as one HTML table, purifier × clean / FGSM / PGD-10, with its threat model and data.

    ``current`` (the explorer's model's display name) adds whether the numbers are this model's
    (``same``: it is the store's :data:`MEASURED_MODEL`).
    """
    rows = "".join(
        f"<tr><td>{html.escape(k if k != 'none' else 'no purifier')}</td>"
        + "".join(f'<td style="text-align:right;padding:0 6px">{v:.3f}</td>' for v in vals) + "</tr>"
        for k, vals in MEASURED.items())
    whose = ("" if current is None else " — the current model's numbers" if same else
             f" — measured for ResNet-20, not for {html.escape(current)}")
    return ('<details class="advviz-purifier-table" style="font-family:sans-serif;font-size:12px;max-width:100%">'
            f"<summary>measured accuracy behind each purifier{whose}</summary>"
            '<table style="border-collapse:collapse"><tr><th style="text-align:left">purifier (weights)</th>'
            "<th>clean</th><th>FGSM</th><th>PGD-10</th></tr>" + rows + "</table>"
            f'<div style="color:#555">{html.escape(MEASURED_SOURCE)}; {html.escape(MEASURED_THREAT)}. JPEG has no '
            "row: it has no weights; compare it on your images.</div></details>")


def purifier_fit(name: str, input_size: tuple[int, int, int]) -> str | None:
    """Why purifier ``name`` cannot take the current model's images (``None`` when it can).

    Asks the purifier itself: a zero batch of ``input_size`` with its default options; the
    purifiers refuse input they were not trained for with a ``ValueError`` whose message is
    the reason. A learned purifier whose weights are not on this machine is not run (that
    would train it): it fits colour images, and refuses others before loading anything.
    """
    spec = defenses.get(name)
    rec = _record(name, spec.defaults())
    if rec is not None and not rec["available"] and input_size[0] == 3:
        return None
    return _fit(name, tuple(input_size))


@functools.lru_cache(maxsize=64)
def _fit(name: str, input_size: tuple[int, int, int]) -> str | None:
    """:func:`purifier_fit` of a purifier that can run here (one zero batch; cached per size)."""
    spec = defenses.get(name)
    try:
        spec(torch.zeros(1, *input_size))
    except ValueError as exc:
        return str(exc).split(";")[0]
    except Exception as exc:  # noqa: BLE001 - any failure makes it unusable here; say why
        return f"it cannot run here ({type(exc).__name__}: {exc})"
    return None


def _record(name: str, values: dict[str, Any]) -> dict[str, Any] | None:
    """The training record of a learned purifier for these options, without training anything
    (the artefact store says whether its file is on disk, and which file it is)."""
    config = values.get("config", "full")
    if name in ("cgan", "pix2pix"):
        wname = pix2pix.artifact_name(name, values.get("attack", "fgsm"), config)
    elif name in ("uddn", "dae"):
        wname = uddn.artifact_name(name, config)
    else:
        return None
    if not artifacts.status(wname)["present"]:
        return {"name": wname, "available": False}
    if name in ("cgan", "pix2pix"):
        _, rec = pix2pix.load_purifier(name, attack=values.get("attack", "fgsm"), config=config)
    else:
        _, rec = uddn.load_denoiser(name, config=config)
    return {**rec, "available": True}


class PurifierLab(W.VBox):
    """Purifier dropdown (``advviz.defenses.list_purifiers()``), its controls, and the result.

    The menu offers the purifiers that take the current model's images; the others stay listed,
    marked "not for this model", and choosing one says why instead of running it (Apply is
    disabled; the input slot still shows the picked image); when only one fits, the tab says why
    and what to set for the others. The input is
    the adversarial image when there is one, else the clean image; the "input" toggle always
    says which one is shown (it switches to "clean" when no attack has run on this image). With
    "live" on, every control change re-purifies and re-predicts. Each option of the learned
    purifiers is explained in one line, with the purifier's training record and its measured
    accuracy (:data:`MEASURED`, also shown as one table: :func:`measured_table`).

    Args:
        state: the shared :class:`ExplorerState`.
        purifier: initial purifier name (default ``"jpeg"``).
        live: re-run on every change.
    """

    def __init__(self, state: ExplorerState, *, purifier: str | None = None, live: bool = True) -> None:
        self.state = state
        self.errors = ErrorArea()
        self.last_result: dict[str, Any] | None = None
        self.unfit: dict[str, str] = {}
        self._quiet = False
        names = defenses.list_purifiers()
        if not names:
            raise RuntimeError("no purifier is registered (advviz.defenses.list_purifiers() is empty)")
        self.purifier = W.Dropdown(options=names, value=purifier or ("jpeg" if "jpeg" in names else names[0]),
                                   description="purifier", layout=W.Layout(width="340px"))
        self.purifier.add_class("advviz-purifier-name")
        self.source = W.ToggleButtons(options=["adversarial", "clean"], value="clean", description="input")
        self.source.add_class("advviz-purifier-source")
        self.live = W.Checkbox(value=live, description="live", indent=False, layout=W.Layout(width="80px"))
        self.apply_button = W.Button(description="Apply", icon="magic")
        self.controls = ParamControls([])
        self.controls_box = W.VBox()
        self.describe = W.HTML()
        self.meanings = W.HTML()
        self.meanings.add_class("advviz-purifier-meanings")
        self.record = W.HTML()
        self.record.add_class("advviz-purifier-record")
        self.input_img = R.ImageSlot("pick an image", size=SLOT)
        self.output_img = R.ImageSlot("the purified image appears here", size=SLOT, css_class="advviz-purified")
        self.input_caption = W.HTML("<b>input</b>")
        self.bars = W.HTML()
        self.summary = W.HTML()
        self.table = W.HTML()
        self.fit_note = W.HTML()
        self.fit_note.add_class("advviz-purifier-fit-note")
        self.purifier.observe(self._on_purifier, names="value")
        self.source.observe(self._on_change, names="value")
        self.apply_button.on_click(self._on_apply)
        state.observe(self._on_state, "image")
        state.observe(self._on_state, "adversarial")
        state.observe(self._on_model, "model")
        super().__init__(children=[
            R.row(self.purifier, self.live, self.apply_button),
            self.fit_note,
            self.describe,
            self.source,
            self.controls_box,
            self.meanings,
            self.record,
            R.row(W.VBox([self.input_caption, self.input_img], layout=W.Layout(flex="0 0 auto")),
                  R.captioned(self.output_img, "purified"), self.bars),
            self.summary,
            self.table,
            self.errors,
        ])
        self._refresh_menu()
        self._build_controls()
        if state.x is not None:  # live: purified now; else the picked image waits for Apply
            self._on_state(state)

    # ------------------------------------------------------------------------------------ menu
    def _refresh_menu(self) -> None:
        """Mark the purifiers that cannot take the current model's images (the reason is kept)."""
        size = tuple(self.state.input_size)
        self.unfit = {}
        for name in defenses.list_purifiers():
            why = purifier_fit(name, size)  # type: ignore[arg-type]
            if why is not None:
                self.unfit[name] = why
        options = [(n if n not in self.unfit else f"{n} — not for this model", n) for n in defenses.list_purifiers()]
        fits = [n for _, n in options if n not in self.unfit]
        c, h, w = size
        self.fit_note.value = ("" if len(fits) > 1 else
                               f'<div style="font-size:12px;color:#9a7d0a">Only {", ".join(fits) or "no purifier"} '
                               f"fits {html.escape(self.state.model_name)}'s {c}x{h}x{w} images: the learned "
                               "purifiers (cgan, pix2pix, uddn, dae) were trained on CIFAR-10 colour images. To compare "
                               "them (the guided tour's Task 3), use CIFAR-10 with ResNet-20: set ADVVIZ_DATA and "
                               "ADVVIZ_WEIGHTS (README, “Data and weights”) and restart the kernel.</div>")
        rec = self.state.info.record
        self.table.value = measured_table(self.state.model_name, same=rec is not None and rec.name == MEASURED_MODEL)
        cur = self.purifier.value
        self._quiet = True
        try:
            self.purifier.options = options
            if cur in self.unfit:
                fits = [n for _, n in options if n not in self.unfit]
                cur = "jpeg" if "jpeg" in fits else (fits[0] if fits else cur)
            self.purifier.value = cur
        finally:
            self._quiet = False

    def _build_controls(self) -> None:
        spec = defenses.get(self.purifier.value)
        unfit = self.purifier.value in self.unfit
        self.apply_button.disabled = unfit
        self.output_img.placeholder = (f"{self.purifier.value} does not take this model's images" if unfit else
                                       "the purified image appears here")
        self.controls = ParamControls(spec.params, spec.defaults())
        self.controls.observe_all(self._on_change)
        self.controls_box.children = [self.controls]
        self.describe.value = (f'<div style="font-size:12px;color:#555">{html.escape(spec.description)}'
                               f"{' — ' + html.escape(spec.paper) if spec.paper else ''}</div>")
        lines = []
        for p in spec.params:
            for _, text in OPTION_MEANINGS.get(p.name, {}).items():
                lines.append(html.escape(text))
            if p.name not in OPTION_MEANINGS and p.help:
                lines.append(f"{html.escape(p.name)}: {html.escape(p.help)}")
        self.meanings.value = ('<div style="font-size:12px;color:#333;line-height:1.5">' + "<br>".join(lines) + "</div>"
                               if lines else "")
        self._show_record()

    def _show_record(self) -> None:
        if self.purifier.value in self.unfit:
            self.record.value = ""
            return
        rec = _record(self.purifier.value, self.controls.values())
        if rec is None:
            self.record.value = ""
            return
        name = rec["name"]
        if not rec["available"]:
            self.record.value = (f'<div style="font-size:12px;color:#9a7d0a">{html.escape(name)}: not trained yet on '
                                 "this machine — the first run trains it (minutes; the notebook waits)</div>")
            return
        parts = [f"<b>{html.escape(name)}</b>"]
        if name in MEASURED:
            c, f, p = MEASURED[name]
            parts.append(f"{MEASURED_SOURCE}: clean {c:.1%}, FGSM {f:.1%}, PGD-10 {p:.1%} "
                         f"(no purifier: {MEASURED['none'][0]:.1%} / {MEASURED['none'][1]:.1%} / "
                         f"{MEASURED['none'][2]:.1%})")
        hist = rec.get("history") or []
        if hist:
            last = hist[-1]
            keys = [k for k in ("g_l1", "loss", "accuracy") if k in last]
            parts.append(f"training: {len(hist)} epoch(s), last epoch " +
                         ", ".join(f"{k} {last[k]:.3f}" for k in keys))
        self.record.value = '<div style="font-size:12px;color:#333">' + " — ".join(parts) + "</div>"

    # ------------------------------------------------------------------------------------ running
    def _input(self) -> tuple[torch.Tensor | None, bool]:
        st = self.state
        use_adv = self.source.value == "adversarial" and st.x_adv is not None
        return (st.x_adv if use_adv else st.x), use_adv

    def _sync_source(self) -> None:
        """The toggle shows what is purified: "adversarial" when an attack result exists, else "clean"."""
        want = "adversarial" if self.state.x_adv is not None else "clean"
        if self.source.value != want:
            self._quiet = True
            try:
                self.source.value = want
            finally:
                self._quiet = False

    def _clear(self, note: str = "") -> None:
        """Empty the result; the input slot shows the image that would be purified (when there is one)."""
        x_in, _ = self._input()
        fits = x_in is not None and tuple(x_in.shape) == tuple(self.state.input_size)
        self.input_img.value = R.png(R.to_uint8(x_in)) if fits else b""
        self.output_img.value = b""
        self.bars.value = ""
        self.summary.value = note
        self.last_result = None

    def apply(self) -> torch.Tensor | None:
        """Purify the chosen input with the current settings; show it and the predictions.

        Returns ``None`` (and says why) when there is no image or the purifier does not fit the model.
        """
        st = self.state
        if st.x is None:
            self._clear()
            return None
        if self.purifier.value in self.unfit:
            self._clear()  # the input slot keeps the picked image (never "pick an image")
            self.errors.message(f"{self.purifier.value} is not available for {st.model_name}: "
                                f"{self.unfit[self.purifier.value]}. Choose another purifier.", kind="warning")
            return None
        x_in, use_adv = self._input()
        assert x_in is not None
        if self.source.value == "adversarial" and not use_adv:
            self._sync_source()
        spec = defenses.get(self.purifier.value)
        t0 = time.perf_counter()
        out = spec(x_in.unsqueeze(0).to(st.device), **self.controls.values())
        secs = time.perf_counter() - t0
        before = st.predict(x_in)
        after = st.predict(out[0].cpu())
        kind = "adversarial" if use_adv else "clean"
        self.input_caption.value = f"<b>input ({kind}{': ' + html.escape(st.attack) if use_adv else ''})</b>"
        self.input_img.value = R.png(R.to_uint8(x_in))
        self.output_img.value = R.png(R.to_uint8(out[0]))
        self.bars.value = R.bars_svg([(f"{kind} input", before.probs.tolist()), ("purified", after.probs.tolist())],
                                     st.classes, highlight=st.y)
        restored = use_adv and st.y is not None and after.label == st.y and before.label != st.y
        label = f" from {html.escape(st.attack)}" if use_adv else ""
        self.summary.value = (
            '<div class="advviz-purify-summary" style="font-family:sans-serif;font-size:13px">'
            f"input{label}: {html.escape(st.class_name(before.label))} ({before.confidence:.1%}) → purified: "
            f"<b>{html.escape(st.class_name(after.label))}</b> ({after.confidence:.1%})"
            f"{' — true label restored' if restored else ''} in {secs * 1000:.0f} ms</div>")
        self.last_result = {"purifier": spec.name, "params": self.controls.values(), "input": kind,
                            "before": before.label, "after": after.label, "restored": restored}
        return out

    # ------------------------------------------------------------------------------------ callbacks
    @guarded
    def _on_purifier(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        self.errors.clear()
        self._build_controls()
        if self.live.value:
            self.apply()

    @guarded
    def _on_change(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        if change.get("owner") is not self.source:
            self._show_record()
        if self.live.value:
            self.errors.clear()
            self.apply()

    @guarded
    def _on_apply(self, _button: W.Button | None = None) -> None:
        self.errors.clear()
        self.apply()

    @guarded
    def _on_state(self, state: ExplorerState) -> None:
        self._sync_source()
        if state.x is None or tuple(state.x.shape) != tuple(state.input_size):
            self._clear()
            return
        if self.live.value:
            self.apply()
        else:
            self._clear("press Apply to purify the current image")

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        self.errors.clear()
        before = self.purifier.value
        self._refresh_menu()
        if self.purifier.value != before:
            self._build_controls()
            self.errors.message(f"{before} is not for {state.model_name} ({self.unfit[before]}); "
                                f"switched to {self.purifier.value}.", kind="info")
        self._on_state(state)
