"""Explorer: every component around one shared current image and model."""

from __future__ import annotations

import html
import os
from typing import Any

import ipywidgets as W
import torch

from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._state import ExplorerState, available_models, default_pairing, model_dataset
from advviz.widgets.attack_lab import AttackLab
from advviz.widgets.cfr import CFRView
from advviz.widgets.features import FeatureMapView
from advviz.widgets.picker import ImagePicker
from advviz.widgets.purifier_lab import PurifierLab
from advviz.widgets.train_panel import TrainPanel

__all__ = ["Explorer", "fast_mode"]


def fast_mode() -> bool:
    """True when ``$ADVVIZ_FAST`` is set to a true value (notebook CI: quick attack settings)."""
    return os.environ.get("ADVVIZ_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


class Explorer(W.VBox):
    """A header with the model chooser, the image picker, and tabs: CFR, attacks, purifiers,
    feature maps, training.

    Offline with no data it uses the digits and LeNet-5 (trained on first use, ~15 s); with
    CIFAR-10 and the ResNet-20 weights available (``$ADVVIZ_DATA``, ``$ADVVIZ_WEIGHTS``, or a
    network), CIFAR-10 and ResNet-20.

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
        self.state = ExplorerState.from_pretrained(model, device=device)
        quick = fast_mode() if quick is None else quick
        self.picker = ImagePicker(self.state, dataset=dataset, index=index)
        self.cfr = CFRView(self.state)
        self.attack_lab = AttackLab(self.state, background=background, quick=quick)
        self.purifier_lab = PurifierLab(self.state)
        self.features = FeatureMapView(self.state)
        self.train_panel = TrainPanel(self.state)
        choices = available_models()
        self.model_choice = W.Dropdown(options=choices, value=model if model in choices else None,
                                       description="model", layout=W.Layout(width="300px"))
        self.model_choice.observe(self._on_model_choice, names="value")
        self.title = W.HTML()
        self.state.observe(self._on_model, "model")
        self.tabs = W.Tab(children=[self.cfr, self.attack_lab, self.purifier_lab, self.features, self.train_panel])
        for i, name in enumerate(["CFR / Grad-CAM", "Attack lab", "Purifiers", "Feature maps", "Train"]):
            self.tabs.set_title(i, name)
        self._on_model(self.state)
        super().__init__(children=[
            W.HBox([self.title, self.model_choice]),
            self.picker,
            self.tabs,
            self.errors,
        ])
        self.add_class("advviz-explorer")

    @guarded
    def _on_model_choice(self, change: dict[str, Any]) -> None:
        from advviz import models

        name = change["new"]
        if not name or name == self.state.model_name:
            return
        self.errors.message(f"loading {name}… (advviz-trained weights are trained on first use)")
        model = models.load(name, device=self.state.device)
        ds = model_dataset(name)
        from advviz.widgets._state import dataset_classes

        self.state.set_model(model, name=name, classes=dataset_classes(ds) if ds else None)
        if ds and ds in self.picker.dataset.options and self.picker.dataset.value != ds:
            self.picker.dataset.value = ds
        self.errors.clear()

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        self.title.value = (f'<div style="font-family:sans-serif;font-size:15px;padding:4px 8px 4px 0">'
                            f"<b>advviz explorer</b> — model <code>{html.escape(state.model_name)}</code></div>")
