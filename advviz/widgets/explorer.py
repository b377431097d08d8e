"""Explorer: every component around one shared current image and model."""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as W
import torch
from torch import nn

from advviz import artifacts, models
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._jobs import Ticker
from advviz.widgets._state import ExplorerState, available_models, dataset_classes, default_pairing, model_dataset
from advviz.widgets.attack_lab import AttackLab
from advviz.widgets.cfr import CFRView
from advviz.widgets.features import FeatureMapView
from advviz.widgets.picker import ImagePicker
from advviz.widgets.purifier_lab import PurifierLab
from advviz.widgets.robustness import RobustnessView
from advviz.widgets.takeover import TakeoverView
from advviz.widgets.train_panel import TrainPanel

__all__ = ["Explorer", "fast_mode", "needs_first_use_training", "TrainingNotice", "load_model"]

#: The tabs, in order: CFR / Grad-CAM, the attack lab, purifiers, feature maps, where the attack
#: takes over (layer divergence), training, security curves (robustness).
TAB_TITLES = ("CFR", "Attack lab", "Purifiers", "Features", "Takeover", "Train", "Robustness")

#: Each tab title as wide as its text (ipywidgets gives every tab the same width, which cuts the
#: longer titles short when seven tabs share 600 pixels in a 1024-pixel JupyterLab).
TAB_CSS = "<style>.advviz-explorer .widget-tab .lm-TabBar-tab { flex: 0 1 auto !important; }</style>"

#: About how long first-use training takes on a 2-core CPU (seconds), for the progress bar.
#: lenet5_digits: 8.9 s measured in JupyterLab (NOTES.md, "The explorer in a real browser").
EXPECTED_SECONDS = {"lenet5_digits": 10.0, "highres_resnet8_cifar10": 330.0}


def fast_mode() -> bool:
    """True when ``$ADVVIZ_FAST`` is set to a true value (notebook CI: quick attack settings)."""
    return os.environ.get("ADVVIZ_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


def needs_first_use_training(name: str) -> bool:
    """Whether ``models.load(name)`` will train the model now (advviz-trained weights not cached yet)."""
    try:
        return artifacts.status(name)["where"] == "train"
    except KeyError:
        return False


class TrainingNotice(W.VBox):
    """A message and a progress bar shown while a model trains on first use.

    The bar follows the elapsed time against the expected duration (:data:`EXPECTED_SECONDS`;
    it never claims to be done before training returns) and ends on "trained in … s". The
    training runs in the calling thread; the job runner's :class:`~advviz.widgets._jobs.Ticker`
    moves the bar, and is joined before the final message.
    """

    def __init__(self) -> None:
        self.message = W.HTML()
        self.bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info", layout=W.Layout(width="320px"))
        super().__init__([self.message, self.bar], layout=W.Layout(display="none"))
        self.add_class("advviz-first-use")

    def run(self, name: str, load: Callable[[], nn.Module]) -> nn.Module:
        """Call ``load()`` (which trains ``name``) while the notice counts the seconds; return its model."""
        expected = EXPECTED_SECONDS.get(name, 60.0)
        self.layout.display = None
        self.bar.bar_style = "info"
        self.bar.value = 0.0
        what = html.escape(name)
        self.message.value = (f"<b>training {what} on first use</b> (about {expected:.0f} s, once: the weights "
                              "are cached for next time)…")
        t0 = time.perf_counter()

        def tick(el: float) -> None:
            self.bar.value = min(0.95, el / expected)
            self.message.value = (f"<b>training {what} on first use</b> (about {expected:.0f} s, once: the "
                                  f"weights are cached for next time)… {el:.1f} s")

        try:
            with Ticker(tick, name="advviz-first-use"):  # joined on exit: no tick after the final message
                model = load()
        except BaseException:
            self.bar.bar_style = "danger"
            self.message.value = f"<b>training {what} failed</b> (see the error below)"
            raise
        self.bar.value = 1.0
        self.bar.bar_style = "success"
        self.message.value = (f"{what} trained in {time.perf_counter() - t0:.1f} s on first use "
                              "(cached: next time it loads at once)")
        return model


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def load_model(name: str, *, device: str | torch.device | None = None, notice: TrainingNotice | None = None,
               show: bool = False) -> nn.Module:
    """``advviz.models.load(name)``; when it trains on first use, through a :class:`TrainingNotice`.

    Args:
        notice: the notice to use (default: a new one).
        show: display the notice now (in a notebook cell, before the explorer exists).
    """
    if not needs_first_use_training(name):
        return models.load(name, device=device)
    notice = notice or TrainingNotice()
    if show and _in_kernel():
        from IPython.display import display

        display(notice)
    return notice.run(name, lambda: models.load(name, device=device))


class Explorer(W.VBox):
    """A header with the model chooser, the image picker, and tabs: CFR, attacks (with the attack's
    trajectory), purifiers, feature maps, where the attack takes over (layer divergence), training,
    and the security curves of the model and the defended model (robustness).

    Offline with no data it uses the digits and LeNet-5 (trained on first use, about 9 s, with
    a message and a progress bar); with CIFAR-10 and the ResNet-20 weights available
    (``$ADVVIZ_DATA``, ``$ADVVIZ_WEIGHTS``, or a network), CIFAR-10 and ResNet-20.

    Every component follows a model change (from the header's menu or the Train tab's "Use this
    model"): the picker switches to the model's dataset, the attack budgets to the dataset's, the
    purifier menu to what fits the model; the header's menu names the model in use. A result of
    the attack lab or the Robustness tab computed for the model or image before the change is
    dropped, with a message.

    Args:
        model: pretrained entry name (default: :func:`~advviz.widgets._state.default_pairing`).
        dataset: the picker's dataset (default: the model's).
        index: the picker's initial index.
        device: where the model runs (default CPU).
        quick: attack controls start from each attack's ``quick`` settings (default ``$ADVVIZ_FAST``).
        background: AttackLab runs attacks in a worker thread.
    """

    def __init__(self, model: str | None = None, *, dataset: str | None = None, index: int = 0,
                 device: str | torch.device | None = None, quick: bool | None = None,
                 background: bool = True) -> None:
        ds_default, model_default = default_pairing()
        model = model or model_default
        dataset = dataset or model_dataset(model) or ds_default
        self.errors = ErrorArea()
        self.notice = TrainingNotice()
        net = load_model(model, device=device, notice=self.notice, show=True)
        ds = model_dataset(model)
        self.state = ExplorerState(net, model_name=model, classes=dataset_classes(ds) if ds else None, device=device,
                                   dataset=ds)
        quick = fast_mode() if quick is None else quick
        self.picker = ImagePicker(self.state, dataset=dataset, index=index)
        self.cfr = CFRView(self.state)
        self.attack_lab = AttackLab(self.state, background=background, quick=quick)
        self.purifier_lab = PurifierLab(self.state)
        self.features = FeatureMapView(self.state)
        self.train_panel = TrainPanel(self.state)
        self.takeover = TakeoverView(self.state)
        self.robustness = RobustnessView(self.state, picker=self.picker, background=background)
        self._choices = available_models()
        self._quiet = False
        self.model_choice = W.Dropdown(options=self._choices, value=model if model in self._choices else None,
                                       description="model", layout=W.Layout(width="420px"))
        self.model_choice.add_class("advviz-model-choice")
        self.model_choice.observe(self._on_model_choice, names="value")
        self.title = W.HTML()
        self.state.observe(self._on_model, "model")
        self.tabs = W.Tab(children=[self.cfr, self.attack_lab, self.purifier_lab, self.features, self.takeover,
                                    self.train_panel, self.robustness])
        # short titles: six tabs share 600 pixels in a 1024-pixel JupyterLab with its file browser open
        for i, name in enumerate(TAB_TITLES):
            self.tabs.set_title(i, name)
        self._on_model(self.state)
        super().__init__(children=[
            W.HBox([self.title, self.model_choice], layout=W.Layout(flex_flow="row wrap")),
            W.HTML(TAB_CSS, layout=W.Layout(display="none")),
            self.notice,
            self.picker,
            self.tabs,
            self.errors,
        ])
        self.add_class("advviz-explorer")

    @guarded
    def _on_model_choice(self, change: dict[str, Any]) -> None:
        name = change["new"]
        if self._quiet or not name or name == self.state.model_name or name not in self._choices:
            return
        self.errors.message(f"loading {name}…")
        model = load_model(name, device=self.state.device, notice=self.notice)
        ds = model_dataset(name)
        self.state.set_model(model, name=name, classes=dataset_classes(ds) if ds else None, dataset=ds)
        self.errors.clear()

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        name = state.model_name
        opts = list(self._choices) + ([name] if name not in self._choices else [])
        self._quiet = True  # the menu names the model in use (also one trained in the Train tab)
        try:
            if list(self.model_choice.options) != opts:
                self.model_choice.options = opts
            self.model_choice.value = name
        finally:
            self._quiet = False
        self.title.value = (f'<div style="font-family:sans-serif;font-size:15px;padding:4px 8px 4px 0">'
                            f"<b>advviz explorer</b> — model <code>{html.escape(name)}</code></div>")
