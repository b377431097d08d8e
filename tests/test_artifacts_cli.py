"""The artefact layer on a tiny test-only artefact (a hand-set recipe and builder, in a temporary
cache): train once then reuse, retrain after any recipe change, refuse a stale file offline,
records from the file's metadata, one training for two threads, shared modules frozen and never
moved; ``advviz artifacts list|build|readme`` and the generated ``advviz/weights/README.md``."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch
from torch import nn

from advviz import artifacts
from advviz.artifacts import ArtifactError, ArtifactSpec, BuildContext, Built, Recipe, _core

NAME = "tiny_test_artefact"


@dataclasses.dataclass(frozen=True)
class TinyRecipe(Recipe):
    value: float = 0.5
    epochs: int = 1


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Register the tiny artefact (removed afterwards); ``builds`` counts its trainings."""
    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path))
    monkeypatch.delenv("ADVVIZ_NO_TRAIN", raising=False)
    builds: list[float] = []

    def build(ctx: BuildContext) -> Built:
        time.sleep(0.2)  # long enough for a second thread to arrive while training
        m = Tiny()
        with torch.no_grad():
            m.lin.weight.fill_(ctx.recipe.value)
            m.lin.bias.zero_()
        builds.append(ctx.recipe.value)
        return Built(m, {"epochs": ctx.recipe.epochs, "final": {"loss": ctx.recipe.value / 2}})

    spec = ArtifactSpec(name=NAME, make=Tiny, filename=f"{NAME}.safetensors", kind="test", dataset="none",
                        recipe=TinyRecipe(), build=build, description="test only")
    artifacts.list_artifacts()  # the catalog first, so that it never registers over the patch
    monkeypatch.setitem(_core._SPECS, NAME, spec)
    artifacts.forget(NAME)
    yield {"spec": spec, "builds": builds, "cache": tmp_path}
    artifacts.forget(NAME)


def _set_recipe(monkeypatch, tiny, **changes) -> None:
    recipe = tiny["spec"].recipe.replace(**changes)
    monkeypatch.setitem(_core._SPECS, NAME, dataclasses.replace(tiny["spec"], recipe=recipe))


def test_get_trains_once_then_reuses_the_file(tiny):
    m, rec = artifacts.get(NAME)
    assert tiny["builds"] == [0.5] and rec.source == "trained now"
    assert artifacts.get(NAME)[0] is m and tiny["builds"] == [0.5]
    artifacts.forget(NAME)
    m2, rec2 = artifacts.get(NAME)
    assert tiny["builds"] == [0.5] and rec2.source == "cache" and m2 is not m
    assert torch.equal(m2.lin.weight, torch.full((1, 2), 0.5)) and rec2.sha256 == rec.sha256


def test_changing_one_recipe_field_makes_the_next_get_retrain(tiny, monkeypatch):
    _, rec = artifacts.get(NAME)
    _set_recipe(monkeypatch, tiny, value=0.25)
    m, rec2 = artifacts.get(NAME)
    assert tiny["builds"] == [0.5, 0.25] and rec2.source == "trained now"
    assert rec2.recipe_hash != rec.recipe_hash and rec2.recipe == {"value": 0.25, "epochs": 1}
    assert torch.equal(m.lin.weight, torch.full((1, 2), 0.25))
    _set_recipe(monkeypatch, tiny, epochs=2)  # any field, not only one the weights show
    artifacts.get(NAME)
    assert tiny["builds"] == [0.5, 0.25, 0.5]


def test_a_stale_file_is_refused_without_training(tiny, monkeypatch):
    artifacts.get(NAME)
    _set_recipe(monkeypatch, tiny, value=0.75)
    artifacts.forget(NAME)
    monkeypatch.setenv("ADVVIZ_NO_TRAIN", "1")
    assert artifacts.status(NAME)["stale"] and not artifacts.status(NAME)["present"]
    with pytest.raises(ArtifactError, match=f"another recipe.*`advviz artifacts build {NAME}`"):
        artifacts.get(NAME)
    assert tiny["builds"] == [0.5]


def test_the_record_is_read_back_from_the_files_metadata(tiny):
    _, made = artifacts.get(NAME)
    artifacts.forget(NAME)
    rec = artifacts.record(NAME)
    assert rec.source == "cache" and rec.path == str(tiny["cache"] / "weights" / f"{NAME}.safetensors")
    assert rec.training == {"epochs": 1, "final": {"loss": 0.25}} and rec.recipe == {"value": 0.5, "epochs": 1}
    assert rec.recipe_hash == TinyRecipe().hash() and rec.identity == artifacts.identity(NAME)
    assert rec.sha256 == made.sha256 == _core.sha256_file(rec.path)
    # from the file, not today's code: a recipe changed since is not what the file says
    assert artifacts.Record.from_dict(rec.to_dict()) == rec


def test_two_threads_train_once(tiny):
    got: list[nn.Module] = []
    threads = [threading.Thread(target=lambda: got.append(artifacts.get(NAME)[0])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tiny["builds"] == [0.5] and got[0] is got[1]


def test_the_shared_module_is_frozen_and_never_moved(tiny):
    m, _ = artifacts.get(NAME)
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    other, _ = artifacts.get(NAME, device="meta")
    assert other is not m and other.lin.weight.device.type == "meta"
    assert m.lin.weight.device.type == "cpu" and artifacts.get(NAME)[0] is m
    own = artifacts.fresh(NAME)
    assert own is not m and all(p.requires_grad for p in own.parameters())
    with torch.no_grad():
        own.lin.weight.fill_(9.0)
    assert torch.equal(m.lin.weight, torch.full((1, 2), 0.5))


def test_cli_list_build_ship_and_readme(tiny, monkeypatch, tmp_path, capsys):
    from advviz import cli
    from advviz.artifacts import _tools

    assert cli.main(["artifacts", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(NAME))
    assert line.split()[1:5] == ["test", "no", "train", TinyRecipe().hash()]
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(_tools, "shipped_dir", lambda: shipped)
    assert cli.main(["artifacts", "build", NAME, "--ship"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{NAME}  sha256 ") and f"shipped {shipped / (NAME + '.safetensors')}" in out
    from advviz.models import load_state_file

    assert load_state_file(shipped / f"{NAME}.safetensors")["lin.weight"].dtype == torch.float16
    readme = artifacts.weights_readme(shipped)
    row = next(x for x in readme.splitlines() if x.startswith(f"| `{NAME}.safetensors`"))
    assert f"`{TinyRecipe().hash()}`" in row and "value 0.5, epochs 1" in row and "final loss 0.25" in row
    assert f"`advviz artifacts build {NAME} --ship`" in row
    assert cli.main(["artifacts", "build", "no_such_artefact"]) == 2
    assert "no artefact named" in capsys.readouterr().err


def test_the_committed_weights_readme_is_the_generated_one():
    from advviz.artifacts._tools import shipped_dir

    assert (shipped_dir() / "README.md").read_text() == artifacts.weights_readme(), \
        "advviz/weights/README.md is out of date: run `advviz artifacts readme --write`"
