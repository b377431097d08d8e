"""advviz.models: registry-driven checks of every architecture, and the pretrained weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advviz import models, train
from tests.conftest import requires_cifar, requires_resnet

ARCHS = models.list_models()


def test_registry_lists_and_refuses_duplicates():
    assert {"lenet5", "resnet20", "resnet32", "resnet44", "resnet56", "vgg11", "vgg13", "vgg16", "vgg19",
            "mobilenet_v2"} <= set(ARCHS)
    assert {"resnet20_cifar10", "resnet32_cifar10", "lenet5_digits"} <= set(models.list_models(pretrained=True))
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("lenet5")(models.LeNet5 if hasattr(models, "LeNet5") else nn.Identity)
    with pytest.raises(KeyError, match="unknown model"):
        models.create("resnet21")
    with pytest.raises(KeyError, match="did you mean"):
        models.create("resnet20_cifar10")


@pytest.mark.parametrize("name", ARCHS)
def test_every_model_contract(name):
    torch.manual_seed(0)
    m = models.create(name)
    c, h, w = m.input_size
    x = torch.rand(2, c, h, w, requires_grad=True)
    logits = m(x)
    assert logits.shape == (2, m.num_classes) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # features -> head is the forward
    m.eval()
    with torch.no_grad():
        assert torch.allclose(m.forward_head(m.forward_features(x)), m(x), atol=1e-5)
    # no in-place activation anywhere (hook-friendly)
    for mod in m.modules():
        assert not getattr(mod, "inplace", False), f"{name}: in-place {type(mod).__name__}"
    # a hook on the named last conv layer sees a (B, K, h, w) map larger than 2x2
    seen = {}
    handle = m.get_submodule(m.last_conv).register_forward_hook(lambda mod, i, o: seen.setdefault("o", o))
    try:
        m(x.detach())
    finally:
        handle.remove()
    assert seen["o"].ndim == 4 and seen["o"].shape[0] == 2 and min(seen["o"].shape[2:]) > 2
    # normalisation is inside: wrong channel count gives one clear error
    wrong = 3 if c == 1 else 1
    with pytest.raises(ValueError, match="channels"):
        m(torch.rand(1, wrong, h, w))


def test_lenet5_table5_shapes():
    m = models.create("lenet5")
    x = torch.rand(1, 1, 28, 28)
    assert m.relu1(m.conv1(m.normalize(x))).shape == (1, 32, 28, 28)
    assert m.forward_features(x).shape == (1, 64, 14, 14)
    assert m.fc1.out_features == 200 and m.fc2.out_features == 10


def test_load_requires_weights_for_architecture(tmp_path):
    with pytest.raises(ValueError, match="needs weights"):
        models.load("lenet5")
    with pytest.raises(models.CheckpointError, match="not found"):
        models.load("lenet5", weights=tmp_path / "nope.safetensors")


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(models.CheckpointError, match="corrupt"):
        models.load("lenet5", weights=bad)
    m = models.create("lenet5")
    path = models.save_weights(m, tmp_path / "lenet.safetensors")
    assert torch.equal(models.load("lenet5", weights=path).fc2.weight, m.fc2.weight)
    with pytest.raises(models.CheckpointError, match="does not fit"):
        models.load("resnet20", weights=path)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(path.read_bytes()[:100])
    with pytest.raises(models.CheckpointError, match="corrupt"):
        models.load("lenet5", weights=trunc)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(models.CheckpointError):
        models.load("lenet5", weights=path)


def test_offline_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVVIZ_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path / "cache"))
    with pytest.raises(models.CheckpointError, match="ADVVIZ_WEIGHTS"):
        models.load("resnet20_cifar10")


def test_sha256_mismatch_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVVIZ_WEIGHTS", str(tmp_path))
    spec = models.get_weights_spec("resnet20_cifar10")
    (tmp_path / spec.filename).write_bytes(b"x" * 100)
    with pytest.raises(models.CheckpointError, match="sha256"):
        models.load("resnet20_cifar10")


@requires_resnet
@requires_cifar
@pytest.mark.slow
def test_resnet20_pretrained_accuracy(cifar_test):
    from advviz import data

    m = models.load("resnet20_cifar10")
    assert not m.training
    x, y = data.sample(cifar_test, 1000, seed=0)
    acc = train.evaluate(m, (x, y))
    assert acc >= 0.80, acc  # 0.808 measured on these 1,000 JPEG CIFAR-10 test images (81.0% on all 10,000)


@requires_resnet
def test_resnet32_loads_and_state_keys_match():
    m = models.load("resnet32_cifar10")
    assert m.depth == 32 and sum(p.numel() for p in m.parameters()) == 464154


def test_slim_vgg_keeps_depth_and_layer_names() -> None:
    full, slim = models.create("vgg19"), models.create("vgg19", width=0.25)
    names = [n for n, _ in full.features.named_children()]
    assert names == [n for n, _ in slim.features.named_children()]
    assert slim.features.conv1_1.out_channels == 16 and slim.features.conv5_4.out_channels == 128
    n_full, n_slim = (sum(p.numel() for p in m.parameters()) for m in (full, slim))
    assert 12 < n_full / n_slim < 20  # conv weights scale with width**2
    x = torch.rand(2, 3, 32, 32)
    assert slim.eval()(x).shape == (2, 10) and slim.forward_features(x).shape == (2, 128, 4, 4)
    with pytest.raises(ValueError, match="width"):
        models.create("vgg19", width=0)


def test_save_weights_half_round_trip(tmp_path) -> None:
    from safetensors.torch import load_file

    torch.manual_seed(0)
    net = models.create("lenet5")
    path = models.save_weights(net, tmp_path / "w.safetensors", metadata={"recipe": {"a": 1}}, half=True)
    stored = load_file(str(path))
    assert all(v.dtype == torch.float16 for k, v in stored.items() if v.is_floating_point())
    back = models.load("lenet5", weights=path)
    for (k, a), b in zip(net.state_dict().items(), back.state_dict().values()):
        assert b.dtype == a.dtype, k
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), k


def test_the_zoo_does_not_import_the_training_code():
    """Issue 14, point 4: recipes live with the artefacts; ``advviz.models`` imports nothing from ``advviz.train``."""
    import subprocess
    import sys

    code = "import sys, advviz.models as m; m.create('lenet5'); print('advviz.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
