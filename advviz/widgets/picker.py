"""ImagePicker: choose the current image from a dataset, or upload one's own."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import torch

from advviz import data
from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._state import ExplorerState, available_datasets, dataset_classes, model_dataset

__all__ = ["ImagePicker", "ACCEPTED_FORMATS", "read_upload"]

#: What the upload button takes (Pillow reads all of them).
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WebP")
UPLOAD = -2  # the class menu's entry while the current image is an upload


def read_upload(content: bytes, name: str, size: tuple[int, int, int]) -> torch.Tensor:
    """Decode an uploaded file into the model's ``(C, H, W)``: centre-cropped to its aspect, then resized.

    Args:
        content: the file's bytes. name: its name (for the message).
        size: the model's ``(C, H, W)``.

    Raises:
        ValueError: not an image Pillow can read, damaged, or too large (refused from its header,
            before decoding: :func:`advviz.data.open_image`); the message names the file and the formats.
    """
    c, h, w = size
    try:  # upright (EXIF), size-checked; transparency is composited over white by load_image
        img = data.open_image(content, name=f"“{name}”")
    except ValueError as exc:
        raise ValueError(f"{exc}. Upload a {', '.join(ACCEPTED_FORMATS[:-1])} or {ACCEPTED_FORMATS[-1]} file.") from None
    iw, ih = img.size
    if iw * h != ih * w:  # centre crop to the model's aspect ratio instead of squashing
        cw, ch = (iw, round(iw * h / w)) if iw * h < ih * w else (round(ih * w / h), ih)
        left, top = (iw - cw) // 2, (ih - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
    return data.load_image(img, size=(h, w), channels=c)


class ImagePicker(W.VBox):
    """Dataset and split dropdowns, a class filter, an index slider, a random button, an upload.

    The chosen image becomes ``state``'s current image (converted to the model's input size and
    channels with :func:`advviz.data.load_image` when they differ). Shows the true label, the
    prediction and its confidence; the prediction is refreshed when the model changes, and when
    the new model was trained on another dataset the picker switches to that dataset.

    An upload is centre-cropped to the model's aspect ratio and resized; while it is the current
    image the class menu says so and a "true label" menu lets the user name its class.

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
        self._upload: tuple[str, bytes] | None = None  # (name, bytes) of the upload in use
        self._klass_before = -1  # the class filter to go back to after an upload
        self.dataset = W.Dropdown(options=names, value=dataset, description="dataset", layout=W.Layout(width="220px"))
        self.split = W.Dropdown(options=["test", "train"], value=split, description="split",
                                layout=W.Layout(width="180px"))
        self.klass = W.Dropdown(options=[("all", -1)], value=-1, description="class", layout=W.Layout(width="220px"))
        self.index = W.IntSlider(value=0, min=0, max=0, description="index", continuous_update=False,
                                 layout=W.Layout(width="420px"))
        self.random = W.Button(description="random", icon="random", layout=W.Layout(width="100px"))
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload image",
                                   tooltip="your own image: " + ", ".join(ACCEPTED_FORMATS))
        self.upload.add_class("advviz-upload")
        self.upload_help = W.HTML(f'<span style="font-size:12px;color:#555">{", ".join(ACCEPTED_FORMATS)}; '
                                  "centre-cropped to the model's aspect ratio</span>")
        self.true_label = W.Dropdown(options=[("unknown", -1)], value=-1, description="true label",
                                     layout=W.Layout(width="220px", display="none"))
        self.true_label.add_class("advviz-true-label")
        self.image = R.ImageSlot("no image yet", size=160, css_class="advviz-picker-image")
        self.info = W.HTML()
        self.info.add_class("advviz-picker-info")
        self.dataset.observe(self._on_dataset, names="value")
        self.split.observe(self._on_dataset, names="value")
        self.klass.observe(self._on_class, names="value")
        self.index.observe(self._on_index, names="value")
        self.random.on_click(self._on_random)
        self.upload.observe(self._on_upload, names="value")
        self.true_label.observe(self._on_true_label, names="value")
        state.observe(self._on_model, "model", last=True)
        state.observe(self._on_image, "image")
        super().__init__(children=[
            R.row(self.dataset, self.split, self.klass),
            R.row(self.index, self.random),
            R.row(self.upload, self.upload_help, self.true_label),
            R.row(self.image, self.info),
            self.errors,
        ])
        self._load(index=index)

    # ------------------------------------------------------------------------------- loading
    def _load(self, index: int = 0) -> None:
        self.errors.clear()
        self.data = data.load(self.dataset.value, self.split.value)
        self._busy = True
        try:
            self.klass.options = self._class_options()
            self.klass.value = -1
        finally:
            self._busy = False
        self._filter(index)

    def _class_options(self, upload: bool = False) -> list[tuple[str, int]]:
        classes = list(getattr(self.data, "classes", None) or dataset_classes(self.dataset.value))
        head = [("(your upload)", UPLOAD)] if upload else []
        return head + [("all", -1)] + [(f"{i}: {c}" if c != str(i) else c, i) for i, c in enumerate(classes)]

    def _leave_upload(self) -> None:
        """Back to browsing the dataset: the class menu and the true-label menu lose the upload."""
        if self._upload is None:
            return
        self._upload = None
        self._busy = True
        try:
            cur = self.klass.value
            self.klass.options = self._class_options()
            self.klass.value = cur if cur != UPLOAD else self._klass_before
        finally:
            self._busy = False
        self.true_label.layout.display = "none"

    def _filter(self, index: int = 0) -> None:
        labels = self.data.labels if hasattr(self.data, "labels") else torch.tensor([int(y) for _, y in self.data])
        k = self.klass.value if self.klass.value != UPLOAD else -1
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
        self._leave_upload()
        i = int(self._indices[position])
        x, y = self.data[i]
        c, h, w = self.state.input_size
        note = ""
        if tuple(x.shape) != (c, h, w):
            note = f" (converted from {'x'.join(map(str, x.shape))} to {c}x{h}x{w})"
            x = data.load_image(x, size=(h, w), channels=c)
        self.state.set_image(x, int(y), source=f"{self.dataset.value}/{self.split.value} #{i}{note}")

    def select_index(self, index: int) -> None:
        """Make image ``index`` of the current dataset and split the current image (the class filter
        goes back to "all", so the index slider shows the dataset index)."""
        if not 0 <= int(index) < len(self.data):
            raise IndexError(f"index {index} is outside {self.dataset.value}/{self.split.value} (0..{len(self.data) - 1})")
        self._leave_upload()
        self._busy = True
        try:
            self.klass.value = -1
        finally:
            self._busy = False
        self._filter(int(index))

    # ------------------------------------------------------------------------------- callbacks
    @guarded
    def _on_dataset(self, change: dict[str, Any]) -> None:
        if not self._busy:
            self._load(0)

    @guarded
    def _on_class(self, change: dict[str, Any]) -> None:
        if not self._busy and change["new"] != UPLOAD:
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
        files = change["new"]
        if not files:
            return
        f = files[0]
        self.use_upload(bytes(f["content"]), str(f.get("name") or "image"))

    def use_upload(self, content: bytes, name: str, label: int | None = None) -> None:
        """Make an uploaded file the current image (as the upload button does), with label ``label``."""
        x = read_upload(content, name, self.state.input_size)
        self.errors.clear()
        if self._upload is None:
            self._klass_before = self.klass.value
        self._upload = (name, bytes(content))
        self._busy = True
        try:
            self.klass.options = self._class_options(upload=True)
            self.klass.value = UPLOAD
            self._label_options()
            self.true_label.value = -1 if label is None else int(label)
        finally:
            self._busy = False
        self.true_label.layout.display = None
        c, h, w = self.state.input_size
        self.state.set_image(x, label, source=f"upload: {name} (centre-cropped, resized to {c}x{h}x{w})")

    def _label_options(self) -> None:
        st = self.state
        opts = [("unknown", -1)] + [(st.class_name(i), i) for i in range(len(st.classes))]
        if list(self.true_label.options) != opts:
            self.true_label.options = opts

    @guarded
    def _on_true_label(self, change: dict[str, Any]) -> None:
        if self._busy or self._upload is None:
            return
        self.state.set_label(None if change["new"] == -1 else int(change["new"]))

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        ds = model_dataset(state.model_name)
        if ds and ds != self.dataset.value and ds in self.dataset.options and self._upload is None:
            self._busy = True  # follow the model's dataset
            try:
                self.dataset.value = ds
            finally:
                self._busy = False
            self._load(0)
            return
        if state.x is None or tuple(state.x.shape) != state.input_size:
            if self._upload is not None:
                name, content = self._upload
                label = self.true_label.value if self.true_label.value != -1 else None
                if label is not None and label >= len(state.classes):
                    label = None
                self.use_upload(content, name, label)
            else:
                self.select(self.index.value)
        else:
            self._show(state)

    @guarded
    def _on_image(self, state: ExplorerState) -> None:
        self._show(state)

    def _show(self, state: ExplorerState) -> None:
        if state.x is None:
            self.image.value = b""
            self.info.value = ""
            return
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
