"""TwoStreamView: the two-stream detector (paper 003) on one image, and Algorithm 2's blacklist simulation.

Detector tab: pick an image of a small pool, optionally attack it (type I on the high stream,
type II on the low stream, :mod:`advviz.defenses.twostream`), and see what each stream sees
(the upsampled and the 32x32 image), each stream's top-k probabilities, and Algorithm 1's
verdict; the p1 / p2 sliders re-run Algorithm 1 on the cached probabilities (no forward pass).

Blacklist tab: Algorithm 2 on a simulated network whose clients draw detection outcomes from
the pool's per-image verdicts (clean images for normal clients, the chosen attack's images for
adversarial clients); sliders set the client mix and the counter constants.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import torch
from matplotlib.figure import Figure

from advviz.defenses import twostream as ts
from advviz.papers import twostream as paper
from advviz.papers.twostream import attack_configs
from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded

__all__ = ["ATTACK_CHOICES", "TwoStreamState", "TwoStreamView"]

ATTACK_CHOICES = ["none"] + [f"I: {a}" for a in paper.TYPE_I] + [f"II: {a}" for a in paper.TYPE_II]
_IMG = {"width": "170px", "height": "170px", "object_fit": "contain"}


def _parse(choice: str) -> tuple[str, str]:
    if choice == "none":
        return "none", "none"
    kind, name = choice.split(": ")
    return kind, name


class TwoStreamState:
    """What the view shows: the detector, an image pool and the cached results (no math here).

    Args:
        detector: a :class:`~advviz.defenses.twostream.TwoStream`.
        x: ``(N, C, H, W)`` pool of images in [0, 1]. y: ``(N,)`` common labels.
        classes: names of the common labels.
        configs: attack options per type (default: the quick settings of the paper reproduction).
    """

    def __init__(self, detector: ts.TwoStream, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str], *,
                 configs: dict[str, dict[str, dict[str, Any]]] | None = None, seed: int = 0) -> None:
        self.detector = detector
        self.x, self.y = x, y
        self.classes = list(classes)
        self.configs = configs or attack_configs(True)
        self.seed = seed
        self._adv: dict[str, torch.Tensor] = {}      # choice -> adversarial pool
        self._probs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def images(self, choice: str) -> torch.Tensor:
        """The pool under ``choice`` (``"none"`` or ``"I: fgsm"`` ...), computed once and cached."""
        if choice not in self._adv:
            kind, name = _parse(choice)
            if kind == "none":
                self._adv[choice] = self.x
            elif kind == "I":
                self._adv[choice] = paper.attack_type_i(self.detector, name, self.x, self.y, seed=self.seed,
                                                     **self.configs["I"][name])
            else:
                self._adv[choice] = paper.attack_type_ii(self.detector, name, self.x, self.y, seed=self.seed,
                                                      **self.configs["II"][name])
        return self._adv[choice]

    def probabilities(self, choice: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p_high, p_low)`` of the pool under ``choice`` (cached)."""
        if choice not in self._probs:
            self._probs[choice] = self.detector.probabilities(self.images(choice))
        return self._probs[choice]

    def verdict(self, choice: str, p1: float, p2: float) -> ts.TwoStreamResult:
        """Algorithm 1 on the cached probabilities with thresholds ``p1``, ``p2``."""
        ph, pl = self.probabilities(choice)
        det = self.detector
        return ts.compare(ph, pl, det.mapping, det.low_mapping, p1=p1, p2=p2, k_high=det.k_high, k_low=det.k_low)


class TwoStreamView(W.VBox):
    """Detector view and blacklist simulation around a :class:`TwoStreamState`.

    Args:
        state: the state (detector and image pool).
        index: initial image index.
    """

    def __init__(self, state: TwoStreamState, *, index: int = 0) -> None:
        self.state = state
        self.errors = ErrorArea()
        n = state.x.shape[0]
        self.index = W.IntSlider(value=min(index, n - 1), min=0, max=n - 1, description="image")
        self.attack = W.Dropdown(options=ATTACK_CHOICES, value="none", description="attack")
        self.p1 = W.FloatSlider(value=state.detector.p1, min=0.0, max=1.0, step=0.01, description="p1 (high)")
        self.p2 = W.FloatSlider(value=state.detector.p2, min=0.0, max=1.0, step=0.01, description="p2 (low)")
        self.high_img = W.Image(format="png", layout=W.Layout(**_IMG))
        self.low_img = W.Image(format="png", layout=W.Layout(**_IMG))
        self.bars = W.Image(format="png")
        self.verdict = W.HTML()
        self.pool_summary = W.HTML()
        for w in (self.index, self.attack, self.p1, self.p2):
            w.observe(self._on_change, names="value")
        detector_tab = W.VBox([
            W.HBox([self.index, self.attack]), W.HBox([self.p1, self.p2]),
            W.HBox([W.VBox([W.HTML("high stream input"), self.high_img]),
                    W.VBox([W.HTML("low stream input"), self.low_img]), self.bars]),
            self.verdict, self.pool_summary])

        self.clients = W.IntText(value=10_000, description="clients")
        self.adversarial = W.IntText(value=1_000, description="adversarial")
        self.rounds = W.IntSlider(value=20, min=1, max=100, description="images")
        self.threshold = W.IntSlider(value=3, min=1, max=15, description="blacklist at")
        self.release = W.IntSlider(value=0, min=0, max=14, description="release at")
        self.cc_max = W.IntSlider(value=15, min=1, max=30, description="CC max")
        self.sim_attacks = W.SelectMultiple(options=ATTACK_CHOICES[1:], value=(ATTACK_CHOICES[1],),
                                            description="attacks", rows=5)
        self.simulate_button = W.Button(description="simulate", icon="play", button_style="primary")
        self.simulate_button.on_click(self._on_simulate)
        self.plot = W.Image(format="png")
        self.sim_summary = W.HTML()
        blacklist_tab = W.VBox([W.HBox([self.clients, self.adversarial, self.rounds]),
                                W.HBox([self.threshold, self.release, self.cc_max]),
                                W.HBox([self.sim_attacks, self.simulate_button]), self.plot, self.sim_summary])
        self.tabs = W.Tab(children=[detector_tab, blacklist_tab])
        self.tabs.set_title(0, "two-stream detector")
        self.tabs.set_title(1, "blacklist (Algorithm 2)")
        self.last_result: ts.TwoStreamResult | None = None
        self.last_curves: dict[str, paper.BlacklistResult] = {}
        super().__init__([self.errors, self.tabs])
        self.refresh()

    def _on_change(self, change: dict[str, Any]) -> None:
        self.refresh()

    @guarded
    def refresh(self) -> None:
        """Recompute (attack pools are cached) and redraw the detector tab."""
        self.errors.clear()
        st, choice, i = self.state, self.attack.value, self.index.value
        imgs = st.images(choice)
        res = st.verdict(choice, self.p1.value, self.p2.value)
        self.last_result = res
        det = st.detector
        xi = imgs[i:i + 1]
        self.high_img.value = R.png(R.to_uint8(det.high_input(xi)[0]), scale=1 if det.high_size[0] >= 128 else None)
        self.low_img.value = R.png(R.to_uint8(det.low_input(xi)[0]))
        ph, pl = st.probabilities(choice)
        mapped = torch.zeros(len(st.classes))
        mapped.index_add_(0, det.mapping.clamp(min=0), ph[i].cpu() * (det.mapping >= 0).float())
        y = int(st.y[i])
        self.bars.value = R.bars_png([(f"high (top-{det.k_high}, mapped)", mapped.tolist()),
                                      (f"low (top-{det.k_low})", pl[i].cpu().tolist())],
                                     st.classes, top=det.k_high, highlight=y)
        if bool(res.reject[i]):
            text = '<b style="color:#c0392b">REJECTED: adversarial example</b> (no matching pair passes p1/p2)'
        else:
            lab = int(res.labels[i])
            ok = "right" if lab == y else "wrong"
            text = (f'<b style="color:{"#27ae60" if lab == y else "#c0392b"}">accepted: '
                    f"{html.escape(st.classes[lab])}</b> ({ok}; pair {res.pair[i].tolist()})")
        self.verdict.value = f"true label: {html.escape(st.classes[y])} &nbsp; {text}"
        right = (~res.reject & (res.labels == st.y.to(res.labels.device))).float().mean()
        self.pool_summary.value = (f"pool of {len(st.y)} under <i>{html.escape(choice)}</i>: reject "
                                   f"{float(res.reject.float().mean()):.1%}, right {float(right):.1%}")

    @guarded
    def _on_simulate(self, _button: Any = None) -> None:
        self.simulate()

    def simulate(self) -> dict[str, paper.BlacklistResult]:
        """Run Algorithm 2 for each selected attack with the current settings; draw Fig. 5."""
        self.errors.clear()
        st = self.state
        normal = st.verdict("none", self.p1.value, self.p2.value).reject
        kw = {"n_clients": int(self.clients.value), "n_adversarial": int(self.adversarial.value),
              "rounds": int(self.rounds.value), "threshold": int(self.threshold.value),
              "release": int(self.release.value), "cc_max": int(self.cc_max.value), "seed": st.seed}
        curves = {c: paper.simulate_blacklist(normal, st.verdict(c, self.p1.value, self.p2.value).reject, **kw)
                  for c in self.sim_attacks.value}
        fig = Figure(figsize=(6, 3.5), dpi=80, layout="constrained")
        paper.plot_blacklist(curves, ax=fig.subplots())
        self.plot.value = R._fig_png(fig)
        self.last_curves = curves
        self.sim_summary.value = "<br>".join(
            f"{html.escape(c)}: adversarial blacklisted after {kw['rounds']} images {r.adversarial[-1]:.1%}; "
            f"normal {r.normal[-1]:.2%} ({r.normal_ever} ever)" for c, r in curves.items())
        return curves
