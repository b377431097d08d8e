"""ImagePicker: choose the current image from a dataset, your own images, or an upload."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W
import torch
from torch.utils.data import Dataset

from advviz import data
from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._state import ExplorerState, available_datasets, dataset_classes

__all__ = ["ImagePicker", "ACCEPTED_FORMATS", "read_upload", "ModelView"]

#: What the upload button takes (Pillow reads all of them).
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WebP")
UPLOAD = -2  # the class menu's entry while the current image is an upload
SLOT = 128   # displayed size of the current image (pixels)


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
    return data.load_image(img, size=(h, w), channels=c, crop=True)


def label_map(data_classes: Sequence[str], model_classes: Sequence[str], *, same: bool = False) -> list[int | None]:
    """For each class of a dataset, the model's class index it is (``None``: not a class of the model).

    The classes match by position when ``same`` (the model was trained on this dataset) or when both
    lists are equal; otherwise by name (a folder ``cat/`` is CIFAR-10's class 3).
    """
    dc, mc = [str(c) for c in data_classes], [str(c) for c in model_classes]
    if same or dc == mc:
        return [i if i < len(mc) else None for i in range(len(dc))]
    index = {c: i for i, c in enumerate(mc)}
    return [index.get(c) for c in dc]


class ModelView(Dataset):
    """A dataset as the current model takes it: images converted to its ``(C, H, W)`` (centre-cropped,
    resized, channels converted) and labels mapped to its classes (:func:`label_map`; ``-1`` where the
    model has no such class). Same length and indices as the dataset."""

    def __init__(self, base: Any, size: tuple[int, int, int], mapping: list[int | None]) -> None:
        self.base = base
        self.size = tuple(size)
        self.mapping = mapping
        self.name = getattr(base, "name", type(base).__name__)
        self.split = getattr(base, "split", "")

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.base[index]
        c, h, w = self.size
        if tuple(x.shape) != self.size:
            x = data.load_image(x, size=(h, w), channels=c, crop=True)
        y = int(y)
        mapped = self.mapping[y] if 0 <= y < len(self.mapping) else None
        return x, (-1 if mapped is None else mapped)


class ImagePicker(W.VBox):
    """Dataset and split dropdowns, a class filter, an index slider, a random button, an upload.

    The chosen image becomes ``state``'s current image, converted to the model's input (centre-
    cropped to its aspect ratio, resized, channels converted) when it differs. Its label is the
    model's class of the same name (:func:`label_map`): an image of a class the model does not have
    gets the label "unknown", so that an attack on it reports what the model does and never
    "fooled" against a class the model cannot output. Shows the true label, the prediction and its
    confidence; the prediction is refreshed when the model changes, and when the new model was
    trained on a dataset this machine has, the picker switches to that dataset (``state.dataset``).

    **Your own images**: ``dataset`` (or :meth:`add_images`) takes a folder (one sub-folder per
    class, or a flat folder: :func:`advviz.data.folder`), a list of image files, or any ``Dataset``
    of ``(image, label)``; it becomes an entry of the dataset menu. A folder is read at the model's
    input size (again when the model's size changes).

    An upload is centre-cropped to the model's aspect ratio and resized; while it is the current
    image the class menu says so and a "true label" menu lets the user name its class.

    Args:
        state: the shared :class:`ExplorerState`.
        dataset: initial dataset: a name (``"digits"``, ``"cifar10"``...), a folder, a list of image
            files or a ``Dataset`` (default: the model's own when available, else ``digits``).
        split: ``"test"`` or ``"train"`` (named datasets only).
        index: initial position in the (filtered) dataset.
    """

    def __init__(self, state: ExplorerState, *, dataset: Any = None, split: str = "test", index: int = 0) -> None:
        self.state = state
        self.errors = ErrorArea()
        names = available_datasets()
        self._sources: dict[str, Any] = {}  # menu value -> a folder path, a list of files, or a Dataset
        self._folders: dict[tuple[Any, ...], Any] = {}  # (source key, size) -> data.folder(...)
        self.data: Any = None
        self._indices: torch.Tensor = torch.zeros(0, dtype=torch.long)
        self._busy = False
        self._upload: tuple[str, bytes] | None = None  # (name, bytes) of the upload in use
        self._klass_before = -1  # the class filter to go back to after an upload
        self.dataset = W.Dropdown(options=names, value=names[0], description="dataset", layout=W.Layout(width="230px"))
        self.split = W.Dropdown(options=["test", "train"], value=split, description="split",
                                layout=W.Layout(width="150px"))
        self.klass = W.Dropdown(options=[("all", -1)], value=-1, description="class", layout=W.Layout(width="190px"))
        self.index = W.IntSlider(value=0, min=0, max=0, description="index", continuous_update=False,
                                 layout=W.Layout(width="300px"))
        self.random = W.Button(description="random", icon="random", layout=W.Layout(width="90px"))
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload image",
                                   tooltip="your own image: " + ", ".join(ACCEPTED_FORMATS) +
                                   "; centre-cropped to the model's aspect ratio")
        self.upload.add_class("advviz-upload")
        self.true_label = W.Dropdown(options=[("unknown", -1)], value=-1, description="true label",
                                     layout=W.Layout(width="220px", display="none"))
        self.true_label.add_class("advviz-true-label")
        self.image = R.ImageSlot("no image yet", size=SLOT, css_class="advviz-picker-image")
        self.info = W.HTML()
        self.info.add_class("advviz-picker-info")
        if dataset is None:
            dataset = state.dataset if state.dataset in names else "digits"
        self._quiet_select(self._add_source(dataset, split))
        self.dataset.observe(self._on_dataset, names="value")
        self.split.observe(self._on_dataset, names="value")
        self.klass.observe(self._on_class, names="value")
        self.index.observe(self._on_index, names="value")
        self.random.on_click(self._on_random)
        self.upload.observe(self._on_upload, names="value")
        self.true_label.observe(self._on_true_label, names="value")
        state.observe(self._on_model, "model", last=True)
        state.observe(self._on_image, "image")
        controls = W.VBox([
            R.row(self.dataset, self.split, self.klass, gap="4px"),
            R.row(self.index, self.random, gap="4px"),
            R.row(self.upload, self.true_label, gap="4px"),
            self.info,
        ], layout=W.Layout(flex="1 1 300px", min_width="0", max_width="100%"))
        super().__init__(children=[R.row(self.image, controls), self.errors])
        self._load(index=index)

    # ------------------------------------------------------------------------------- sources
    def _add_source(self, source: Any, split: str = "test") -> str:
        """The menu value of ``source`` (a dataset name, a folder, a list of files or a Dataset), added
        to the menu when it is one of the user's."""
        names = [v for _, v in self._menu()]
        if isinstance(source, str) and source in data.DATASETS:
            if source not in names:
                self._sources[source] = None
            return source
        if isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser()
            if not path.is_dir():
                raise ValueError(f"the picker takes a dataset name ({', '.join(data.DATASETS)}), a folder of images, "
                                 f"a list of image files or a Dataset; {str(source)!r} is none of them")
            key, label = f"folder:{path.resolve()}", f"folder: {path.resolve().name}"
            value = path.resolve()
        elif isinstance(source, Dataset) or (hasattr(source, "__getitem__") and hasattr(source, "__len__")
                                             and not isinstance(source, (list, tuple))):
            key, label, value = f"dataset:{id(source)}", f"yours: {getattr(source, 'name', None) or type(source).__name__}", source
        elif isinstance(source, (list, tuple)):
            files = [Path(p).expanduser().resolve() for p in source]
            key, label, value = f"files:{len(files)}:{files[0] if files else ''}", f"your {len(files)} files", files
        else:
            raise TypeError(f"the picker takes a dataset name, a folder, a list of image files or a Dataset, "
                            f"got {type(source).__name__}")
        self._sources[key] = (label, value)
        return key

    def add_images(self, source: Any) -> None:
        """Add your own images to the dataset menu and show them: a folder (class sub-folders or
        flat), a list of image files, or a ``Dataset`` of ``(image (C, H, W) in [0, 1], label)``."""
        key = self._add_source(source)
        self._quiet_select(key)
        self._load(0)

    def _menu(self) -> list[tuple[str, str]]:
        named = available_datasets()
        extra = [k for k, v in self._sources.items() if v is None and k not in named]
        return [(n, n) for n in named + extra] + [(v[0], k) for k, v in self._sources.items() if v is not None]

    def _quiet_select(self, value: str) -> None:
        self._busy = True
        try:
            menu = self._menu()
            if list(self.dataset.options) != menu:
                self.dataset.options = menu
            self.dataset.value = value
        finally:
            self._busy = False
        self.split.disabled = self.user_images

    @property
    def user_images(self) -> bool:
        """Whether the dataset shown is the user's own (a folder, files or a Dataset)."""
        return self._sources.get(self.dataset.value) is not None

    @property
    def source_name(self) -> str:
        """How the current dataset is named in messages (``"cifar10/test"``, ``"folder: photos"``)."""
        src = self._sources.get(self.dataset.value)
        return src[0] if src is not None else f"{self.dataset.value}/{self.split.value}"

    def _read(self) -> Any:
        """The current dataset (a user folder read at the model's input size)."""
        src = self._sources.get(self.dataset.value)
        if src is None:
            return data.load(self.dataset.value, self.split.value)
        value = src[1]
        if isinstance(value, (Path, list)):
            size = self.state.input_size
            key = (self.dataset.value, tuple(size))
            if key not in self._folders:
                self._folders[key] = data.folder(value, size=size)
            return self._folders[key]
        return value

    # ------------------------------------------------------------------------------- loading
    def _load(self, index: int = 0) -> None:
        self.errors.clear()
        self.data = self._read()
        self._busy = True
        try:
            self.klass.options = self._class_options()
            self.klass.value = -1
        finally:
            self._busy = False
        self._filter(index)

    def _data_classes(self) -> list[str]:
        classes = getattr(self.data, "classes", None)
        if classes:
            return [str(c) for c in classes]
        return dataset_classes(self.dataset.value) if not self.user_images else []

    def _class_options(self, upload: bool = False) -> list[tuple[str, int]]:
        classes = self._data_classes()
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

    def _labels(self) -> torch.Tensor:
        if hasattr(self.data, "labels"):
            return torch.as_tensor(self.data.labels)
        return torch.tensor([int(y) for _, y in self.data])

    def _filter(self, index: int = 0) -> None:
        labels = self._labels()
        k = self.klass.value if self.klass.value != UPLOAD else -1
        self._indices = torch.arange(len(labels)) if k == -1 else torch.nonzero(labels == k).flatten()
        if len(self._indices) == 0:
            raise ValueError(f"no image of class {k} in {self.source_name}")
        self._busy = True
        try:
            self.index.max = len(self._indices) - 1
            self.index.value = min(max(index, 0), len(self._indices) - 1)
        finally:
            self._busy = False
        self.select(self.index.value)

    def label_mapping(self) -> list[int | None]:
        """For each class of the current dataset, the current model's class index (``None``: it has none)."""
        same = self.state.dataset is not None and self.state.dataset == self.dataset.value
        return label_map(self._data_classes(), self.state.classes, same=same)

    def model_label(self, y: int) -> int | None:
        """Dataset label ``y`` as the current model's class (``None``: unknown or not a class of the model)."""
        if y < 0:
            return None
        classes = self._data_classes()
        if not classes:  # a Dataset without class names: its labels are the model's
            return y if y < len(self.state.classes) else None
        mapping = self.label_mapping()
        return mapping[y] if y < len(mapping) else None

    def unknown_labels(self) -> int:
        """How many images of the current dataset have no label the current model knows (``-1`` labels,
        or classes the model does not have)."""
        return sum(self.model_label(y) is None for y in self._labels().tolist())

    def model_data(self) -> Any:
        """The current dataset as the model takes it (:class:`ModelView`; the dataset itself when
        nothing needs converting): for the Robustness tab."""
        size = tuple(self.state.input_size)
        classes = self._data_classes()
        mapping = self.label_mapping() if classes else list(range(len(self.state.classes)))
        first = self.data[0][0]
        if tuple(first.shape) == size and mapping == list(range(len(mapping))):
            return self.data
        return ModelView(self.data, size, mapping)

    def select(self, position: int) -> None:
        """Make image ``position`` of the filtered dataset the current image."""
        self._leave_upload()
        i = int(self._indices[position])
        x, y = self.data[i]
        c, h, w = self.state.input_size
        note = ""
        if tuple(x.shape) != (c, h, w):
            note = f" (converted from {'x'.join(map(str, x.shape))} to {c}x{h}x{w})"
            x = data.load_image(x, size=(h, w), channels=c, crop=True)
        label = self.model_label(int(y))
        if label is None and int(y) >= 0:
            classes = self._data_classes()
            what = classes[int(y)] if int(y) < len(classes) else str(int(y))
            note += f" — its class “{what}” is not one of the model's: true label unknown"
        files = getattr(self.data, "files", None)
        which = f"#{i}" + (f" {Path(files[i]).name}" if files else "")
        self.state.set_image(x, label, source=f"{self.source_name} {which}{note}")

    def select_index(self, index: int) -> None:
        """Make image ``index`` of the current dataset and split the current image (the class filter
        goes back to "all", so the index slider shows the dataset index)."""
        if not 0 <= int(index) < len(self.data):
            raise IndexError(f"index {index} is outside {self.source_name} (0..{len(self.data) - 1})")
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
            self.split.disabled = self.user_images
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
        ds = state.dataset  # the state's dataset, never a registry lookup of the model's name
        if (ds and ds != self.dataset.value and ds in available_datasets() and self._upload is None):
            self._quiet_select(self._add_source(ds))  # follow the model's dataset
            self._load(0)
            return
        if self.user_images and isinstance(self._sources[self.dataset.value][1], (Path, list)) \
                and tuple(self.data.image_shape) != tuple(state.input_size) and self._upload is None:
            self._load(self.index.value)  # the folder again, at the new model's size
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
            return
        if self._upload is None and len(self._indices):  # the label, as the new model's class
            _, y = self.data[int(self._indices[self.index.value])]
            label = self.model_label(int(y))
            if label != state.y:
                state.set_label(label)
                return
        self._show(state)

    @guarded
    def _on_image(self, state: ExplorerState) -> None:
        self._show(state)

    def _show(self, state: ExplorerState) -> None:
        if state.x is None:
            self.image.value = b""
            self.info.value = ""
            return
        self.image.value = R.png(R.to_uint8(state.x), scale=R.display_scale(*state.x.shape[1:], target=SLOT))
        pred = state.predict()
        ok = state.y is not None and pred.label == state.y
        colour = "#27ae60" if ok else ("#c0392b" if state.y is not None else "#2e4053")
        self.info.value = (
            '<div style="font-family:sans-serif;font-size:13px;line-height:1.5;overflow-wrap:anywhere">'
            f"<b>true label</b>: {html.escape(state.class_name(state.y))} · "
            f'<b>predicted</b>: <span style="color:{colour}" class="advviz-pred">'
            f"{html.escape(state.class_name(pred.label))}</span> "
            f"(confidence {pred.confidence:.1%})<br>"
            f'<span style="font-size:12px;color:#555">{html.escape(state.source)}</span></div>')
