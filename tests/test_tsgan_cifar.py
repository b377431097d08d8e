"""TSGAN on CIFAR-10 (paper 000, Tables 6/8/12 CIFAR-10 columns): the quick configurations, a short
training smoke on 3x32x32 images against a ResNet-20, the content network's labelling, and the
rows of Tables 8 and 12 (on tiny untrained set-ups: keys, attacks, paper values, FID label)."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import torch
from torch import nn

from advviz.generative.advgan import ADVGAN_CONFIGS, AdvGAN
from advviz.generative.tsgan import CONFIGS, TSGAN, ContentNetwork, SlimVGG16


def _slim_content() -> ContentNetwork:
    """An untrained 3-channel slim VGG-16 cut at relu3_3 (the loss term is the same as with trained weights)."""
    slim = SlimVGG16(in_channels=3)
    names = list(dict(slim.features.named_children()))
    feats = nn.Sequential(slim.normalize, *list(slim.features)[:names.index("relu3_3") + 1])
    return ContentNetwork(feats, name="untrained slim VGG-16 (test)", prepare=lambda x: x)


def test_cifar10_quick_configs_keep_table4_and_document_deviations():
    q, full = CONFIGS["cifar10_quick"], CONFIGS["cifar10"]
    # Table 4's batch size, stage-2 rate and lambdas are kept
    assert (q.batch_size, q.lr_adv, q.lambda_adv, q.lambda_perturb, q.lambda_content) == \
        (full.batch_size, full.lr_adv, full.lambda_adv, full.lambda_perturb, full.lambda_content) == \
        (64, 2e-4, 1.0, 0.5, 1.0)
    assert q.max_images == 4000 and q.epochs_normal < full.epochs_normal and q.epochs_adv < full.epochs_adv
    a = ADVGAN_CONFIGS["cifar10_quick"]
    assert a.eps == pytest.approx(8 / 255) and a.c == 1.0


def test_cifar10_quick_shapes_and_one_short_training(one_thread):
    """Stage 1 and stage 2 (content loss on) run on 3x32x32 images against an (untrained)
    ResNet-20: finite losses, G_adv moves away from G_norm, the target model is untouched."""
    from advviz import models

    cfg = CONFIGS["cifar10_quick"].replace(max_images=32, batch_size=16)
    gan = TSGAN(cfg, (3, 32, 32))
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert gan.generate(5, None, seed=0).shape == (5, 3, 32, 32)
    assert gan.critic(x[:5]).shape == (5,)
    r1 = gan.fit_normal(x, epochs=1, progress=False, device="cpu")
    # max_images caps the data: 32 images, batch 16 -> 2 critic steps, 1 generator step (n_critic 2)
    assert r1.epochs_completed == 1 and all(math.isfinite(v) for v in r1.history[-1].values())
    assert "g_loss" in r1.history[-1]
    target = models.create("resnet20").eval()
    before = [p.detach().clone() for p in target.parameters()]
    content = _slim_content()
    assert content(x[:2]).shape == (2, 64, 8, 8)  # relu3_3 of a 32x32 input
    r2 = gan.fit_adversarial(x, target, [0], content=content, epochs=1, progress=False, device="cpu")
    rec = r2[0].history[-1]
    assert {"g_gan", "g_adv", "g_perturb", "g_content", "g_total"} <= set(rec)
    assert all(math.isfinite(v) for v in rec.values())
    z = gan.latent(4, seed=2)
    x_norm, x_adv = gan.generate(4, None, z=z), gan.generate(4, 0, z=z)
    assert x_adv.shape == (4, 3, 32, 32) and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    assert not torch.equal(x_norm, x_adv)
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters()))


def test_cifar_content_network_says_which(monkeypatch, tmp_path):
    """Without ImageNet VGG-16 and zoo vgg16_cifar10 weights, the CIFAR-10 content network is the
    advviz-trained slim VGG-16 (artefact vgg16slim_cifar10; an untrained stand-in here) and its name
    and record say so."""
    from advviz import artifacts
    from advviz.artifacts import Built, _core
    from advviz.generative import tsgan as T

    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path))
    monkeypatch.setattr(T, "_imagenet_vgg16", lambda: None)
    monkeypatch.setattr(T, "_cifar_vgg16_weights", lambda: None)
    spec = artifacts.get_spec("vgg16slim_cifar10")
    monkeypatch.setitem(_core._SPECS, spec.name, dataclasses.replace(
        spec, build=lambda ctx: Built(SlimVGG16(in_channels=3), {"epochs": 0})))
    artifacts.forget(spec.name)
    try:
        net = T.content_network("cifar10")
        assert "slim VGG-16" in net.name and "CIFAR-10" in net.name and "not available" in net.name
        assert net.artifact == "vgg16slim_cifar10" and net.record.recipe_hash == spec.recipe.hash()
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 64, 8, 8)
    finally:
        artifacts.forget(spec.name)
    with pytest.raises(ValueError, match="no content network"):
        T.content_network("svhn", prefer_imagenet=False)


def _cifar_setup() -> dict:
    """A tiny CIFAR-shaped set-up: untrained ResNet-20, tiny GANs (stage 2 = stage 1), 12 images."""
    from advviz import models

    cfg = CONFIGS["cifar10_quick"].replace(width=4, z_dim=8, batch_size=8, max_images=16, epochs_adv=1)
    acfg = dataclasses.replace(ADVGAN_CONFIGS["cifar10_quick"], width=4, batch_size=8, epochs=1)
    gan, gan_nc = TSGAN(cfg, (3, 32, 32)), TSGAN(cfg.replace(lambda_content=0.0), (3, 32, 32))
    for g in (gan, gan_nc):
        g.epochs_done["normal"] = 0
        g.init_adversarial(0)
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(12) % 10
    return {"cfg": cfg, "acfg": acfg, "gan": gan, "gan_nc": gan_nc,
            "advgans": {0: AdvGAN(acfg, (3, 32, 32), target=0)}, "target_model": models.create("resnet20").eval(),
            "content": _slim_content(), "x_tr": x, "x_adv_tr": x[:8], "y_adv_tr": y[:8], "x_te": x, "y_te": y,
            "targets": [0], "dataset": "cifar10", "model_name": "resnet20", "data": "random CIFAR-shaped images",
            "config": {"quick": True, "dataset": "cifar10", "content_network": "untrained slim VGG-16 (test)"}}


@pytest.mark.skipif(not (os.environ.get("ADVVIZ_WEIGHTS") and
                         os.path.isfile(os.path.join(os.environ["ADVVIZ_WEIGHTS"], "resnet32-d509ac18.th"))),
                    reason="ResNet-32 weights (the independent FID features) not available (set ADVVIZ_WEIGHTS)")
def test_table12_rows_and_fid_label(one_thread):
    from advviz.papers import tsgan as P

    s = _cifar_setup()
    r12 = P.table12(s, 10, 0)
    assert r12["table"] == "12"
    assert [r["attack"] for r in r12["rows"]] == ["g_norm", "tsgan_no_content", "tsgan", "advgan"]
    for r in r12["rows"][1:]:
        assert r["table"] == "12" and r["model"] == "resnet20"
        assert r["paper_fid_g_norm"] == P.PAPER["12"][r["attack"]]["fid_g_norm"]
        assert r["paper_ssim"] == P.PAPER["12"][r["attack"]]["ssim"]
    assert next(r for r in r12["rows"] if r["attack"] == "tsgan")["paper_fid_g_norm"] == 8.42
    tsgan_row = next(r for r in r12["rows"] if r["attack"] == "tsgan")
    assert tsgan_row["ssim"] == pytest.approx(1.0) and tsgan_row["fid_g_norm"] == pytest.approx(0.0, abs=1e-6)
    # the FID features are not the attacked model's (ResNet-20): Inception, or the published ResNet-32
    feats = r12["config"]["fid_features"]
    assert "Inception" in feats or ("resnet32_cifar10" in feats and "penultimate" in feats)
    r6 = P.table6(s, 10, 0)
    # CIFAR-10 ResNet20 column; FGSM/PGD untargeted in the paper
    assert [r.get("paper_asr_untargeted", r.get("paper_asr")) for r in r6["rows"]] == [0.7968, 0.9281, 0.9496, 0.9583]
    assert [("paper_asr" in r, "paper_asr_untargeted" in r) for r in r6["rows"]] == \
        [(False, True), (False, True), (True, False), (True, False)]
    json.dumps([r12, r6])


@pytest.mark.slow
def test_table8_rows_carry_defense_and_paper_values(one_thread, monkeypatch, tmp_path):
    """Table 8 on stand-in defended models (untrained ResNet-20s instead of the protected ones):
    two defenses x four attacks, TSGAN stage 2 and AdvGAN retrained against each."""
    from advviz import artifacts, models
    from advviz.artifacts import Built, _core
    from advviz.papers import tsgan as P

    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path))
    calls = []

    def stand_in(ctx):  # an untrained ResNet-20 in place of the adversarially fine-tuned one
        calls.append(ctx.spec.name)
        torch.manual_seed(len(calls))
        return Built(models.create("resnet20"), {"epochs": 0, "metrics": {"clean_accuracy_1000": 0.1}})

    names = ["resnet20_cifar10_fast_at_quick", "resnet20_cifar10_pgd_at_quick"]
    for name in names:
        spec = artifacts.get_spec(name)
        monkeypatch.setitem(_core._SPECS, name, dataclasses.replace(spec, build=stand_in, upstream=()))
        artifacts.forget(name)
    torch.manual_seed(0)  # the same stand-in stage 1 and content network in every run below
    r8 = P.table8(_cifar_setup(), 10, 0)
    assert calls == names
    assert [(r["defense"], r["attack"]) for r in r8["rows"]] == \
        [(d, a) for d in ("adv", "iter") for a in ("fgsm", "pgd", "advgan", "tsgan")]
    paper = {("adv", "fgsm"): 0.1369, ("adv", "pgd"): 0.7688, ("adv", "advgan"): 0.1374, ("adv", "tsgan"): 0.1813,
             ("iter", "fgsm"): 0.3396, ("iter", "pgd"): 0.3914, ("iter", "advgan"): 0.1616,
             ("iter", "tsgan"): 0.1241}
    for r in r8["rows"]:
        assert r["table"] == "8" and 0.0 <= r["asr"] <= 1.0
        key = "paper_asr_untargeted" if r["attack"] in ("fgsm", "pgd") else "paper_asr"
        assert r[key] == paper[(r["defense"], r["attack"])]
        assert r["model"].startswith("resnet20 (") and "quick" in r["model"]
    assert set(r8["config"]["defended_models"]) == {"adv", "iter"}
    assert "quick" in r8["config"]["note"]
    # the retrained generators are artefacts per defended model, their upstream the defended model
    for name in names:
        assert (tmp_path / "weights" / f"tsgan_cifar10_quick_s0_t0_vs_{name}.safetensors").is_file()
        rec = artifacts.record(f"advgan_cifar10_quick_n8_s0_t0_vs_{name}")
        assert [u.name for u in rec.upstream] == [name] and rec.recipe["target_model"] == name
    assert r8["config"]["defended_models"]["adv"]["name"] == names[0]
    json.dumps(r8)
    # a second run reuses them (nothing retrained) ...
    before = artifacts.record(f"tsgan_cifar10_quick_s0_t0_vs_{names[0]}").sha256
    artifacts.forget()
    torch.manual_seed(0)
    P.table8(_cifar_setup(), 10, 0)
    assert calls == names and artifacts.record(f"tsgan_cifar10_quick_s0_t0_vs_{names[0]}").source == "cache"
    # ... and a changed defended model retrains the generators made against it
    spec = _core._SPECS[names[0]]
    monkeypatch.setitem(_core._SPECS, names[0], dataclasses.replace(spec, recipe=spec.recipe.replace(lr=0.5)))
    artifacts.forget()
    torch.manual_seed(0)
    P.table8(_cifar_setup(), 10, 0)
    assert calls == names + [names[0]]
    after = artifacts.record(f"tsgan_cifar10_quick_s0_t0_vs_{names[0]}")
    assert after.sha256 != before and after.upstream[-1].recipe["lr"] == 0.5
    artifacts.forget()


def test_run_refuses_tables_without_the_dataset():
    from advviz.papers import tsgan as P

    with pytest.raises(ValueError, match="Table 7 has no cifar10 column.*Table 8"):
        P.run(table="7", quick=True, dataset="cifar10")
    with pytest.raises(ValueError, match="Table 12 has no mnist column"):
        P.run(table="12", quick=True, dataset="mnist")
    with pytest.raises(ValueError, match="unknown dataset"):
        P.run(table="6", quick=True, dataset="svhn")


def test_cli_dataset_option():
    from advviz import cli

    args = cli.build_parser().parse_args(["reproduce", "tsgan", "--table", "8", "--quick", "--dataset", "cifar10"])
    assert args.dataset == "cifar10" and args.table == "8"
    # a paper without a dataset option refuses it before running anything
    assert cli.main(["reproduce", "cfr", "--quick", "--dataset", "cifar10"]) == 2


def test_resnet32_column_options():
    from advviz import cli
    from advviz.papers import tsgan as P

    with pytest.raises(ValueError, match="ResNet-20 ones only"):
        P.run(table="8", quick=True, dataset="cifar10", model="resnet32")
    with pytest.raises(ValueError, match="unknown CIFAR-10 target"):
        P.run(table="6", quick=True, dataset="cifar10", model="vgg16")
    with pytest.raises(ValueError, match="attacks LeNet-5"):
        P.run(table="6", quick=True, dataset="mnist", model="resnet32")
    # the paper's ResNet-32 column of Table 6 is picked by the column key
    s = {"dataset": "cifar10", "model_name": "resnet32"}
    assert P._column_key(s, "6") == "6:cifar10:resnet32"
    assert P.PAPER["6:cifar10:resnet32"]["tsgan"]["asr"] == pytest.approx(0.9828)
    assert P._column_key({"dataset": "cifar10", "model_name": "resnet20"}, "6") == "6:cifar10"
    args = cli.build_parser().parse_args(["reproduce", "tsgan", "--quick", "--dataset", "cifar10", "--model", "resnet32"])
    assert args.model == "resnet32"
    assert cli.main(["reproduce", "cfr", "--quick", "--model", "resnet32"]) == 2
