"""Probes of issue 24 on user images and dataset folders (items 9, 10, 11, 12, 22).

Each case once gave a silent wrong answer or a raw error; it must now give the correct result or
one clear ``ValueError`` that names the image and says what to do. Kept forever.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageOps

from advviz import data


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` RGB pixels (no pixel data: decoding it would fail,
    so a refusal that reads the header only is the one tested)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------ item 9

def test_transparency_is_composited_over_white_not_black():
    clear = Image.new("RGBA", (6, 4), (0, 0, 0, 0))  # fully transparent: a viewer shows the background
    assert torch.allclose(data.load_image(_png(clear)), torch.ones(3, 4, 6))
    assert torch.allclose(data.load_image(clear), torch.ones(3, 4, 6))  # a PIL image too
    half_red = Image.new("RGBA", (2, 2), (255, 0, 0, 128))
    assert torch.allclose(data.load_image(_png(half_red))[:, 0, 0], torch.tensor([1.0, 127 / 255, 127 / 255]),
                          atol=1 / 255)
    la = Image.new("LA", (3, 3), (0, 0))
    x = data.load_image(_png(la))
    assert x.shape == (1, 3, 3) and torch.allclose(x, torch.ones_like(x))
    pal = Image.new("P", (3, 3), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0])
    assert torch.allclose(data.load_image(_png(pal, transparency=0)), torch.ones(3, 3, 3))
    arr = np.zeros((2, 2, 4), np.uint8)  # an RGBA array: composited the same way
    assert torch.allclose(data.load_image(arr), torch.ones(3, 2, 2))
    opaque = np.dstack([np.full((2, 2, 3), 51, np.uint8), np.full((2, 2), 255, np.uint8)])
    assert torch.allclose(data.load_image(opaque), torch.full((3, 2, 2), 0.2))


# ------------------------------------------------------------------------------------------ item 10

def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 16), (255, 255, 255))
    im.paste((0, 0, 0), (0, 0, 8, 16))  # a black band on the stored image's left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=95)
    x = data.load_image(buf.getvalue())
    assert x.shape == (3, 40, 16)  # upright: 16 wide, 40 tall
    assert x[:, :8].mean() < 0.1 and x[:, -8:].mean() > 0.9  # the band is now at the top
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())))
    assert torch.allclose(x, data.load_image(np.asarray(shown)))


def test_float_images_are_read_on_their_scale_or_refused():
    def tiff(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr, mode="F").save(buf, "TIFF")
        return buf.getvalue()

    x = data.load_image(tiff(np.full((4, 5), 0.5, np.float32)))
    assert x.shape == (1, 4, 5) and torch.allclose(x, torch.full_like(x, 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\].*Rescale"):
        data.load_image(tiff(np.full((4, 5), 300.0, np.float32)))
    sixteen = np.full((3, 3), 65535 // 2, np.uint16)  # 16-bit PNG: scaled by 1/65535, not clipped
    assert torch.allclose(data.load_image(_png(Image.fromarray(sixteen))), torch.full((1, 3, 3), 0.5), atol=1e-4)


# ------------------------------------------------------------------------------------------ item 11

@pytest.fixture
def no_decoding(monkeypatch):
    def decode(self):
        raise AssertionError("the image was decoded: the size must be refused from the header")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)


@pytest.mark.parametrize("side", [10_000, 20_000])  # 20,000: above Pillow's own bomb limit
def test_huge_image_refused_from_its_header(side, no_decoding):
    with pytest.raises(ValueError, match=r"too large .*MAX_IMAGE_PIXELS.*Shrink it") as err:
        data.load_image(_png_header_only(side, side))
    assert f"{side * side:,}" in str(err.value)


def test_large_jpeg_decoded_at_reduced_scale_large_png_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (20, 20), (200, 10, 10)).save(path)
    assert data.load_image(path).shape == (3, 10, 10)  # 1/2 scale fits 100 pixels
    png = tmp_path / "big.png"
    Image.new("RGB", (20, 20)).save(png)
    with pytest.raises(ValueError, match=rf"{png}.*too large \(20x20 = 400 pixels\)"):
        data.load_image(png)


# ------------------------------------------------------------------------------------------ items 12, 22

def _cifar_folder(root, colours: dict[str, tuple[int, int, int]]):
    for i, (name, colour) in enumerate(sorted(colours.items())):
        folder = root / "cifar10-jpg" / "test" / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), colour).save(folder / name, quality=95)
    return root / "cifar10-jpg" / "test"


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path / "cache"))
    data._load_cached.cache_clear()
    yield tmp_path / "cache"
    data._load_cached.cache_clear()


def test_dataset_file_replaced_in_place_is_decoded_again(tmp_path, fresh_cache):
    split = _cifar_folder(tmp_path / "root", {"a.jpg": (250, 0, 0), "b.jpg": (0, 250, 0), "c.jpg": (0, 0, 250)})
    first = data.load("cifar10", "test", root=tmp_path / "root", download=False)
    assert list((fresh_cache / "decoded").glob("*.pt"))  # the decoded cache was written
    target = split / "dog" / "a.jpg"
    index = sorted(p.name for p in (split / "dog").iterdir()).index("a.jpg") + len(list((split / "cat").iterdir()))
    assert first[index][0][0].mean() > 0.9  # red
    Image.new("RGB", (32, 32), (0, 0, 250)).save(target, quality=95)  # same name, new content
    data._load_cached.cache_clear()  # a new process
    second = data.load("cifar10", "test", root=tmp_path / "root", download=False)
    assert second[index][0][0].mean() < 0.1 and second[index][0][2].mean() > 0.9  # blue now, not the cached red
    assert len(list((fresh_cache / "decoded").glob("*.pt"))) == 1  # the stale cache was removed


@pytest.mark.parametrize("content, match", [
    ("truncated", r"damaged or truncated"),
    ("text", r"not a readable image"),
])
def test_broken_dataset_file_is_named(tmp_path, fresh_cache, content, match):
    split = _cifar_folder(tmp_path / "root", {"a.jpg": (250, 0, 0), "b.jpg": (0, 250, 0)})
    bad = split / "dog" / "a.jpg"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 2] if content == "truncated" else b"<html>not an image</html>")
    with pytest.raises(ValueError, match=match) as err:
        data.load("cifar10", "test", root=tmp_path / "root", download=False)
    assert str(bad) in str(err.value) and "delete it" in str(err.value)
