"""Datasets, sampling and user images.

All datasets yield ``(image, label)`` with ``image`` a float tensor in ``[0, 1]`` of shape
``(C, H, W)`` and expose ``.classes``.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images), upsampled to
  20x20 and centred on a 28x28 canvas like MNIST; a fixed seeded 80/20 train/test split.
  Needs no file and no network: the embedded offline default.
* ``mnist``: torchvision's MNIST layout (``ROOT/MNIST/raw``) when present, else the raw idx
  files under ``ROOT/mnist/raw`` (gzipped or not), else a torchvision download when allowed.
* ``cifar10``: torchvision's pickled batches (``ROOT/cifar-10-batches-py``) when present, else
  the ImageFolder layout ``ROOT/cifar10-jpg/{train,test}/<class>/*.jpg``, else a download.

The root is the ``root`` argument, then ``$ADVVIZ_DATA``, then the user cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import math
import os
import re
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from sklearn.datasets import load_digits
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, MNIST

from advviz import metrics
from advviz._modules import module_device
from advviz._paths import cache_dir, data_root, offline

__all__ = [
    "ImageDataset",
    "DATASETS",
    "load",
    "holdout_split",
    "sample",
    "load_image",
    "open_image",
    "folder",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "DatasetNotFoundError",
    "cifar_augment",
]

log = logging.getLogger(__name__)

DATASETS = ("digits", "mnist", "cifar10")
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))

#: The largest image (width x height) :func:`load_image` and :func:`open_image` decode. Decoding
#: costs about 3 bytes a pixel and the float tensor 12 more: a 10,000 x 10,000 PNG of a few hundred
#: KB would need several GB. A larger JPEG is decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft
#: mode) when that brings it under the limit; any other larger image is refused with a
#: ``ValueError`` read from its header, before decoding. Raise it here if you need to.
MAX_IMAGE_PIXELS = 40_000_000


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset or one of its splits is not available locally nor downloadable."""


class ImageDataset(Dataset):
    """An in-memory image dataset stored as ``uint8`` (compact) and served as float ``[0, 1]``.

    Args:
        images: ``(N, C, H, W)`` uint8 tensor.
        labels: ``(N,)`` int64 tensor.
        classes: class names, index ``i`` names label ``i``.
        name: dataset name, for messages.
        split: split name, for messages.
        files: the image files, in dataset order (:func:`folder`; ``None`` otherwise).
        sha256: a digest of the images' files (:func:`folder`; ``None`` otherwise).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        *,
        name: str = "",
        split: str = "",
        files: Sequence[str] | None = None,
        sha256: str | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a (N, C, H, W) uint8 tensor")
        if labels.shape != (images.shape[0],):
            raise ValueError("labels must be (N,) and match the number of images")
        self.images = images
        self.labels = labels.long()
        self.classes = list(classes)
        self.name = name
        self.split = split
        self.files = list(files) if files is not None else None
        self.sha256 = sha256

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255.0), int(self.labels[index])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def tensors(self, indices: Sequence[int] | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x, y)``: ``x`` float ``(N, C, H, W)`` in ``[0, 1]``, ``y`` int64 ``(N,)``."""
        if indices is None:
            return self.images.float().div_(255.0), self.labels.clone()
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx].float().div_(255.0), self.labels[idx].clone()

    def subset(self, indices: Sequence[int] | torch.Tensor, *, split: str | None = None) -> ImageDataset:
        """A new dataset holding the given indices (data shared where possible)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        files = [self.files[int(i)] for i in idx] if self.files is not None else None
        return ImageDataset(self.images[idx], self.labels[idx], self.classes, name=self.name,
                            split=split if split is not None else self.split, files=files)

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={self.image_shape}, classes={len(self.classes)})")


# ---------------------------------------------------------------------------------------------
# digits (offline default)
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _digits_all() -> tuple[torch.Tensor, torch.Tensor]:
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8)
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).clamp_(0, 1)
    x = F.pad(x, (4, 4, 4, 4))  # centred in 28x28, like MNIST's 20x20 box
    images = (x * 255.0).round_().to(torch.uint8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return images, labels


def _load_digits(split: str) -> ImageDataset:
    images, labels = _digits_all()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = len(labels) // 5
    idx = perm[n_test:] if split == "train" else perm[:n_test]
    return ImageDataset(images[idx], labels[idx], DIGIT_CLASSES, name="digits", split=split)


# ---------------------------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------------------------

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4:
        raise ValueError(f"{path} is not an idx file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated or corrupt: expected {int(np.prod(dims))} values, got {arr.size}")
    return arr.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def _load_mnist(root: Path, split: str, download: bool) -> ImageDataset:
    img_stem, lab_stem = _MNIST_FILES[split]
    for folder in (root / "MNIST" / "raw", root / "mnist" / "raw", root / "mnist"):
        img, lab = _find_idx(folder, img_stem), _find_idx(folder, lab_stem)
        if img is not None and lab is not None:
            images = torch.from_numpy(_read_idx(img).copy()).unsqueeze(1)
            labels = torch.from_numpy(_read_idx(lab).astype(np.int64))
            return ImageDataset(images, labels, DIGIT_CLASSES, name="mnist", split=split)
    if download:
        try:
            ds = MNIST(str(root), train=(split == "train"), download=True)
        except Exception as exc:  # network errors come in many types
            raise DatasetNotFoundError(_mnist_missing_message(root, split, f"download failed: {exc}")) from exc
        return ImageDataset(ds.data.unsqueeze(1).clone(), ds.targets.clone(), DIGIT_CLASSES,
                            name="mnist", split=split)
    raise DatasetNotFoundError(_mnist_missing_message(root, split, "download not allowed"))


def _mnist_missing_message(root: Path, split: str, why: str) -> str:
    msg = (f"MNIST {split!r} split not found under {root}/mnist/raw ({_MNIST_FILES[split][0]}[.gz]); {why}.")
    if split == "train":
        have_test = any(_find_idx(f, _MNIST_FILES["test"][0]) for f in (root / "MNIST" / "raw", root / "mnist" / "raw"))
        if have_test:
            msg += (" Only the test split is available here. Split it instead: "
                    "train, held_out = advviz.data.holdout_split(advviz.data.load('mnist', 'test'), 0.2).")
    else:
        msg += " Set ADVVIZ_DATA to a folder containing mnist/raw, or allow download=True with a network."
    return msg


# ---------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------

def _decode_rgb32(path: Path) -> np.ndarray:
    """One dataset file as a ``(32, 32, 3)`` uint8 array; a bad file is named in a ``ValueError``."""
    advice = ("; replace it with the file from a good copy of the dataset, or delete it "
              "(its class then has one image fewer)")
    im = open_image(path, advice=advice)
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if arr.shape != (32, 32, 3):
        raise ValueError(f"{path}: expected a 32x32 RGB image, got shape {arr.shape}{advice}")
    return arr


def _load_cifar_folder(folder: Path, split: str) -> ImageDataset:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"{folder} has no class folders")
    files: list[Path] = []
    labels: list[int] = []
    for ci, cname in enumerate(classes):
        cfiles = sorted(p for p in (folder / cname).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        files.extend(cfiles)
        labels.extend([ci] * len(cfiles))
    cache = _folder_cache_path(folder, files)
    if cache is not None and cache.is_file():
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True)
            if blob["images"].shape[0] == len(files):
                return ImageDataset(blob["images"], blob["labels"], classes, name="cifar10", split=split)
        except Exception:  # a stale or broken cache is simply rebuilt
            log.warning("ignoring unreadable dataset cache %s", cache)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(_decode_rgb32, files, chunksize=256))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    label_t = torch.tensor(labels, dtype=torch.int64)
    if cache is not None:
        _write_folder_cache(cache, images, label_t)
    return ImageDataset(images, label_t, classes, name="cifar10", split=split)


def _folder_cache_path(folder: Path, files: Sequence[Path]) -> Path | None:
    """A decoded-tensor cache keyed by the folder's path and every file's name, size and mtime.

    A file replaced in place (same name, new content) changes its size or modification time and
    so the key: the folder is decoded again rather than served from a stale cache. Older caches of
    the same folder are removed when the new one is written (:func:`_write_folder_cache`).
    """
    try:
        h = hashlib.sha256()
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        where = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
        return cache_dir() / "decoded" / f"cifar10_{folder.name}_{where}_{len(files)}_{h.hexdigest()[:16]}.pt"
    except OSError:
        return None


def _write_folder_cache(cache: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Write ``cache`` atomically and remove the stale caches of the same folder."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"images": images, "labels": labels}, tmp)
        os.replace(tmp, cache)
        prefix = cache.name.rsplit("_", 2)[0] + "_"  # cifar10_<split>_<folder digest>_
        for old in cache.parent.glob(prefix + "*.pt"):
            if old != cache:
                old.unlink(missing_ok=True)
    except OSError:
        log.debug("could not write dataset cache %s", cache)


def _load_cifar10(root: Path, split: str, download: bool) -> ImageDataset:
    if (root / "cifar-10-batches-py").is_dir():
        ds = CIFAR10(str(root), train=(split == "train"), download=False)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return ImageDataset(images, torch.tensor(ds.targets), ds.classes, name="cifar10", split=split)
    folder = root / "cifar10-jpg" / split
    if folder.is_dir():
        return _load_cifar_folder(folder, split)
    if download:
        try:
            CIFAR10(str(root), train=(split == "train"), download=True)
        except Exception as exc:
            raise DatasetNotFoundError(
                f"CIFAR-10 {split!r} not found under {root} (cifar-10-batches-py/ or cifar10-jpg/{split}/) "
                f"and the download failed: {exc}. Set ADVVIZ_DATA to a folder that holds it.") from exc
        return _load_cifar10(root, split, download=False)
    raise DatasetNotFoundError(
        f"CIFAR-10 {split!r} not found under {root}: expected cifar-10-batches-py/ (torchvision) or "
        f"cifar10-jpg/{split}/<class>/*.jpg. Set ADVVIZ_DATA, pass root=..., or allow download=True.")


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _load_cached(name: str, split: str, root: str, download: bool) -> ImageDataset:
    if name == "digits":
        return _load_digits(split)
    if name == "mnist":
        return _load_mnist(Path(root), split, download)
    return _load_cifar10(Path(root), split, download)


def load(name: str, split: str = "test", root: str | os.PathLike[str] | None = None,
         download: bool | None = None) -> ImageDataset:
    """Load a dataset split as an in-memory :class:`ImageDataset`.

    Args:
        name: ``"digits"``, ``"mnist"`` or ``"cifar10"``.
        split: ``"train"`` or ``"test"``.
        root: dataset folder; default ``$ADVVIZ_DATA``, then ``<user cache>/data``.
        download: allow a torchvision download when the files are missing. ``None`` means yes
            unless ``$ADVVIZ_OFFLINE`` is set. Ignored for ``digits`` (always offline).

    Returns:
        Dataset of ``(image (C, H, W) float in [0, 1], label int)`` with ``.classes``.
        Repeated calls with the same arguments return the same object (decoded once).

    Raises:
        ValueError: unknown name or split.
        DatasetNotFoundError: the split is neither on disk nor downloadable; the message says
            where it looked and what to do.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    if download is None:
        download = not offline()
    resolved = str(data_root(root).resolve()) if name != "digits" else ""
    return _load_cached(name, split, resolved, bool(download) and name != "digits")


def holdout_split(dataset: ImageDataset, fraction: float = 0.2, *, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Split a dataset into ``(train, held_out)`` with a seeded permutation.

    Used where only one split exists (MNIST's test split here): train on one part, report on
    the other, and say so.

    Args:
        dataset: the dataset to split.
        fraction: share of images in the held-out part, in ``(0, 1)``.
        seed: permutation seed.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    n_held = max(1, int(round(len(dataset) * fraction)))
    base = dataset.split or "data"
    return (dataset.subset(perm[n_held:], split=f"{base}[train part]"),
            dataset.subset(perm[:n_held], split=f"{base}[held-out part]"))


@torch.no_grad()
def sample(dataset: Dataset, n: int, *, seed: int = 0, model: torch.nn.Module | None = None,
           device: str | torch.device | None = None, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` images at random (seeded), optionally only ones ``model`` classifies correctly.

    Args:
        dataset: any dataset of ``(image, label)``.
        n: number of images.
        seed: permutation seed.
        model: when given, keep only images whose prediction equals the label (as the papers
            do, so that every misclassification after an attack is the attack's doing). A list
            or tuple of models keeps images that *every* model classifies correctly.
        device: where to run the model (default: the model's parameters' device).
        batch_size: batch size for the model's forward passes.

    Returns:
        ``(x, y)``: ``x`` float ``(n, C, H, W)`` in ``[0, 1]`` on the CPU, ``y`` int64 ``(n,)``.

    Raises:
        ValueError: fewer than ``n`` eligible images exist.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    models: list[torch.nn.Module] = []
    if model is not None:
        models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        if n > len(dataset):
            raise ValueError(f"asked for {n} images but the dataset has {len(dataset)}")
        return _gather(dataset, perm[:n])
    xs, ys, have = [], [], 0
    for start in range(0, len(perm), batch_size):
        x, y = _gather(dataset, perm[start:start + batch_size])
        keep = torch.ones_like(y, dtype=torch.bool)
        for m in models:
            dev = torch.device(device) if device is not None else module_device(m)
            pred = metrics.predictions(m, x.to(dev), batch_size=batch_size).cpu()
            keep &= pred == y
        xs.append(x[keep])
        ys.append(y[keep])
        have += int(keep.sum())
        if have >= n:
            break
    if have < n:
        raise ValueError(f"only {have} of {len(dataset)} images are classified correctly; asked for {n}")
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def _gather(dataset: Dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(dataset, ImageDataset):
        return dataset.tensors(idx)
    items = [dataset[int(i)] for i in idx]
    return torch.stack([it[0] for it in items]), torch.tensor([int(it[1]) for it in items])


def load_image(source: Any, *, size: int | tuple[int, int] | None = None,
               channels: int | None = None, crop: bool = False) -> torch.Tensor:
    """Load a user's image as a ``(C, H, W)`` float tensor in ``[0, 1]``, as an image viewer shows it.

    * **Transparency** (RGBA, LA, a palette or grayscale with a transparent colour, an
      ``(H, W, 4)`` array) is composited over a **white** background, as viewers and browsers
      show it; the alpha channel is then dropped.
    * **Orientation:** a JPEG's (or TIFF's) EXIF orientation is applied
      (:func:`PIL.ImageOps.exif_transpose`), so a phone photo stands as it was taken.
    * **Bit depth:** 16-bit grayscale is scaled by 1/65535; a 32-bit float image (mode ``F``,
      e.g. a float TIFF) is taken as is when its values lie in ``[0, 1]`` and refused otherwise;
      a 32-bit integer image is refused (its scale is unknown).
    * **Size:** images above :data:`MAX_IMAGE_PIXELS` are refused from their header, before
      decoding (a large JPEG is first tried at a reduced decoding scale).

    Grayscale files (``L``, ``LA``, bilevel, 16-bit, float) give ``C = 1``; every other file gives
    ``C = 3``.

    Args:
        source: a file path, ``bytes`` of an encoded image (PNG, JPEG, ...), a PIL image, a
            NumPy array (``(H, W)``, ``(H, W, C)`` with C in {1, 3, 4}, uint8 in [0, 255] or
            float in [0, 1]; C = 4 is RGBA) or a torch tensor (``(H, W)`` or ``(C, H, W)``,
            float in [0, 1]).
        size: resize to ``size`` (int: square) with bilinear, antialiased resampling.
        channels: convert to 1 (grayscale, ITU-R 601 luma) or 3 (RGB) channels.
        crop: with ``size``, first centre-crop the image to ``size``'s aspect ratio (the largest
            centred window), so that it is resized without being squashed (what the explorer's
            upload and :func:`folder` do).

    Returns:
        ``(C, H, W)`` float32 tensor in ``[0, 1]``.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unreadable, damaged or too large a file (the message names it), wrong number
            of dimensions or channels, NaN/inf, or values outside ``[0, 1]`` for float input (with
            a hint for the 0–255 scale).
    """
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        x = _pil_to_tensor(open_image(source))
    elif isinstance(source, Image.Image):
        x = _pil_to_tensor(_checked(source, "the PIL image given", ""))
    elif isinstance(source, np.ndarray):
        x = _array_to_tensor(source)
    elif isinstance(source, torch.Tensor):
        x = _tensor_to_chw(source)
    else:
        raise TypeError(f"cannot load an image from {type(source).__name__}; "
                        "pass a path, bytes, PIL image, NumPy array or tensor")
    if channels is not None:
        x = _convert_channels(x, channels)
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if crop:
            x = _centre_crop(x, hw)
        if x.shape[1:] != hw:
            x = F.interpolate(x.unsqueeze(0), size=hw, mode="bilinear", align_corners=False,
                              antialias=True).squeeze(0).clamp_(0, 1)
    return x.contiguous()


def _centre_crop(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The largest centred window of ``x`` ``(C, H, W)`` with the aspect ratio of ``hw``."""
    h, w = hw
    ih, iw = x.shape[1:]
    if iw * h == ih * w:
        return x
    cw, ch = (iw, round(iw * h / w)) if iw * h < ih * w else (round(ih * w / h), ih)
    left, top = (iw - cw) // 2, (ih - ch) // 2
    return x[:, top:top + ch, left:left + cw]


def open_image(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, name: str | None = None,
               advice: str = "") -> Image.Image:
    """Open and decode an encoded image file, checked: the PIL image a viewer would show.

    Its size is checked from the header before decoding (:data:`MAX_IMAGE_PIXELS`; a larger JPEG
    is decoded at a reduced scale when that fits), and its EXIF orientation is applied. The mode
    is the file's (transparency and bit depth are handled by :func:`load_image`).

    Args:
        source: a file path or the file's bytes.
        name: how messages name the image (default: the path, or "the bytes given").
        advice: appended to error messages (what to do in the caller's context).

    Returns:
        The decoded PIL image (loaded; the file is closed).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: not an image, damaged or truncated, or too large; the message names it.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        what, fp = name or str(path), path
    else:
        what, fp = name or "the bytes given", io.BytesIO(bytes(source))
    try:
        with Image.open(fp) as im:
            _checked(im, what, advice)
            im.load()
            out = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:  # Pillow's own limit, checked while opening
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(claimed[1]):,} pixels" if claimed else "more pixels than Pillow opens"
        raise ValueError(f"cannot read {what}: {_too_large(pixels + ' claimed by its header')}{advice}") from None
    except UnidentifiedImageError:
        raise ValueError(f"cannot read {what}: not a readable image (not a PNG, JPEG, BMP, GIF, TIFF, WebP... file)"
                         f"{advice}") from None
    except (OSError, SyntaxError, struct.error, EOFError) as exc:
        raise ValueError(f"cannot read {what}: not a readable image, the file is damaged or truncated ({exc})"
                         f"{advice}") from None
    return out


_ORIENTATION = 0x0112  # the EXIF orientation tag


def _too_large(pixels: str) -> str:
    return (f"the image is too large ({pixels}), above advviz.data.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,} pixels "
            "(decoding it would take gigabytes of memory). Shrink it first (e.g. with Pillow: "
            "im.thumbnail((2048, 2048)); im.save(...)), or raise advviz.data.MAX_IMAGE_PIXELS if you mean it")


def _checked(im: Image.Image, what: str, advice: str) -> Image.Image:
    """Refuse an image above :data:`MAX_IMAGE_PIXELS` from its header (not yet decoded); a JPEG is
    first set to decode at the smallest reduction (1/2, 1/4, 1/8) that fits (Pillow's draft)."""
    w, h = im.size
    if w * h <= MAX_IMAGE_PIXELS or not getattr(im, "tile", None):  # small, or already decoded
        return im
    if im.format == "JPEG":  # draft mode: the decoder itself reduces the size
        for k in (2, 4, 8):
            if math.ceil(w / k) * math.ceil(h / k) <= MAX_IMAGE_PIXELS:
                im.draft(im.mode, (math.ceil(w / k), math.ceil(h / k)))
                log.info("%s is %dx%d pixels: decoded at 1/%d scale (%dx%d)", what, w, h, k, *im.size)
                return im
    raise ValueError(f"cannot read {what}: {_too_large(f'{w}x{h} = {w * h:,} pixels')}{advice}")


def _pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """A decoded PIL image as ``(C, H, W)`` float in ``[0, 1]``: transparency composited over white,
    16-bit scaled, float taken as is in ``[0, 1]`` (refused outside), 32-bit integers refused."""
    if im.getexif().get(_ORIENTATION, 1) != 1:  # (open_image has applied it already)
        im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode == "F":
        return _array_to_tensor(np.asarray(im, dtype=np.float32), what="a float (mode F) image")
    if mode.startswith("I;16"):
        return _array_to_tensor(np.asarray(im).astype(np.float32) / 65535.0)
    if mode in ("I", "I;32", "I;32B", "I;32L"):
        raise ValueError("a 32-bit integer image has no known scale: save it as an 8- or 16-bit PNG, or pass a "
                         "NumPy array of floats in [0, 1]")
    gray = mode in ("1", "L", "LA", "La") or (mode == "P" and im.palette is not None and im.palette.mode == "L")
    if "A" in im.getbands() or "a" in im.getbands() or "transparency" in im.info:
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
    im = im.convert("L" if gray else "RGB")
    return _array_to_tensor(np.asarray(im, dtype=np.uint8))


def _array_to_tensor(arr: np.ndarray, *, what: str = "") -> torch.Tensor:
    """``(H, W[, C])`` uint8 or float array as ``(C, H, W)`` float; ``C = 4`` is RGBA, composited over white."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image array of shape (H, W) or (H, W, C) with C in 1, 3, 4; got {arr.shape}")
    if arr.dtype == np.uint8:
        t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float().div_(255.0)
    elif np.issubdtype(arr.dtype, np.floating):
        t = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True)).permute(2, 0, 1)
        _check_range(t, what)
    else:
        raise ValueError(f"unsupported array dtype {arr.dtype}; use uint8 (0-255) or float (0-1)")
    if t.shape[0] == 4:  # RGBA: composite over white, as image viewers show transparency
        alpha = t[3:]
        t = t[:3] * alpha + (1.0 - alpha)
    return t


def _tensor_to_chw(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected a tensor of shape (H, W) or (C, H, W) with C in 1, 3; got {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    t = t.float()
    _check_range(t)
    return t


def _check_range(t: torch.Tensor, what: str = "") -> None:
    """Refuse a float image with NaN/inf or values outside ``[0, 1]`` (``what`` names it)."""
    if not torch.isfinite(t).all():
        raise ValueError(f"{what or 'the image'} contains NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0.0 or hi > 1.0:
        hint = " (it looks like 0-255: divide by 255)" if hi > 1.0 and hi <= 255.0 and lo >= 0 else ""
        raise ValueError(f"float image values must lie in [0, 1]; got [{lo:.3g}, {hi:.3g}] in "
                         f"{what or 'the image'}{hint}. Rescale it to [0, 1] (e.g. divide by its maximum), or "
                         "save it as an 8-bit PNG")


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if x.shape[0] == channels:
        return x
    if channels == 3:
        return x.expand(3, -1, -1).clone()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (x * weights).sum(0, keepdim=True)


#: The file types :func:`folder` reads (Pillow decodes them all).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _image_files(where: Path) -> list[Path]:
    return sorted(p for p in where.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def folder(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
           size: int | Sequence[int] | None = None, classes: Sequence[str] | None = None,
           channels: int | None = None) -> ImageDataset:
    """Your own images as a dataset: a folder of class folders, a flat folder, or a list of files.

    * **A folder of class folders** (torchvision's ImageFolder layout, ``path/<class>/*.jpg``):
      each image's label is its folder's class. With ``classes`` (the model's class names, in the
      order of its outputs) a folder named like one of them gets that class's index (``cat/`` is 3
      for CIFAR-10's names); a folder named otherwise is refused. Without it, the classes are the
      folder names in sorted order.
    * **A flat folder** (images directly in ``path``) or **a list of image files**: the labels are
      unknown (``-1``).

    Every image is read as a viewer shows it (:func:`load_image`: EXIF orientation, transparency
    over white, size limits), centre-cropped to the aspect ratio of ``size`` and resized to it
    (what the explorer's upload does), and converted to ``channels``.

    Args:
        path: the folder, or a list of image files (:data:`IMAGE_SUFFIXES`).
        size: the model's ``(C, H, W)`` (its ``input_size``), ``(H, W)``, or one side. ``None``:
            every image must already have the same size.
        classes: the model's class names (see above).
        channels: 1 or 3 (default: ``size``'s ``C``, else 3 when any image is in colour, else 1).

    Returns:
        An :class:`ImageDataset` (``name`` the folder's name, ``split`` ``"folder"``) with
        ``.files`` (the image paths, in dataset order) and ``.sha256`` (one digest of every
        file's name and content: the identity of the images, for provenance).

    Raises:
        FileNotFoundError: ``path`` or a listed file does not exist.
        ValueError: no image found, a class folder not in ``classes``, images of different sizes
            without ``size``, or a file that is not a readable image (the message names it).
    """
    if isinstance(path, (str, os.PathLike)):
        root = Path(path).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"image folder not found: {root}")
        if not root.is_dir():
            raise ValueError(f"{root} is a file, not a folder: pass the folder that holds the images, or a list of "
                             "files")
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _image_files(d))
        name = root.resolve().name
        if subdirs:
            found = [d.name for d in subdirs]
            if classes is not None:
                names = [str(c) for c in classes]
                unknown = [c for c in found if c not in names]
                if unknown:
                    raise ValueError(f"{root}: the class folder(s) {', '.join(unknown)} are not among the classes "
                                     f"given ({', '.join(names[:12])}{', ...' if len(names) > 12 else ''}); rename "
                                     "them, or leave classes out to number the folders in sorted order")
                index = {c: i for i, c in enumerate(names)}
            else:
                names, index = found, {c: i for i, c in enumerate(found)}
            files = [(p, index[d.name]) for d in subdirs for p in _image_files(d)]
        else:
            names = [str(c) for c in classes] if classes is not None else []
            files = [(p, -1) for p in _image_files(root)]
        if not files:
            raise ValueError(f"no image found in {root} (looked for {', '.join(IMAGE_SUFFIXES)}, directly in it or "
                             "in one folder per class)")
    else:
        files = [(Path(p).expanduser(), -1) for p in path]
        if not files:
            raise ValueError("the list of image files is empty")
        names, name = ([str(c) for c in classes] if classes is not None else []), "files"
        for p, _ in files:
            if not p.is_file():
                raise FileNotFoundError(f"image file not found: {p}")
    want = tuple(int(v) for v in ((size, size) if isinstance(size, int) else size)) if size is not None else None
    if want is not None and len(want) == 3:
        channels = want[0] if channels is None else channels
        want = want[1:]
    if want is not None and (len(want) != 2 or min(want) < 1):
        raise ValueError(f"size must be (C, H, W), (H, W) or one side; got {size!r}")
    digest = hashlib.sha256()
    images = []
    for p, _ in files:
        blob = p.read_bytes()
        digest.update(f"{p.name}\0{hashlib.sha256(blob).hexdigest()}\n".encode())
        x = _pil_to_tensor(open_image(blob, name=str(p)))
        images.append(load_image(x, size=want, crop=True) if want is not None else x)
    if channels is None:
        channels = 3 if any(x.shape[0] == 3 for x in images) else 1
    images = [_convert_channels(x, channels) for x in images]
    shapes = sorted({tuple(x.shape[1:]) for x in images})
    if len(shapes) > 1:
        raise ValueError(f"the images have different sizes ({', '.join('x'.join(map(str, s)) for s in shapes[:4])}"
                         f"{', ...' if len(shapes) > 4 else ''}): give size= (the model's input_size) to resize them")
    stack = (torch.stack(images) * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return ImageDataset(stack, torch.tensor([y for _, y in files], dtype=torch.int64), names, name=name,
                        split="folder", files=[str(p) for p, _ in files], sha256=digest.hexdigest())


def cifar_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (4-pixel zero padding) and horizontal flip, batched: ``(B, C, H, W)`` -> same."""
    b, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    gen_dev = generator.device if generator is not None else x.device
    dx = torch.randint(0, 9, (b,), generator=generator, device=gen_dev).to(x.device)
    dy = torch.randint(0, 9, (b,), generator=generator, device=gen_dev).to(x.device)
    flip = torch.rand(b, generator=generator, device=gen_dev).to(x.device) < 0.5
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device).view(1, h))  # (B, H)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device).view(1, w))  # (B, W)
    cols = torch.where(flip.view(b, 1), cols.flip(1), cols)
    out = padded[torch.arange(b, device=x.device).view(b, 1, 1), :, rows.view(b, h, 1), cols.view(b, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()
