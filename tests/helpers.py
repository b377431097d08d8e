"""Tiny hand-set models for exact expectations (in the spirit of captum's basic_models)."""

from __future__ import annotations

import torch
from torch import nn

from advviz.models import Classifier, Normalize


class LinearImageModel(Classifier):
    """logits = W · flatten(x) + b, with hand-set ``W`` ``(K, C*H*W)`` and ``b`` ``(K,)``.

    Its input gradients are known in closed form, so attacks on it can be checked exactly.
    """

    last_conv = "normalize"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, input_size: tuple[int, int, int]) -> None:
        super().__init__()
        c = input_size[0]
        self.input_size = input_size
        self.num_classes = weight.shape[0]
        self.normalize = Normalize((0.0,) * c, (1.0,) * c)
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.flatten(1))


class TinyConvNet(Classifier):
    """A small seeded CNN for 3x8x8 inputs (fast invariants): conv(3->4) ReLU, conv(4->4) ReLU, GAP, fc."""

    last_conv = "relu2"

    def __init__(self, num_classes: int = 3, seed: int = 0, in_channels: int = 3, size: int = 8) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.input_size = (in_channels, size, size)
        self.num_classes = num_classes
        self.normalize = Normalize((0.5,) * in_channels, (0.25,) * in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.relu1(self.bn1(self.conv1(self.normalize(x))))))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))


def stub_artifacts(monkeypatch, modules: dict[str, nn.Module]) -> None:
    """Make ``advviz.artifacts.get(name)`` return ``modules[name]`` (with a test record) for the names given.

    Other names resolve as usual. The stand-ins are returned as they are (not frozen), so a test
    can check that callers restore their mode.
    """
    from advviz import artifacts

    real_get = artifacts.get

    def get(name: str, *, device=None, progress: bool = False):
        if name in modules:
            rec = artifacts.Record(name=name, sha256="", identity="test", recipe={}, recipe_hash="test",
                                   source="test stand-in")
            return (modules[name].to(device) if device is not None else modules[name]), rec
        return real_get(name, device=device, progress=progress)

    monkeypatch.setattr(artifacts, "get", get)


def replace_artifact(monkeypatch, name: str, **changes) -> None:
    """Register a changed copy of artefact ``name`` (e.g. a tiny ``recipe`` and its ``make``) for one test."""
    import dataclasses

    from advviz import artifacts
    from advviz.artifacts import _core

    spec = artifacts.get_spec(name)
    monkeypatch.setitem(_core._SPECS, name, dataclasses.replace(spec, **changes))
    artifacts.forget()
    monkeypatch.setattr(_core, "_MEMO", {})
    monkeypatch.setattr(_core, "_RESOLVED", {})


def uddn_run_with_stand_ins(monkeypatch, **run_kw):
    """``advviz.papers.uddn.run(quick=True, n=4)`` with tiny stand-ins for every trained network
    (seeded 4-wide denoisers, an untrained ResNet-20 for PGD-AT, distillation and the students)."""
    import importlib

    from advviz import models
    from advviz.papers import protected
    from advviz.papers import uddn as P

    U = importlib.import_module("advviz.defenses.uddn")
    D = importlib.import_module("advviz.defenses.distillation")
    torch.manual_seed(0)
    nets = {k: (U.UDDN(3, 4) if k != "dae" else U.dae_network(3, 4)).eval() for k in ("uddn", "dae", "pgd")}
    monkeypatch.setattr(P, "load_denoiser", lambda kind, **_k: (nets[kind], {"name": kind, "guidance": kind}))
    stand_in = models.create("resnet20").eval()
    monkeypatch.setattr(protected, "resnet20", lambda *_a, **_k: (stand_in, {"name": "pgd_at stand-in"}))
    monkeypatch.setattr(D, "load_defensive_student", lambda *_a, **_k: (stand_in, {"name": "dd stand-in"}))
    x = torch.rand(4, 3, 32, 32)
    monkeypatch.setattr(P, "training_pairs", lambda *_a, **_k: (x, x, torch.zeros(4, dtype=torch.long), {}))
    monkeypatch.setattr(P, "_student", lambda *_a, **_k: stand_in)
    return P.run(**{"quick": True, "n": 4, "device": "cpu", **run_kw})
