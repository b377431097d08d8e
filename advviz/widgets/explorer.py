"""Explorer: every component around one shared current image and model (a zoo entry or your own)."""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W
import torch
from torch import nn
from torch.nn import functional as F

from advviz import artifacts, data, models
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._jobs import Ticker
from advviz.widgets._state import (
    DATASET_SHAPES,
    ExplorerState,
    ModelInfo,
    available_datasets,
    default_pairing,
    model_menu,
    pretrained_info,
)
from advviz.widgets.attack_lab import AttackLab
from advviz.widgets.cfr import CFRView
from advviz.widgets.features import FeatureMapView
from advviz.widgets.picker import ImagePicker
from advviz.widgets.purifier_lab import PurifierLab
from advviz.widgets.robustness import RobustnessView
from advviz.widgets.takeover import TakeoverView
from advviz.widgets.train_panel import TrainPanel

__all__ = ["Explorer", "fast_mode", "needs_first_use_training", "TrainingNotice", "load_model",
           "first_use_estimate"]

#: The tabs, in order: CFR / Grad-CAM, the attack lab, purifiers, feature maps, where the attack
#: takes over (layer divergence), training, security curves (robustness).
TAB_TITLES = ("CFR", "Attack lab", "Purifiers", "Features", "Takeover", "Train", "Robustness")

#: Each tab title as wide as its text (ipywidgets gives every tab the same width, which cuts the
#: longer titles short when seven tabs share 570 pixels in a 1024-pixel JupyterLab with its file
#: browser open), and nothing inside the explorer wider than its panel (charts scale down).
TAB_CSS = ("<style>.advviz-explorer .widget-tab .lm-TabBar-tab { flex: 0 1 auto !important; }"
           ".advviz-explorer svg { max-width: 100%; height: auto; }"
           ".advviz-explorer .widget-html-content { max-width: 100%; }</style>")

#: About how long the first-use estimate times training steps (seconds; at least 3 steps).
PROBE_SECONDS = 1.0


def fast_mode() -> bool:
    """True when ``$ADVVIZ_FAST`` is set to a true value (notebook CI: quick attack settings)."""
    return os.environ.get("ADVVIZ_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


def needs_first_use_training(name: str) -> bool:
    """Whether ``models.load(name)`` will train the model now (advviz-trained weights not cached yet)."""
    try:
        return artifacts.status(name)["where"] == "train"
    except KeyError:
        return False


def first_use_estimate(name: str, *, seconds: float = PROBE_SECONDS) -> tuple[float, str] | None:
    """How long training ``name`` on first use will take here: ``(seconds, how it was measured)``.

    Measured now, on this machine and under its present load: training steps (forward, backward,
    optimiser step at the recipe's batch size, after one warm-up step) of a fresh copy of the
    architecture for about ``seconds`` (at least 3, at most 50 steps), their mean time multiplied by
    the recipe's number of steps (``epochs x ceil(images / batch_size)``). A constant would be wrong
    on most machines: LeNet-5 on the digits took 8.9 s in a quiet JupyterLab and 48.7 s on a loaded
    2-core machine. ``None`` when ``name`` has no supervised training recipe.
    """
    try:
        spec = artifacts.get_spec(name)
    except KeyError:
        return None
    r = spec.recipe
    if r is None or not all(hasattr(r, k) for k in ("epochs", "batch_size", "data")):
        return None
    ds_name, split = str(r.data).split(":")[:2]
    n = getattr(r, "images", None)
    if n is None:
        try:
            n = len(data.load(ds_name, split))
        except (data.DatasetNotFoundError, ValueError):
            return None
    times: list[float] = []
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        model = spec.make().train()
        size = spec.input_size or tuple(getattr(model, "input_size", (3, 32, 32)))
        bs = int(r.batch_size)
        x, y = torch.rand(bs, *size), torch.randint(0, int(getattr(model, "num_classes", 10)), (bs,))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        start = time.perf_counter()
        while len(times) < 51 and (len(times) < 4 or time.perf_counter() - start < seconds):
            t0 = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
    times = times[1:]  # the first step warms up
    total = int(r.epochs) * math.ceil(n / bs)
    per = sum(times) / len(times)
    return per * total, f"{len(times)} training steps timed here just now, {per:.3f} s each, x {total} steps"


class TrainingNotice(W.VBox):
    """A message and a progress bar shown while a model trains on first use.

    The expected duration is measured just before training (:func:`first_use_estimate`); the bar
    follows the elapsed time against it (it never claims to be done before training returns) and
    ends on "trained in … s". The training runs in the calling thread; the job runner's
    :class:`~advviz.widgets._jobs.Ticker` moves the bar, and is joined before the final message.
    :meth:`dismiss` hides the notice (the explorer does at the next change of image or model).
    """

    def __init__(self) -> None:
        self.message = W.HTML()
        self.bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info", layout=W.Layout(width="300px"))
        super().__init__([self.message, self.bar], layout=W.Layout(display="none", max_width="100%"))
        self.add_class("advviz-first-use")
        self.estimate: tuple[float, str] | None = None

    def run(self, name: str, load: Callable[[], nn.Module]) -> nn.Module:
        """Call ``load()`` (which trains ``name``) while the notice counts the seconds; return its model."""
        self.layout.display = None
        self.bar.layout.display = None
        self.bar.bar_style = "info"
        self.bar.value = 0.0
        what = html.escape(name)
        self.message.value = f"<b>training {what} on first use</b>: timing a few training steps…"
        self.estimate = first_use_estimate(name)
        expected = self.estimate[0] if self.estimate else None
        about = (f'about {max(1.0, expected):.0f} s here (<span title="{html.escape(self.estimate[1])}">measured '
                 "just now</span>)" if self.estimate else "time unknown")
        head = f"<b>training {what} on first use</b> ({about}; once: the weights are cached for next time)…"
        self.message.value = head
        t0 = time.perf_counter()

        def tick(el: float) -> None:
            self.bar.value = min(0.95, el / expected) if expected else min(0.95, 1.0 - 1.0 / (1.0 + el / 30.0))
            self.message.value = f"{head} {el:.1f} s"

        try:
            with Ticker(tick, name="advviz-first-use"):  # joined on exit: no tick after the final message
                model = load()
        except BaseException:
            self.bar.bar_style = "danger"
            self.message.value = f"<b>training {what} failed</b> (see the error below)"
            raise
        self.bar.value = 1.0
        self.bar.bar_style = "success"
        took = time.perf_counter() - t0
        est = f" (estimated {expected:.0f} s)" if expected else ""
        self.message.value = (f"{what} trained in {took:.1f} s on first use{est}; cached: next time it loads at once")
        return model

    def dismiss(self) -> None:
        """Hide the notice (a finished notice; one that is still training stays)."""
        if self.bar.bar_style != "info":
            self.layout.display = "none"


def _images_for(size: tuple[int, int, int], default: str) -> str:
    """The dataset to show a model that names none: one of its image shape, else one of its channels."""
    here = available_datasets()
    same = [d for d in here if DATASET_SHAPES.get(d) == tuple(size)]
    if same:
        return same[0]
    return default if DATASET_SHAPES.get(default, (0,))[0] == size[0] else ("digits" if size[0] == 1 else default)


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

    **The model** is a zoo entry by name, or your own network:

    * ``Explorer()``: CIFAR-10 + ResNet-20 when available (``$ADVVIZ_DATA``, ``$ADVVIZ_WEIGHTS``, or a
      network), else the offline digits + LeNet-5 (trained on first use, with a message and a
      progress bar whose estimate is measured on this machine: :func:`first_use_estimate`);
    * ``Explorer("resnet20_cifar10")``: a pretrained entry (``advviz.models.list_models(pretrained=True)``);
    * ``Explorer(my_module, classes=[...], input_size=(3, 32, 32), mean=..., std=...)``: any
      ``nn.Module`` classifier, wrapped by :func:`advviz.models.wrap` when it does not declare its
      input size or when ``mean``/``std`` are given (what can be inferred is: the channels from its
      first convolution, the number of classes from one forward pass). A model made by
      :func:`~advviz.models.wrap` or :func:`~advviz.models.load` is used as it is.

    **The images** (``dataset``): a dataset name, a folder of your images (one sub-folder per class,
    or a flat folder: :func:`advviz.data.folder`), a list of image files, or any ``Dataset``; each
    image is converted to the model's input (centre-cropped, resized, channels converted).

    Every component follows a model change (from the header's menu or the Train tab's "Use this
    model"): the picker switches to the model's dataset when this machine has it, the attack
    budgets to the dataset's, the purifier menu to what fits the model; the header names the model
    in use, what it takes and where it came from. The menu lists every zoo entry, marked when its
    weights are not on this machine (choosing one says what to set), and every model used in this
    session (yours, and those trained in the Train tab). A result of the attack lab or the
    Robustness tab computed for the model or image before the change is dropped, with a message.

    Args:
        model: a pretrained entry name, an ``nn.Module``, or ``None`` (:func:`~advviz.widgets._state.default_pairing`).
        dataset: the picker's images (default: the model's dataset, else the default pairing's).
        index: the picker's initial index.
        device: where the model runs (default CPU, or the module's device).
        quick: attack controls start from each attack's ``quick`` settings (default ``$ADVVIZ_FAST``).
        background: AttackLab runs attacks in a worker thread.
        classes, input_size, mean, std, name: your module's settings (:func:`advviz.models.wrap`);
            ``classes`` and ``name`` also rename a zoo model's outputs and title.
        provenance: where your module came from, one line (default "defined in this notebook").
    """

    def __init__(self, model: str | nn.Module | None = None, *, dataset: Any = None, index: int = 0,
                 device: str | torch.device | None = None, quick: bool | None = None,
                 background: bool = True, classes: Sequence[str] | None = None,
                 input_size: tuple[int, ...] | int | None = None, mean: Sequence[float] | float | None = None,
                 std: Sequence[float] | float | None = None, name: str | None = None,
                 provenance: str | None = None) -> None:
        ds_default, model_default = default_pairing()
        self.errors = ErrorArea()
        self.notice = TrainingNotice()
        self._own: dict[str, tuple[nn.Module, ModelInfo]] = {}  # models used in this session, by menu value
        if model is None or isinstance(model, str):
            entry = model or model_default
            if entry not in models.list_models(pretrained=True):
                raise KeyError(f"no pretrained model named {entry!r}; choose one of "
                               f"{', '.join(models.list_models(pretrained=True))}, or pass your own nn.Module")
            net = load_model(entry, device=device, notice=self.notice, show=True)
            info = pretrained_info(entry)
            if classes is not None:
                info["classes"] = list(classes)
            self.state = ExplorerState(net, model_name=name or entry, device=device, **info)
        elif isinstance(model, nn.Module):
            net = model
            if mean is not None or std is not None or getattr(model, "input_size", None) is None or \
                    (input_size is not None and tuple(model.input_size) != tuple(input_size)):
                net = models.wrap(model, mean=mean, std=std, input_size=input_size, classes=classes, name=name)
            if device is not None:
                net = net.to(device)
            self.state = ExplorerState(net, model_name=name or "", classes=list(classes) if classes else None,
                                       device=device, provenance=provenance)
        else:
            raise TypeError(f"model must be a pretrained entry's name or an nn.Module, got {type(model).__name__}")
        quick = fast_mode() if quick is None else quick
        if dataset is None:
            dataset = self.state.dataset if self.state.dataset in available_datasets() else \
                _images_for(self.state.input_size, ds_default)
        self.picker = ImagePicker(self.state, dataset=dataset, index=index)
        self.cfr = CFRView(self.state)
        self.attack_lab = AttackLab(self.state, background=background, quick=quick)
        self.purifier_lab = PurifierLab(self.state)
        self.features = FeatureMapView(self.state)
        self.train_panel = TrainPanel(self.state)
        self.takeover = TakeoverView(self.state)
        self.robustness = RobustnessView(self.state, picker=self.picker, background=background)
        self._quiet = False
        self.model_choice = W.Dropdown(options=[], description="model", layout=W.Layout(width="300px", max_width="100%"))
        self.model_choice.add_class("advviz-model-choice")
        self.model_choice.observe(self._on_model_choice, names="value")
        self.title = W.HTML()
        self.title.add_class("advviz-title")
        self.model_info = W.HTML()
        self.model_info.add_class("advviz-model-info")
        self.state.observe(self._on_model, "model")
        self.state.observe(self._on_change, "model")
        self.state.observe(self._on_change, "image")
        self.tabs = W.Tab(children=[self.cfr, self.attack_lab, self.purifier_lab, self.features, self.takeover,
                                    self.train_panel, self.robustness])
        # short titles: seven tabs share 570 pixels in a 1024-pixel JupyterLab with its file browser open
        for i, title in enumerate(TAB_TITLES):
            self.tabs.set_title(i, title)
        self._on_model(self.state)
        super().__init__(children=[
            W.HBox([self.title, self.model_choice],
                   layout=W.Layout(flex_flow="row wrap", align_items="center", max_width="100%")),
            self.model_info,
            W.HTML(TAB_CSS, layout=W.Layout(display="none")),
            self.notice,
            self.picker,
            self.tabs,
            self.errors,
        ], layout=W.Layout(max_width="100%"))
        self.add_class("advviz-explorer")

    # ------------------------------------------------------------------------------------ the menu
    def _menu(self) -> list[tuple[str, str]]:
        """The model menu: every zoo entry (marked when its weights are not here), then this session's own."""
        self._zoo = {name: (where, todo) for name, where, todo in model_menu()}
        marks = {"train": " (trains on first use)", "download": " (downloads on first use)",
                 "unavailable": " — weights missing"}
        opts = [(name + marks.get(where, ""), name) for name, (where, _) in self._zoo.items()]
        return opts + [(f"{name} (yours)", name) for name in self._own if name not in self._zoo]

    @guarded
    def _on_model_choice(self, change: dict[str, Any]) -> None:
        name = change["new"]
        if self._quiet or not name or name == self.state.model_name:
            return
        try:
            self._use(name)
        except BaseException:
            self._show_current()  # the menu names the model in use, also when loading failed
            raise

    def _use(self, name: str) -> None:
        if name in self._own:
            module, info = self._own[name]
            self.state.set_model(module, name=info.name, classes=list(info.classes), dataset=info.dataset,
                                 provenance=info.provenance, record=info.record, sha256=info.sha256)
            return
        where, todo = self._zoo.get(name, ("unavailable", "it is not a model advviz knows"))
        if where == "unavailable":
            self._show_current()
            self.errors.message(f"{name} cannot be used on this machine: {todo}. Then restart the kernel. "
                                f"The explorer still uses {self.state.model_name}.", kind="warning")
            return
        self.errors.message(f"loading {name}…")
        model = load_model(name, device=self.state.device, notice=self.notice)
        self.state.set_model(model, name=name, **pretrained_info(name))
        self.errors.clear()

    def _show_current(self) -> None:
        st = self.state
        if st.info.record is None and st.model_name not in getattr(self, "_zoo", {}):
            self._own[st.model_name] = (st.model, st.info)
        opts = self._menu()
        self._quiet = True  # the menu names the model in use (also one trained in the Train tab)
        try:
            if list(self.model_choice.options) != opts:
                self.model_choice.options = opts
            self.model_choice.value = st.model_name if st.model_name in [v for _, v in opts] else None
        finally:
            self._quiet = False

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        self._show_current()
        info = state.info
        self.title.value = (f'<div style="font-family:sans-serif;font-size:15px;padding:2px 8px 2px 0">'
                            f"<b>advviz explorer</b> — model <code>{html.escape(info.name)}</code></div>")
        self.model_info.value = ('<div style="font-family:sans-serif;font-size:12px;color:#555;'
                                 f'overflow-wrap:anywhere">{html.escape(info.summary())}</div>')

    @guarded
    def _on_change(self, state: ExplorerState) -> None:
        self.notice.dismiss()  # the first-use notice goes at the first change after it
