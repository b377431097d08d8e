"""Probes of the artefact store (issue 24, items 7 and 8): a file whose record was edited or whose
tensors were replaced is refused, naming the file; the same recipe built twice gives the same weights."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from advviz import artifacts
from advviz._weights import read_metadata, save_state
from advviz.artifacts import ArtifactError, ArtifactSpec, BuildContext, Built, Recipe, _core
from advviz.artifacts.recipes import FitRecipe

NAME = "probe_sealed_artefact"


@dataclasses.dataclass(frozen=True)
class _Recipe(Recipe):
    value: float = 0.25


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


@pytest.fixture
def sealed(monkeypatch, tmp_path):
    """A tiny artefact, trained (written with its record and seal) into a temporary cache."""
    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path))
    monkeypatch.delenv("ADVVIZ_NO_TRAIN", raising=False)

    def build(ctx: BuildContext) -> Built:
        m = _Tiny()
        with torch.no_grad():
            m.lin.weight.fill_(ctx.recipe.value)
            m.lin.bias.zero_()
        return Built(m, {"epochs": 1})

    spec = ArtifactSpec(name=NAME, make=_Tiny, filename=f"{NAME}.safetensors", kind="test", recipe=_Recipe(),
                        build=build, description="probe only")
    artifacts.list_artifacts()
    monkeypatch.setitem(_core._SPECS, NAME, spec)
    artifacts.forget(NAME)
    path, _ = artifacts.resolve(NAME)
    artifacts.forget(NAME)
    yield path
    artifacts.forget(NAME)


def test_an_untouched_file_is_used(sealed):
    module, rec = artifacts.get(NAME)
    assert rec.path == str(sealed) and float(module.lin.weight[0, 0]) == 0.25


def test_an_edited_record_is_refused_naming_the_file(sealed):
    meta = read_metadata(sealed)
    record = json.loads(meta[artifacts.META_KEY])
    record["training"]["epochs"] = 100  # a record that claims more than was done
    meta[artifacts.META_KEY] = json.dumps(record)
    save_state(load_file(str(sealed)), sealed, metadata=meta)
    with pytest.raises(ArtifactError, match=f"{sealed.name}.*changed after advviz wrote it"):
        artifacts.get(NAME)


def test_replaced_tensors_are_refused_naming_the_file(sealed):
    state = load_file(str(sealed))
    state["lin.weight"] = torch.full_like(state["lin.weight"], 9.0)
    save_state(state, sealed, metadata=read_metadata(sealed))
    with pytest.raises(ArtifactError, match=f"{sealed.name}.*artifacts build {NAME}"):
        artifacts.get(NAME)


def test_a_file_without_a_seal_is_not_used(sealed, monkeypatch, caplog):
    meta = read_metadata(sealed)
    meta.pop(artifacts.SEAL_KEY)
    save_state(load_file(str(sealed)), sealed, metadata=meta)
    monkeypatch.setenv("ADVVIZ_NO_TRAIN", "1")
    with pytest.raises(ArtifactError, match="ADVVIZ_NO_TRAIN"):
        artifacts.get(NAME)


def test_every_shipped_file_carries_a_valid_seal():
    shipped = sorted(artifacts._tools.shipped_dir().glob("*.safetensors"))
    assert shipped
    for path in shipped:
        meta = read_metadata(path)
        assert artifacts.SEAL_KEY in meta, path.name
        assert _core._check_seal(artifacts.get_spec(path.stem), path, meta), path.name


@pytest.mark.slow
def test_the_same_recipe_built_twice_gives_the_same_weights(monkeypatch, tmp_path):
    """Initialisation, data order and augmentation are all seeded by the recipe (a fit of LeNet-5 on
    128 digits, one epoch, built twice into two empty caches)."""
    recipe = FitRecipe(epochs=1, lr=1e-3, batch_size=32, optimizer="adam", seed=3, images=128, data="digits:train")
    spec = dataclasses.replace(artifacts.get_spec("lenet5_digits"), name="probe_lenet", filename="probe_lenet.safetensors",
                               recipe=recipe)
    monkeypatch.setitem(_core._SPECS, "probe_lenet", spec)
    monkeypatch.delenv("ADVVIZ_NO_TRAIN", raising=False)
    states = []
    for i in range(2):
        monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path / str(i)))
        artifacts.forget("probe_lenet")
        torch.manual_seed(100 + i)  # the caller's random state must not matter
        path, _ = artifacts.resolve("probe_lenet", device="cpu")
        states.append(load_file(str(path)))
    artifacts.forget("probe_lenet")
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
