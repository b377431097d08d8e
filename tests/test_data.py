"""advviz.data: datasets, sampling, user images and their errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from advviz import data
from tests.conftest import requires_cifar


def test_digits_offline_split_is_fixed_and_disjoint():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert len(train) + len(test) == 1797
    assert train.image_shape == (1, 28, 28) and train.classes == [str(i) for i in range(10)]
    x, y = test[0]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert isinstance(y, int)
    # the digit sits in the central 20x20 box like MNIST
    xs, _ = test.tensors()
    assert xs[:, :, :4].abs().sum() == 0 and xs[:, :, -4:].abs().sum() == 0
    # disjoint: no test image equals a train image row-for-row at the same position in the raw order
    tr = {bytes(t.numpy().tobytes()) for t in train.images}
    assert sum(bytes(t.numpy().tobytes()) in tr for t in test.images) < 5  # sklearn digits has a few duplicates
    assert torch.equal(data.load("digits", "test").images, test.images)


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="split"):
        data.load("digits", "validation")


def test_mnist_test_split_and_missing_train(tmp_path):
    import os

    if not (os.environ.get("ADVVIZ_DATA") and (os.path.isdir(os.path.join(os.environ["ADVVIZ_DATA"], "mnist")))):
        pytest.skip("MNIST not available (set ADVVIZ_DATA to a folder holding mnist/raw/)")
    ds = data.load("mnist", "test")
    assert len(ds) == 10000 and ds.image_shape == (1, 28, 28)
    counts = torch.bincount(ds.labels, minlength=10)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    with pytest.raises(data.DatasetNotFoundError, match="Only the test split") as info:
        data.load("mnist", "train", download=False)
    assert "holdout_split" in str(info.value)
    with pytest.raises(data.DatasetNotFoundError, match="ADVVIZ_DATA"):
        data.load("mnist", "test", root=tmp_path, download=False)


def test_mnist_reads_plain_idx_and_rejects_corrupt(tmp_path):
    raw = tmp_path / "mnist" / "raw"
    raw.mkdir(parents=True)
    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big")
                                                 + (28).to_bytes(4, "big") + imgs.tobytes())
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + bytes([3, 7]))
    ds = data.load("mnist", "test", root=tmp_path, download=False)
    assert ds.labels.tolist() == [3, 7]
    assert torch.equal(ds.images[1, 0], torch.from_numpy(imgs[1]))
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + b"\x00" * 20)
    data._load_cached.cache_clear()
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.load("mnist", "test", root=tmp_path, download=False)


def test_cifar_missing_says_where_it_looked(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="cifar10-jpg"):
        data.load("cifar10", "test", root=tmp_path, download=False)


@requires_cifar
def test_cifar10_test_split(cifar_test):
    assert len(cifar_test) == 10000
    assert cifar_test.classes[:3] == ["airplane", "automobile", "bird"]
    x, y = cifar_test[1234]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert torch.bincount(cifar_test.labels).tolist() == [1000] * 10


def test_holdout_split_is_seeded_partition():
    ds = data.load("digits", "test")
    a, b = data.holdout_split(ds, 0.25, seed=3)
    assert len(a) + len(b) == len(ds) and len(b) == round(len(ds) * 0.25)
    a2, b2 = data.holdout_split(ds, 0.25, seed=3)
    assert torch.equal(b.images, b2.images)
    with pytest.raises(ValueError):
        data.holdout_split(ds, 1.5)


def test_sample_seeded_and_correct_only():
    ds = data.load("digits", "test")
    x1, y1 = data.sample(ds, 10, seed=1)
    x2, y2 = data.sample(ds, 10, seed=1)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (10, 1, 28, 28)

    class Always3(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[:, 3] = 1
            return out

    x, y = data.sample(ds, 5, model=Always3())
    assert (y == 3).all()
    with pytest.raises(ValueError, match="classified correctly"):
        data.sample(ds, 200, model=Always3())
    with pytest.raises(ValueError):
        data.sample(ds, 10_000)


def test_load_image_sources(tmp_path):
    arr = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(arr).save(path)
    from_path = data.load_image(path)
    assert from_path.shape == (3, 20, 30)
    assert torch.allclose(from_path, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    assert torch.equal(data.load_image(buf.getvalue()), from_path)
    assert torch.equal(data.load_image(Image.fromarray(arr)), from_path)
    assert torch.equal(data.load_image(arr), from_path)
    assert data.load_image(path, size=32).shape == (3, 32, 32)
    gray = data.load_image(path, channels=1)
    assert gray.shape == (1, 20, 30)
    assert data.load_image(gray, channels=3).shape == (3, 20, 30)
    rgba = Image.fromarray(np.dstack([arr, np.full((20, 30), 255, np.uint8)]), "RGBA")
    assert data.load_image(rgba).shape == (3, 20, 30)


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot read"):
        data.load_image(bad)
    with pytest.raises(ValueError, match="not a readable image"):
        data.load_image(b"\x00\x01")
    with pytest.raises(ValueError, match="NaN"):
        data.load_image(np.full((4, 4), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="divide by 255"):
        data.load_image(np.full((4, 4, 3), 200.0, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        data.load_image(np.zeros((2, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="channels"):
        data.load_image(np.zeros((4, 4), dtype=np.uint8), channels=2)
    with pytest.raises(TypeError):
        data.load_image(3.5)
