"""ImagePicker: choose the current image from a dataset, or upload one's own."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import torch

from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._state import ExplorerState, available_datasets, dataset_classes, model_dataset

__all__ = ["ImagePicker"]


class ImagePicker(W.VBox):
    """Dataset and split dropdowns, a class filter, an index slider, a random button, an upload.

    The chosen image becomes ``state``'s current image (converted to the model's input size and
    channels with :func:`advviz.data.load_image` when they differ). Shows the true label, the
    prediction and its confidence; the prediction is refreshed when the model changes.

    Args:
        state: the shared :class:`ExplorerState`.
        dataset: initial dataset (default: the model's own when available, else ``digits``).
        split: ``"test"`` or ``"train"``.
        index: initial position in the (filtered) dataset.
    """

    def __init__(self, state: ExplorerState, *, dataset: str | None = None, split: str = "test",
                 index: int = 0) -> None:
        self.state = state
        self.errors = ErrorArea()
        names = available_datasets()
        if dataset is None:
            dataset = model_dataset(state.model_name) or "digits"
            dataset = dataset if dataset in names else "digits"
        if dataset not in names:
            names.append(dataset)
        self.data: Any = None
        self._indices: torch.Tensor = torch.zeros(0, dtype=torch.long)
        self._busy = False
        self.dataset = W.Dropdown(options=names, value=dataset, description="dataset", layout=W.Layout(width="220px"))
        self.split = W.Dropdown(options=["test", "train"], value=split, description="split",
                                layout=W.Layout(width="180px"))
        self.klass = W.Dropdown(options=[("all", -1)], value=-1, description="class", layout=W.Layout(width="220px"))
        self.index = W.IntSlider(value=0, min=0, max=0, description="index", continuous_update=False,
                                 layout=W.Layout(width="420px"))
        self.random = W.Button(description="random", icon="random", layout=W.Layout(width="100px"))
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload image")
        self.upload.add_class("advviz-upload")
        self.image = W.Image(format="png", layout=W.Layout(width="160px", height="160px", object_fit="contain"))
        self.image.add_class("advviz-picker-image")
        self.info = W.HTML()
        self.info.add_class("advviz-picker-info")
        self.dataset.observe(self._on_dataset, names="value")
        self.split.observe(self._on_dataset, names="value")
        self.klass.observe(self._on_class, names="value")
        self.index.observe(self._on_index, names="value")
        self.random.on_click(self._on_random)
        self.upload.observe(self._on_upload, names="value")
        state.observe(self._on_model, "model")
        state.observe(self._on_image, "image")
        super().__init__(children=[
            W.HBox([self.dataset, self.split, self.klass]),
            W.HBox([self.index, self.random]),
            self.upload,
            W.HBox([self.image, self.info]),
            self.errors,
        ])
        self._load(index=index)

    # ------------------------------------------------------------------------------- loading
    def _load(self, index: int = 0) -> None:
        from advviz import data

        self.errors.clear()
        self.data = data.load(self.dataset.value, self.split.value)
        classes = list(getattr(self.data, "classes", None) or dataset_classes(self.dataset.value))
        self._busy = True
        try:
            self.klass.options = [("all", -1)] + [(f"{i}: {c}" if c != str(i) else c, i) for i, c in enumerate(classes)]
            self.klass.value = -1
        finally:
            self._busy = False
        self._filter(index)

    def _filter(self, index: int = 0) -> None:
        labels = self.data.labels if hasattr(self.data, "labels") else torch.tensor([int(y) for _, y in self.data])
        k = self.klass.value
        self._indices = torch.arange(len(labels)) if k == -1 else torch.nonzero(labels == k).flatten()
        if len(self._indices) == 0:
            raise ValueError(f"no image of class {k} in {self.dataset.value}/{self.split.value}")
        self._busy = True
        try:
            self.index.max = len(self._indices) - 1
            self.index.value = min(max(index, 0), len(self._indices) - 1)
        finally:
            self._busy = False
        self.select(self.index.value)

    def select(self, position: int) -> None:
        """Make image ``position`` of the filtered dataset the current image."""
        from advviz import data

        i = int(self._indices[position])
        x, y = self.data[i]
        c, h, w = self.state.input_size
        note = ""
        if tuple(x.shape) != (c, h, w):
            note = f" (converted from {'x'.join(map(str, x.shape))} to {c}x{h}x{w})"
            x = data.load_image(x, size=(h, w), channels=c)
        self.state.set_image(x, int(y), source=f"{self.dataset.value}/{self.split.value} #{i}{note}")

    # ------------------------------------------------------------------------------- callbacks
    @guarded
    def _on_dataset(self, change: dict[str, Any]) -> None:
        self._load(0)

    @guarded
    def _on_class(self, change: dict[str, Any]) -> None:
        if not self._busy:
            self._filter(0)

    @guarded
    def _on_index(self, change: dict[str, Any]) -> None:
        if not self._busy:
            self.errors.clear()
            self.select(change["new"])

    @guarded
    def _on_random(self, _button: W.Button | None = None) -> None:
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        self.index.value = int(torch.randint(0, len(self._indices), (1,), generator=g))

    @guarded
    def _on_upload(self, change: dict[str, Any]) -> None:
        from advviz import data

        files = change["new"]
        if not files:
            return
        f = files[0]
        c, h, w = self.state.input_size
        x = data.load_image(bytes(f["content"]), size=(h, w), channels=c)
        self.errors.clear()
        self.state.set_image(x, None, source=f"upload: {f.get('name', 'image')} (resized to {c}x{h}x{w})")

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        if state.x is None:
            return
        if tuple(state.x.shape) != state.input_size and not state.source.startswith("upload"):
            self.select(self.index.value)
        else:
            self._show(state)

    @guarded
    def _on_image(self, state: ExplorerState) -> None:
        self._show(state)

    def _show(self, state: ExplorerState) -> None:
        assert state.x is not None
        self.image.value = R.png(R.to_uint8(state.x), scale=R.display_scale(*state.x.shape[1:], target=160))
        pred = state.predict()
        ok = state.y is not None and pred.label == state.y
        colour = "#27ae60" if ok else ("#c0392b" if state.y is not None else "#2e4053")
        self.info.value = (
            '<div style="font-family:sans-serif;font-size:13px;line-height:1.6">'
            f"<b>source</b>: {html.escape(state.source)}<br>"
            f"<b>true label</b>: {html.escape(state.class_name(state.y))}<br>"
            f'<b>predicted</b>: <span style="color:{colour}" class="advviz-pred">'
            f"{html.escape(state.class_name(pred.label))}</span> "
            f"(confidence {pred.confidence:.1%})<br>"
            f"<b>model</b>: {html.escape(state.model_name)}</div>")
