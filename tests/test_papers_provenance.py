"""Every ``advviz reproduce … --json`` result carries the provenance of the artefacts it used
(issue 14): name, the file's sha256 and the recipe hash (``None`` for downloaded weights), read
back from the files, and the printed table ends with one line per artefact."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests.conftest import requires_cifar, requires_resnet
from tests.helpers import uddn_run_with_stand_ins

SHA = re.compile(r"^[0-9a-f]{64}$")


def _check(res: dict, *names: str) -> dict[str, dict]:
    prov = {p["name"]: p for p in res["provenance"]}
    assert set(names) <= set(prov), (names, list(prov))
    for p in res["provenance"]:
        assert SHA.match(p["sha256"]) and "recipe_hash" in p and p["path"]
    json.dumps(res)
    return prov


def test_records_by_name_and_the_lines(tmp_path):
    from advviz import artifacts
    from advviz.papers._common import format_provenance, result

    res = result("demo", "1", {}, "none", [], provenance=["lenet5_digits"])
    prov = _check(res, "lenet5_digits")["lenet5_digits"]
    rec = artifacts.record("lenet5_digits")
    assert prov["recipe_hash"] == artifacts.get_spec("lenet5_digits").recipe.hash() == rec.recipe_hash
    assert prov["sha256"] == rec.sha256 and prov["training"]["epochs"] == rec.recipe["epochs"]
    lines = format_provenance(res).splitlines()
    assert lines[0] == "artefacts:" and lines[1].strip() == rec.line()
    assert rec.sha256[:12] in lines[1] and rec.recipe_hash in lines[1]
    with pytest.raises(KeyError, match="no artefact named"):
        artifacts.records(["no_such_artefact"])
    assert artifacts.records(["no_such_artefact", "lenet5_digits"], on_disk_only=True) == [rec]


def test_tracked_run_lists_what_it_used_once():
    from advviz import artifacts, models
    from advviz.papers._common import result, tracked

    @tracked
    def run() -> dict:
        models.load("lenet5_digits")
        artifacts.get("lenet5_digits")
        return result("demo", "1", {}, "none", [])

    res = run()
    assert [p["name"] for p in res["provenance"]] == ["lenet5_digits"]


@requires_cifar
@requires_resnet
def test_reproduce_cfr_json_and_table_carry_provenance(tmp_path, capsys):
    from advviz import cli

    out = tmp_path / "cfr.json"
    assert cli.main(["reproduce", "cfr", "--quick", "--table", "fig10", "--n", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    prov = _check(res, "resnet20_cifar10")
    assert prov["resnet20_cifar10"]["sha256"].startswith("12fca82f")  # the published file
    text = capsys.readouterr().out.rstrip().splitlines()
    assert text[-2] == "artefacts:" and text[-1].strip().startswith("resnet20_cifar10  sha256 12fca82f")


@pytest.mark.slow
@requires_cifar
@requires_resnet
def test_reproduce_cfr_table2_names_the_protected_models(monkeypatch, tmp_path):
    """Table II's protected models come through the artefact layer: their records (recipe hash,
    upstream resnet20_cifar10) are in the provenance (tiny stand-in recipes, trained in seconds)."""
    import dataclasses

    from advviz import artifacts
    from advviz.artifacts import _core
    from advviz.papers import cfr

    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path))
    for kind in ("fast_at", "pgd_at"):
        name = f"resnet20_cifar10_{kind}_quick"
        spec = artifacts.get_spec(name)
        tiny = spec.recipe.replace(images=16, batch_size=16, steps=1 if kind == "pgd_at" else None)
        monkeypatch.setitem(_core._SPECS, name, dataclasses.replace(spec, recipe=tiny))
    monkeypatch.setattr(cfr, "_attack_configs", lambda quick: {
        "pgd": {"norm": "linf", "eps": 8 / 255, "alpha": 2 / 255, "steps": 1},
        "cw_l2": {"c": 1.0, "lr": 0.01, "steps": 1, "binary_steps": 1},
        "cfr": {"mode": "normalized", "tau": 0.2, "T": 0.1, "beta": 1.0, "steps": 1, "step": 0.05, "eta": 10.0,
                "early_stop": True}})
    try:
        res = cfr.run(table="2", quick=True, n=2, device="cpu")
    finally:
        artifacts.forget()
    prov = _check(res, "resnet20_cifar10_fast_at_quick", "resnet20_cifar10_pgd_at_quick")
    p = prov["resnet20_cifar10_pgd_at_quick"]
    assert p["recipe_hash"] == artifacts.get_spec("resnet20_cifar10_pgd_at_quick").recipe.hash()
    assert [u["name"] for u in p["upstream"]] == ["resnet20_cifar10"]
    made = res["config"]["protected_models"]["pgd_at"]
    assert made["recipe"]["steps"] == 1 and 0 <= made["clean_accuracy_1000"] <= 1


@requires_cifar
@requires_resnet
def test_reproduce_purifier_carries_provenance():
    from advviz.papers import purifier

    res = purifier.run(n=8, seed=0, device="cpu")
    _check(res, "resnet20_cifar10")


@requires_cifar
@requires_resnet
def test_reproduce_uddn_carries_provenance(monkeypatch):
    res = uddn_run_with_stand_ins(monkeypatch)
    _check(res, "resnet20_cifar10", "resnet32_cifar10")


@pytest.mark.slow
@requires_cifar
@requires_resnet
def test_reproduce_twostream_carries_the_high_streams_recipe():
    from advviz import artifacts
    from advviz.papers import twostream

    if not artifacts.status("highres_resnet8_cifar10")["present"]:
        pytest.skip("highres_resnet8_cifar10 not on disk (training it takes minutes)")
    res = twostream.run(table="1", quick=True, n=4, seed=0, attacks=("fgsm",), device="cpu")
    prov = _check(res, "highres_resnet8_cifar10", "resnet32_cifar10")
    assert prov["highres_resnet8_cifar10"]["recipe_hash"] == artifacts.get_spec("highres_resnet8_cifar10").recipe.hash()


@pytest.mark.slow
def test_reproduce_tsgan_generators_record_what_they_were_made_from(monkeypatch, tmp_path):
    """The TSGAN paper on tiny configurations (digits; untrained stand-ins for the slim VGG-16 content
    network and the transfer model): provenance lists the target, content network and generators;
    the config names the content network from the generator's record; a changed content network
    retrains stage 2 and keeps stage 1."""
    import dataclasses

    from advviz import artifacts
    from advviz.artifacts import Built, _core
    from advviz.generative import advgan as A
    from advviz.generative import tsgan as T
    from advviz.papers import tsgan as P

    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path))
    monkeypatch.setenv("ADVVIZ_OFFLINE", "1")
    monkeypatch.setattr(T, "_imagenet_vgg16", lambda: None)
    cfg = T.CONFIGS["digits_quick"].replace(width=4, z_dim=8, batch_size=16, max_images=32, epochs_normal=1,
                                            epochs_adv=1)
    monkeypatch.setitem(T.CONFIGS, "digits_quick", cfg)
    monkeypatch.setitem(A.ADVGAN_CONFIGS, "digits_quick",
                        dataclasses.replace(A.ADVGAN_CONFIGS["digits_quick"], width=4, batch_size=64))
    made = []

    def untrained(make):
        def build(ctx):
            made.append(ctx.spec.name)
            torch.manual_seed(0)
            return Built(make(), {"epochs": 0})

        return build

    transfer = artifacts.get_spec("resnet8_digits_transfer").make
    for name, make in (("vgg16slim_digits", lambda: T.SlimVGG16()), ("resnet8_digits_transfer", transfer)):
        monkeypatch.setitem(_core._SPECS, name, dataclasses.replace(artifacts.get_spec(name), build=untrained(make)))
    artifacts.forget()
    try:
        res = P.run(table="10", quick=True, n=8, device="cpu")
        gan = "tsgan_digits_quick_s0_t0_vs_lenet5_digits"
        prov = _check(res, "lenet5_digits", "vgg16slim_digits", "tsgan_digits_quick_s0_stage1", gan, gan + "_nocontent",
                      "advgan_digits_quick_n1438_s0_t0_vs_lenet5_digits", "resnet8_digits_transfer")
        assert [u["name"] for u in prov[gan]["upstream"]] == ["tsgan_digits_quick_s0_stage1", "lenet5_digits",
                                                              "vgg16slim_digits"]
        assert "vgg16slim_digits" not in [u["name"] for u in prov[gan + "_nocontent"]["upstream"]]
        assert prov[gan]["recipe"]["config"]["width"] == 4 and prov[gan]["recipe"]["targets"] == [0]
        assert res["config"]["content_network_artifact"]["name"] == "vgg16slim_digits"
        assert "slim VGG-16 (digits-trained" in res["config"]["content_network"]
        assert res["config"]["final_losses"]["tsgan"][0]  # from the generator's record
        # another content network: stage 2 (with content) is retrained, stage 1 and the rest are reused
        spec = _core._SPECS["vgg16slim_digits"]
        monkeypatch.setitem(_core._SPECS, "vgg16slim_digits",
                            dataclasses.replace(spec, recipe=spec.recipe.replace(epochs=5)))
        artifacts.forget()
        res2 = P.run(table="10", quick=True, n=8, device="cpu")
        src = {p["name"]: p["source"] for p in res2["provenance"]}
        assert src[gan] == "trained now" and src["vgg16slim_digits"] == "trained now"
        assert src["tsgan_digits_quick_s0_stage1"] == "cache" and src[gan + "_nocontent"] == "cache"
        assert {p["name"]: p for p in res2["provenance"]}[gan]["upstream"][-1]["recipe"]["epochs"] == 5
    finally:
        artifacts.forget()
