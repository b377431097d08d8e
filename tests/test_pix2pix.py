"""pix2pix / cGAN purifier (purifier paper): networks, losses, training loop, registered purifiers."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advviz import defenses
from tests.helpers import stub_artifacts

P = importlib.import_module("advviz.defenses.pix2pix")


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 28, 28)])
def test_generator_shape_and_range(shape):
    torch.manual_seed(0)
    g = P.UNetGenerator(shape[1], ngf=8).eval()
    out = g(torch.rand(shape))
    assert out.shape == shape and out.min() >= 0 and out.max() <= 1


def test_generator_skip_connections_carry_input_detail():
    # with skips, the output depends on the input at full resolution: a 1-pixel change moves it
    torch.manual_seed(0)
    g = P.UNetGenerator(3, ngf=8).eval()
    x = torch.rand(1, 3, 32, 32)
    x2 = x.clone()
    x2[0, :, 5, 5] += 0.5
    assert not torch.allclose(g(x), g(x2))
    assert g.up[-1][1].in_channels == 2 * 8  # outermost decoder sees [decoder, encoder] features


def test_patch_discriminator_receptive_field_and_grid():
    assert P.receptive_field(P.PatchDiscriminator(3)) == 16
    assert P.receptive_field(P.PatchDiscriminator(3, n_layers=3)) == 70  # pix2pix's 70x70 PatchGAN
    d = P.PatchDiscriminator(3, ndf=8)
    x = torch.rand(2, 3, 32, 32)
    assert d(x, x).shape == (2, 1, 14, 14)


def test_receptive_field_matches_gradient_support():
    # the receptive field equals the extent of the input gradient of one output patch
    torch.manual_seed(0)
    d = P.PatchDiscriminator(1, ndf=4).eval()
    x = torch.rand(1, 1, 48, 48, requires_grad=True)
    out = d(x, torch.rand(1, 1, 48, 48))
    out[0, 0, 10, 10].backward()
    rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero().flatten()
    assert int(rows.max() - rows.min() + 1) == P.receptive_field(d)


class _ConstD(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, y):
        return torch.full((x.shape[0], 1, 2, 2), self.value)


def test_losses_exact_on_tiny_inputs():
    x = torch.zeros(1, 1, 2, 2)
    y = torch.zeros(1, 1, 2, 2)
    fake = torch.full((1, 1, 2, 2), 0.25)
    # D(.) = 0 everywhere: BCE(0, 1) = log 2; L1 = 0.25
    total, parts = P.generator_loss(_ConstD(0.0), x, y, fake, lambda_l1=100.0)
    assert parts["g_gan"] == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert parts["g_l1"] == pytest.approx(0.25) and parts["g_perc"] == 0.0
    assert total.item() == pytest.approx(0.6931472 + 25.0, rel=1e-6)
    perc = lambda a, b: (a - b).abs().sum()
    total2, parts2 = P.generator_loss(_ConstD(0.0), x, y, fake, lambda_l1=100.0, lambda_perc=2.0, perceptual=perc)
    assert parts2["g_perc"] == pytest.approx(1.0) and total2.item() == pytest.approx(total.item() + 2.0)
    # discriminator: 0.5 * (BCE(2, 1) + BCE(2, 0)) = 0.5 * (softplus(-2) + softplus(2))
    d = P.discriminator_loss(_ConstD(2.0), x, y, fake).item()
    assert d == pytest.approx(0.5 * (F.softplus(torch.tensor(-2.0)) + F.softplus(torch.tensor(2.0))).item())


def test_perceptual_loss_layers_and_value():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    loss = P.PerceptualLoss(net, ["0", "1"])
    a = torch.full((1, 1, 2, 2), 0.5)
    b = torch.zeros(1, 1, 2, 2)
    # layer 0: |(0.5, -0.5) - 0| mean = 0.5; layer 1 (ReLU): (0.5, 0) -> mean 0.25; a_k = 1: sum 0.75
    assert loss(a, b).item() == pytest.approx(0.75)
    a.requires_grad_(True)
    loss(a, b).backward()
    assert a.grad is not None and all(p.grad is None for p in net.parameters() if not p.requires_grad)


def test_perceptual_layers_are_vgg19_all_but_top():
    from advviz import models
    from advviz.explain.features import vgg19_layers

    vgg = models.create("vgg19")
    names = vgg19_layers(vgg)
    loss = P.PerceptualLoss(vgg.eval(), names[:-1])
    assert len(loss.layers) == 35 and names[-1] not in loss.layers
    x = torch.rand(2, 3, 32, 32)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_train_pix2pix_checkpoint_resume_and_interrupt(tmp_path):
    torch.manual_seed(0)
    xa = torch.rand(16, 1, 8, 8)
    xc = (xa * 0.5).clamp(0, 1)
    g, d = P.UNetGenerator(1, ngf=4, depth=3), P.PatchDiscriminator(1, ndf=4)
    res = P.train_pix2pix(g, d, (xa, xc), epochs=2, batch_size=8, device="cpu", checkpoint=tmp_path / "ck",
                          progress=False)
    assert res.epochs_completed == 2 and not res.interrupted and not g.training
    assert (tmp_path / "ck.safetensors").is_file() and (tmp_path / "ck.json").is_file()
    # resume to 3 epochs: one more epoch only
    res2 = P.train_pix2pix(g, d, (xa, xc), epochs=3, batch_size=8, device="cpu", checkpoint=tmp_path / "ck",
                           progress=False)
    assert [h["epoch"] for h in res2.history] == [1, 2, 3]
    # Ctrl-C inside epoch 2 keeps the weights of epoch 1
    g2, d2 = P.UNetGenerator(1, ngf=4, depth=3), P.PatchDiscriminator(1, ndf=4)
    calls = {"n": 0}
    snap = {}
    orig = P.generator_loss

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            snap["w"] = {k2: v.detach().clone() for k2, v in g2.named_parameters()}
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return orig(*a, **k)

    P.generator_loss, saved = flaky, P.generator_loss
    try:
        res3 = P.train_pix2pix(g2, d2, (xa, xc), epochs=3, batch_size=8, device="cpu", progress=False)
    finally:
        P.generator_loss = saved
    assert res3.interrupted and res3.epochs_completed == 1
    # the weights at the start of epoch 2's first generator step were epoch 1's final weights
    # (the discriminator step before it leaves the generator's parameters unchanged)
    for k2, v in g2.named_parameters():
        assert torch.equal(v, snap["w"][k2]), k2


def test_briefly_trained_generator_raises_accuracy_on_attacked_digits(lenet_digits):
    from advviz import attacks, data, metrics

    torch.manual_seed(0)
    xtr, ytr = data.sample(data.load("digits", "train"), 512, seed=0)
    xte, yte = data.sample(data.load("digits", "test"), 256, seed=0)
    pairs = P.make_pairs(lenet_digits, xtr, ytr, attack="fgsm", eps=0.2)
    g, d = P.UNetGenerator(1, ngf=8), P.PatchDiscriminator(1, ndf=16)
    P.train_pix2pix(g, d, pairs, epochs=8, lr=1e-3, batch_size=32, device="cpu", progress=False)
    xa_te = attacks.fgsm(lenet_digits, xte, yte, eps=0.2)
    attacked = metrics.accuracy(lenet_digits, xa_te, yte)
    purified = metrics.accuracy(lenet_digits, P.purify(g, xa_te), yte)
    assert purified > attacked + 0.2, (attacked, purified)


@pytest.mark.parametrize("name", ["cgan", "pix2pix"])
def test_registered_purifier_contract(name, device, monkeypatch):
    spec = defenses.get(name)
    assert [p.name for p in spec.params] == ["attack", "config"] and spec.quick == {"config": "quick"}
    torch.manual_seed(0)
    g = P.UNetGenerator(3, ngf=8)
    stub_artifacts(monkeypatch, {f"{name}_fgsm_cifar10_quick": g.train()})
    x = torch.rand(3, 3, 32, 32, device=device, dtype=torch.float64)
    x_copy = x.clone()
    out = spec(x, **spec.quick)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1 and torch.equal(x, x_copy)
    assert g.training  # mode restored
    assert spec(x[:0], **spec.quick).shape == (0, 3, 32, 32)
    with pytest.raises(ValueError, match="must be one of"):
        spec(x, attack="cw", config="quick")
    with pytest.raises(ValueError, match="CIFAR-10 colour images.*'jpeg'"):
        spec(torch.rand(2, 1, 28, 28, device=device), **spec.quick)


def test_make_pairs_budget(lenet_digits):
    from advviz import data

    x, y = data.sample(data.load("digits", "test"), 8, seed=0)
    for attack in ("fgsm", "pgd"):
        xa, xc = P.make_pairs(lenet_digits, x, y, attack=attack, eps=0.1)
        assert torch.equal(xc, x) and (xa - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(xa, x)
    with pytest.raises(ValueError, match="attack must be"):
        P.make_pairs(lenet_digits, x, y, attack="cw")


def test_perceptual_loss_keeps_conv_outputs_under_inplace_relu():
    """torchvision's VGG-19 uses in-place ReLUs: a conv layer's term must compare the conv output
    (with its negative values), not the ReLU output that overwrites it (issue 15, point 7)."""
    import torchvision

    from advviz.explain.features import vgg19_layers

    torch.manual_seed(0)
    tv = torchvision.models.vgg19(weights=None).eval()
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in tv.features)
    names = vgg19_layers(tv)[:-1]
    loss = P.PerceptualLoss(tv.features, [n.removeprefix("features.") for n in names])
    x = torch.rand(2, 3, 32, 32)
    got = loss.features(x)
    # reference: run the layers one by one, keeping a copy of every output
    ref, h = [], x
    with torch.no_grad():
        for m in list(tv.features)[:35]:
            h = m(h.clone())
            ref.append(h.clone())
    assert len(got) == len(ref) == 35
    for name, g, r in zip(names, got, ref):
        assert torch.allclose(g, r, atol=1e-5), name
    convs = [i for i, m in enumerate(list(tv.features)[:35]) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16 and all((got[i] < 0).any() for i in convs)  # not the ReLU's output
    distinct = {round((g[:1] - g[1:]).abs().mean().item(), 6) for g in got}
    assert len(distinct) > 30  # no longer 19 distinct terms
    xa = x.clone().requires_grad_(True)
    loss(xa, torch.rand(2, 3, 32, 32)).backward()
    assert xa.grad is not None and torch.isfinite(xa.grad).all()
