"""advviz.train.adversarial_fit / adversarial_examples: inner attacks and a robustness gain on digits."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from advviz import data, metrics, train
from advviz.models import Classifier, Normalize
from tests.conftest import requires_cifar, requires_resnet
from tests.helpers import TinyConvNet


class SmallDigitsCNN(Classifier):
    """A CNN much smaller than LeNet-5 for 1x28x28 digits: two strided 5x5 convs (8, 16), one FC."""

    last_conv = "relu2"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.num_classes = 10
        self.input_size = (1, 28, 28)
        self.normalize = Normalize((0.1307,), (0.3081,))
        self.conv1 = nn.Conv2d(1, 8, 5, stride=2, padding=2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 5, stride=2, padding=2)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.relu1(self.conv1(self.normalize(x)))))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.flatten(1))


def _pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    """Accuracy under torchattacks' PGD (an independent reference: 10 steps of eps/4, random start)."""
    torchattacks = pytest.importorskip("torchattacks")
    model.eval()
    torch.manual_seed(0)
    x_adv = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=True)(x, y)
    return metrics.accuracy(model, x_adv, y)


# ------------------------------------------------------------------------------ inner attacks

@pytest.mark.parametrize("attack", ["fgsm", "fast", "pgd"])
def test_inner_attack_in_budget_and_leaves_the_model_alone(attack: str) -> None:
    model = TinyConvNet(num_classes=3, seed=0)
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    eps = 8 / 255
    torch.manual_seed(0)
    x_adv = train.adversarial_examples(model, x, y, attack=attack, eps=eps)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float((x_adv - x).abs().max()) > 0
    # parameters' .grad untouched, BatchNorm running statistics and counter restored, mode kept
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())
    assert model.training and model.bn1.training
    # it increases the loss over the clean batch
    with torch.no_grad():
        ce = nn.functional.cross_entropy
        assert float(ce(model(x_adv), y)) > float(ce(model(x), y))


def test_inner_attack_definitions_on_a_linear_model() -> None:
    from tests.helpers import LinearImageModel

    # CE gradient sign on a 2-class linear model with w1 - w0 = (1, -1, 2, -2): FGSM moves each
    # element by eps in the sign of (w_y' - w_y) where y' is the other class
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 2.0, -2.0]])
    model = LinearImageModel(w, torch.zeros(2), (1, 2, 2))
    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.tensor([0])
    out = train.adversarial_examples(model, x, y, attack="fgsm", eps=0.1)
    assert out.flatten().tolist() == pytest.approx([0.6, 0.4, 0.6, 0.4])
    # PGD with enough steps ends at the same corner of the ball; fast-AT: step 1.25 eps then clipped
    torch.manual_seed(0)
    assert train.adversarial_examples(model, x, y, attack="pgd", eps=0.1, steps=10).flatten().tolist() == \
        pytest.approx([0.6, 0.4, 0.6, 0.4])
    # fast-AT: uniform start in [-eps, eps], one step of 1.25 eps, clipped: at least 0.25 eps along the sign
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0])
    for seed in range(5):
        torch.manual_seed(seed)
        d = (train.adversarial_examples(model, x, y, attack="fast", eps=0.1) - x).flatten()
        assert bool((d * sign >= 0.025 - 1e-6).all()) and float(d.abs().max()) <= 0.1 + 1e-6
    # a callable is used as is
    calls = []

    def custom(m: nn.Module, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        calls.append(m.training)
        return (xx + 0.01).clamp(0, 1)

    assert torch.allclose(train.adversarial_examples(model, x, y, attack=custom, bn_mode="eval"), x + 0.01)
    assert calls == [False]


def test_bad_arguments() -> None:
    model = TinyConvNet()
    x, y = torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="attack must be"):
        train.adversarial_loss(attack="cw")
    with pytest.raises(ValueError, match="bn_mode"):
        train.adversarial_examples(model, x, y, bn_mode="frozen")
    with pytest.raises(ValueError, match="8/255"):
        train.adversarial_fit(model, (x, y), eps=8, epochs=1, progress=False)


def test_adversarial_fit_keeps_bn_statistics_to_one_update_per_batch() -> None:
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    model = TinyConvNet(num_classes=3, seed=0)
    train.adversarial_fit(model, (x, y), attack="pgd", eps=8 / 255, steps=3, epochs=2, batch_size=8,
                          progress=False, device="cpu")
    assert int(model.bn1.num_batches_tracked) == 4  # 2 epochs x 2 batches: the attack's passes do not count
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


# ------------------------------------------------------------------------- robustness gain

EPS = 0.1  # digits are smooth upsampled 8x8 images; 0.1 is a clear but learnable budget


@pytest.fixture(scope="module")
def digits_plain():
    """The undefended model (4 clean epochs), the test split and its PGD accuracy."""
    train_set, test_set = data.load("digits", "train"), data.load("digits", "test")
    x_test, y_test = test_set.tensors()
    plain = SmallDigitsCNN(seed=0)
    train.fit(plain, train_set, epochs=4, lr=3e-3, batch_size=64, progress=False, device="cpu")
    return train_set, plain, x_test, y_test, _pgd_accuracy(plain, x_test, y_test, EPS)


@pytest.mark.slow
def test_pgd_adversarial_training_raises_pgd_accuracy_on_digits(digits_plain) -> None:
    train_set, plain, x_test, y_test, plain_pgd = digits_plain
    # PGD-AT (Madry: 7 steps of eps/4 from a random start), 2 epochs continued from the plain model
    robust = copy.deepcopy(plain)
    result = train.adversarial_fit(robust, train_set, attack="pgd", eps=EPS, epochs=2, lr=1e-3, batch_size=64,
                                   progress=False, device="cpu")
    assert result.epochs_completed == 2 and len(result.history) == 2
    # measured (CPU): plain clean 0.947 / PGD 0.136; PGD-AT clean 0.947 / PGD 0.485
    assert metrics.accuracy(plain, x_test, y_test) > 0.9
    assert metrics.accuracy(robust, x_test, y_test) > 0.85
    assert _pgd_accuracy(robust, x_test, y_test, EPS) >= plain_pgd + 0.2


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["fast", "fgsm"])
def test_fast_and_fgsm_adversarial_training_raise_pgd_accuracy_on_digits(digits_plain, attack: str) -> None:
    train_set, plain, x_test, y_test, plain_pgd = digits_plain
    robust = copy.deepcopy(plain)
    train.adversarial_fit(robust, train_set, attack=attack, eps=EPS, epochs=2, lr=1e-3, batch_size=64,
                          progress=False, device="cpu")
    # measured (CPU): plain 0.136; fast-AT 0.462; FGSM-AT 0.468
    assert _pgd_accuracy(robust, x_test, y_test, EPS) >= plain_pgd + 0.2


@requires_cifar
@requires_resnet
def test_protected_resnet20_checkpoints_each_epoch_and_refuses_to_cache_an_interrupted_run(tmp_path, monkeypatch):
    import dataclasses

    from advviz import artifacts
    from advviz.artifacts import _core
    from advviz.papers import protected

    name = "resnet20_cifar10_pgd_at_quick"
    monkeypatch.setenv("ADVVIZ_CACHE", str(tmp_path))
    spec = artifacts.get_spec(name)
    tiny = spec.recipe.replace(steps=1, batch_size=16, epochs=2, images=32)
    monkeypatch.setitem(_core._SPECS, name, dataclasses.replace(spec, recipe=tiny))
    artifacts.forget(name)
    seen = {}
    real_fit = train.adversarial_fit

    def interrupted_fit(*args, **kwargs):
        seen.update(kwargs)
        return train.FitResult(history=[], interrupted=True, epochs_completed=0, checkpoint=kwargs["checkpoint"])

    monkeypatch.setattr(train, "adversarial_fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt, match="resumes next time"):
        protected.resnet20("pgd_at", quick=True)
    ckpt_path = tmp_path / "checkpoints" / f"{name}-{artifacts.identity(name)}"
    assert seen["checkpoint"] == ckpt_path
    assert not (tmp_path / "weights" / f"{name}.safetensors").exists()

    monkeypatch.setattr(train, "adversarial_fit", real_fit)
    model, rec = protected.resnet20("pgd_at", quick=True)
    assert rec["trained_now"] and (tmp_path / "weights" / f"{name}.safetensors").is_file()
    assert rec["recipe"]["steps"] == 1 and rec["recipe_hash"] == tiny.hash() and 0 <= rec["clean_accuracy_1000"] <= 1
    ckpt = json.loads(ckpt_path.with_suffix(".json").read_text())
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    artifacts.forget(name)
