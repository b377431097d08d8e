"""Your own model and images (issue 26) outside the widgets: ``models.wrap``, ``models.from_factory``,
``data.folder``, and ``advviz evaluate`` / ``advviz explore`` with ``--arch/--weights``, ``--model`` and a
``--data`` folder. The explorer's side is in ``tests/test_widgets_own_model.py``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn


class SmallCifarNet(nn.Module):
    """A user's CIFAR-size network that is not in the zoo (in-place ReLUs, as many are written)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def write_images(root: Path, classes: dict[str, int], *, seed: int = 0, gray: bool = False) -> Path:
    """``root/<class>/<i>.png`` (or flat when a class is ``""``): images of different sizes and shapes."""
    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        folder = root / name if name else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = 30 + 7 * i, 45 + 3 * i
            arr = rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"img{i}.png")
    return root


# ---------------------------------------------------------------------------------------------
# models.wrap
# ---------------------------------------------------------------------------------------------

def test_wrap_infers_channels_classes_and_the_gradcam_layer():
    from advviz import explain, models

    torch.manual_seed(0)
    net = SmallCifarNet()
    w = models.wrap(net, input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25,) * 3, classes=list("abcdefghij"),
                    name="mine", dataset="cifar10")
    assert isinstance(w, models.Classifier) and w.net is net and not w.training
    assert w.input_size == (3, 32, 32) and w.num_classes == 10 and w.classes[3] == "d" and w.name == "mine"
    assert w.last_conv == "net.features.3" and w.dataset == "cifar10"
    assert not any(getattr(m, "inplace", False) for m in net.modules())  # hooks see each layer's own output
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(w(x), net((x - 0.5) / 0.25), atol=1e-6)  # normalisation inside
    cam = explain.gradcam(w, x)  # the default layer is found by name through the wrapper
    assert cam.shape == (2, 1, 32, 32)
    assert [n for n, _ in w.named_modules()][:3] == ["", "normalize", "net"]


def test_wrap_refuses_what_it_cannot_infer_with_one_clear_message():
    from advviz import models

    net = SmallCifarNet()
    with pytest.raises(ValueError, match=r"needs input_size=\(C, H, W\).*\(3, 32, 32\)"):
        models.wrap(net)
    with pytest.raises(ValueError, match=r"first convolution .* takes 3: give input_size=\(3, 32, 32\)"):
        models.wrap(net, input_size=(1, 32, 32))
    with pytest.raises(ValueError, match="3 channel"):
        models.wrap(net, input_size=32, mean=(0.5, 0.5), std=(0.2, 0.2))
    with pytest.raises(ValueError, match="both mean and std"):
        models.wrap(net, input_size=32, mean=0.5)
    with pytest.raises(ValueError, match="classes has 3 names but SmallCifarNet outputs 10"):
        models.wrap(net, input_size=32, classes=["a", "b", "c"])
    with pytest.raises(TypeError, match="wrap takes an nn.Module"):
        models.wrap(lambda x: x, input_size=32)  # type: ignore[arg-type]

    class Pair(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x

    with pytest.raises(ValueError, match="returns a tuple, not a tensor of logits"):
        models.wrap(Pair(), input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="did not run on a zero image of shape \\(1, 3, 5, 5\\)"):
        models.wrap(nn.Sequential(nn.Conv2d(3, 4, 7), nn.Flatten(), nn.Linear(4, 10)), input_size=(3, 5, 5))


def test_wrap_a_grayscale_model_and_wrap_again():
    from advviz import models

    g = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 28 * 28, 10))
    w = models.wrap(g, input_size=28, mean=0.5, std=0.5)
    assert w.input_size == (1, 28, 28) and w.normalization == ([0.5], [0.5])
    with pytest.raises(ValueError, match=r"expects grayscale images of shape \(B, 1, H, W\)"):
        w(torch.rand(1, 3, 28, 28))
    again = models.wrap(w, classes=[str(i) for i in range(10)], name="digits net")
    assert again.net is g and again.normalization == ([0.5], [0.5]) and again.name == "digits net"


def test_from_factory_imports_a_module_or_a_file(tmp_path, monkeypatch):
    from advviz import models

    (tmp_path / "my_nets.py").write_text("from torch import nn\n"
                                         "def build(width=4):\n"
                                         "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.Flatten())\n"
                                         "def not_a_module():\n    return 3\n")
    monkeypatch.chdir(tmp_path)
    net = models.from_factory("my_nets:build", width=6)
    assert isinstance(net, nn.Module) and net[0].out_channels == 6 and not net.training
    assert isinstance(models.from_factory(f"{tmp_path / 'my_nets.py'}:build"), nn.Module)
    with pytest.raises(ValueError, match="returned a int, not an nn.Module"):
        models.from_factory("my_nets:not_a_module")
    with pytest.raises(ValueError, match="package.module:function"):
        models.from_factory("my_nets")
    with pytest.raises(AttributeError, match="no function 'nope'"):
        models.from_factory("my_nets:nope")


# ---------------------------------------------------------------------------------------------
# data.folder
# ---------------------------------------------------------------------------------------------

def test_folder_reads_class_folders_matched_to_the_models_classes(tmp_path):
    from advviz import data

    root = write_images(tmp_path / "photos", {"cat": 2, "ship": 3})
    ds = data.folder(root, size=(3, 32, 32), classes=data.CIFAR10_CLASSES)
    assert len(ds) == 5 and ds.image_shape == (3, 32, 32) and ds.split == "folder" and ds.name == "photos"
    assert ds.labels.tolist() == [3, 3, 8, 8, 8] and ds.classes == list(data.CIFAR10_CLASSES)
    assert ds.files[0].endswith("cat/img0.png") and len(ds.sha256) == 64
    own = data.folder(root, size=16)  # without classes: the folders, sorted
    assert own.classes == ["cat", "ship"] and own.labels.tolist() == [0, 0, 1, 1, 1] and own.image_shape == (3, 16, 16)
    with pytest.raises(ValueError, match="ship are not among the classes"):
        data.folder(root, size=16, classes=["cat", "dog"])
    with pytest.raises(ValueError, match="different sizes .* give size="):
        data.folder(root)


def test_folder_flat_and_files_are_unlabelled_and_cropped_like_the_upload(tmp_path):
    from advviz import data
    from advviz.widgets.picker import read_upload

    root = write_images(tmp_path / "flat", {"": 3}, gray=True)
    ds = data.folder(root, size=(1, 28, 28))
    assert ds.labels.tolist() == [-1, -1, -1] and ds.image_shape == (1, 28, 28)
    files = sorted(root.glob("*.png"))
    same = data.folder(files, size=(1, 28, 28))
    assert torch.equal(same.images, ds.images) and same.sha256 == ds.sha256
    up = read_upload(files[2].read_bytes(), files[2].name, (1, 28, 28))  # the explorer's upload
    assert torch.equal((up * 255).round().to(torch.uint8), ds.images[2])
    assert data.folder(root, size=8).image_shape == (1, 8, 8)  # grayscale files stay 1 channel
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image found"):
        data.folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        data.folder(tmp_path / "missing")
    (root / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        data.folder(root, size=8)


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------

def _lenet_file(tmp_path: Path, suffix: str = ".safetensors") -> Path:
    from advviz import models

    torch.manual_seed(0)
    path = tmp_path / f"my_lenet{suffix}"
    net = models.create("lenet5")
    if suffix == ".safetensors":
        models.save_weights(net, path)
    else:
        torch.save(net.state_dict(), path)
    return path


def test_cli_help_shows_the_new_options(capsys):
    from advviz.cli import build_parser

    for command in ("evaluate", "explore"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = capsys.readouterr().out
        for option in ("--arch", "--weights", "--model", "--input-size", "--mean", "--std", "--classes", "--data"):
            assert option in text, (command, option)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_evaluate_an_architecture_with_a_weight_file_on_a_folder(tmp_path, capsys, suffix):
    from advviz import cli
    from advviz._weights import sha256_file

    weights = _lenet_file(tmp_path, suffix)
    root = write_images(tmp_path / "digits", {"3": 2, "7": 2}, gray=True)
    out = tmp_path / "result.json"
    rc = cli.main(["evaluate", "--arch", "lenet5", "--weights", str(weights), "--data", str(root), "--attacks", "fgsm",
                   "--eps", "0.1", "--no-progress", "--no-steps-check", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    meta = doc["config"]["meta"]
    assert meta["weights_file"] == {"path": str(weights.resolve()), "sha256": sha256_file(weights), "arch": "lenet5"}
    assert meta["split"] == "folder" and len(meta["data_sha256"]) == 64 and doc["config"]["n"] == 4
    assert doc["provenance"][-1]["sha256"] == sha256_file(weights)
    assert sorted(s["index"] for s in doc["samples"]) == [0, 1, 2, 3]


def test_evaluate_a_factory_and_the_refusals(tmp_path, capsys, monkeypatch):
    from advviz import cli

    (tmp_path / "nets.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),"
        " nn.Linear(16, 10))\n")
    root = write_images(tmp_path / "photos", {"cat": 1, "dog": 1})
    monkeypatch.chdir(tmp_path)
    base = ["evaluate", "--data", str(root), "--attacks", "fgsm", "--no-progress", "--no-steps-check"]
    assert cli.main(base + ["--model", "nets:build"]) == 2
    assert "give --input-size C,H,W" in capsys.readouterr().err
    assert cli.main(base + ["--model", "nets:build", "--input-size", "3,32,32"]) == 2
    assert "give --classes" in capsys.readouterr().err  # folders cat/dog, and the model's names unknown
    out = tmp_path / "r.json"
    assert cli.main(base + ["--model", "nets:build", "--input-size", "3,32,32", "--classes", "cifar10",
                            "--json", str(out)]) == 0
    meta = json.loads(out.read_text())["config"]["meta"]
    assert meta["factory"]["spec"] == "nets:build" and meta["factory"]["file"].endswith("nets.py")
    assert len(meta["factory"]["sha256"]) == 64
    for argv, words in ((["--weights", "x.pt"], "--weights needs --arch"),
                        (["--arch", "resnet20"], "needs --weights"),
                        (["--arch", "nope", "--weights", str(out)], "unknown architecture"),
                        (["resnet20_cifar10", "--model", "nets:build"], "give the model once"),
                        (["--arch", "lenet5", "--weights", str(tmp_path / "none.pt")], "no such file"),
                        (["lenet5"], "an architecture: give --arch lenet5 --weights FILE")):
        assert cli.main(base + argv) == 2
        assert words in capsys.readouterr().err, argv


def test_explore_writes_a_notebook_for_your_model_and_images(tmp_path, monkeypatch):
    import nbformat

    from advviz import cli
    from advviz.widgets import launch

    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path / "cache"))
    opened = {}
    monkeypatch.setattr(launch, "main", lambda **kw: opened.update(kw) or 0)
    weights = _lenet_file(tmp_path)
    root = write_images(tmp_path / "digits", {"3": 1}, gray=True)
    assert cli.main(["explore", "--no-browser", "--arch", "lenet5", "--weights", str(weights), "--data", str(root),
                     "--classes", "digits"]) == 0
    nb = nbformat.read(str(opened["notebook"]), as_version=4)
    code = nb.cells[1].source
    assert f"models.load('lenet5', weights={str(weights.resolve())!r})" in code
    assert f"dataset={str(root.resolve())!r}" in code and "provenance=" in code and "sha256" in code
    assert "advviz explore --no-browser --arch lenet5" in nb.cells[0].source
    ns: dict = {}
    exec(compile(code, "cell", "exec"), ns)  # the cell runs
    ex = ns["explorer"]
    assert ex.state.model_name == "my_lenet.safetensors" and ex.picker.user_images and ex.state.y == 3
    assert "sha256" in ex.state.info.provenance
    # a zoo entry: the explorer is opened on its name (the store describes it)
    assert cli.main(["explore", "--no-browser", "--model", "lenet5_digits"]) == 0
    assert "Explorer('lenet5_digits')" in nbformat.read(str(opened["notebook"]), as_version=4).cells[1].source
    opened.clear()
    assert cli.main(["explore", "--no-browser"]) == 0 and opened.get("notebook") is None  # the tour, as before
