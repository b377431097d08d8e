"""Threat models and the adaptive suite (issue 25): EOT only where the determinism probe finds the
defense random, the per-image worst case over the clean image, the adaptive attacks and the transfer
attack, and the flag when the transfer attack beats the adaptive ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advviz.defenses import Defended
from advviz.evaluate import flags as FL
from advviz.evaluate import threat as T
from tests.helpers import TinyConvNet


def _smooth(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.avg_pool2d(x, 3, 1, 1)


def _noisy(x: torch.Tensor) -> torch.Tensor:
    """A random purifier: Gaussian noise from the global generator."""
    return (x + 0.05 * torch.randn_like(x)).clamp(0.0, 1.0)


@pytest.fixture
def tiny():
    return TinyConvNet(num_classes=3, seed=0).eval()


def test_eot_is_switched_on_exactly_when_the_probe_finds_the_defense_random(tiny, monkeypatch):
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    # a random purifier: EOT on, over EOT_DRAWS draws, for the attacked model only
    attacked, evaluated, cfg = T.threat_models(tiny, _noisy, probe=x)
    assert cfg["randomized"] is True and cfg["eot_samples"] == T.EOT_DRAWS > 1
    assert isinstance(attacked, Defended) and attacked.eot_samples == T.EOT_DRAWS
    assert isinstance(evaluated, Defended) and evaluated.eot_samples == 1  # the defense as deployed: one draw
    # a deterministic one: off
    attacked, _, cfg = T.threat_models(tiny, _smooth, probe=x)
    assert cfg["randomized"] is False and cfg["eot_samples"] == 1 and attacked.eot_samples == 1
    # the oblivious attacker ignores the defense: no EOT, but the probe's finding is recorded
    attacked, _, cfg = T.threat_models(tiny, _noisy, threat="oblivious", probe=x)
    assert attacked is tiny and cfg["randomized"] is True and cfg["eot_samples"] == 1
    # a random classifier without a purifier: EOT over the classifier itself
    noisy_model = nn.Sequential(nn.Dropout(0.0), tiny)
    noisy_model.forward = lambda v: tiny(_noisy(v))  # type: ignore[method-assign]
    attacked, evaluated, cfg = T.threat_models(noisy_model, probe=x)
    assert cfg["threat"] == "white-box" and evaluated is noisy_model
    assert isinstance(attacked, Defended) and attacked.eot_samples == T.EOT_DRAWS
    assert T.threat_models(tiny, probe=x)[0] is tiny  # a deterministic one is attacked as it is
    # the probe decides, nothing is assumed: what flags.randomized says is what happens
    monkeypatch.setattr(FL, "randomized", lambda *_a, **_k: False)
    assert T.threat_models(tiny, _noisy, probe=x)[2]["eot_samples"] == 1
    monkeypatch.setattr(FL, "randomized", lambda *_a, **_k: True)
    attacked, _, cfg = T.threat_models(tiny, _smooth, probe=x)
    assert cfg["eot_samples"] == T.EOT_DRAWS and attacked.eot_samples == T.EOT_DRAWS
    # a number given is used as it is, and recorded as given
    attacked, _, cfg = T.threat_models(tiny, _smooth, eot_samples=3, probe=x)
    assert attacked.eot_samples == 3 and cfg["eot_rule"] == "given"


def test_probe_defaults_to_noise_of_the_input_size_and_draws_nothing(tiny):
    state = torch.get_rng_state()
    _, _, cfg = T.threat_models(tiny, _noisy)
    assert cfg["randomized"] is True and torch.equal(state, torch.get_rng_state())
    bare = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))  # no input_size: the probe must be given
    with pytest.raises(ValueError, match="probe="):
        T.threat_models(bare, _noisy)
    with pytest.raises(ValueError, match="eot_samples"):
        T.threat_models(tiny, _noisy, eot_samples=0)


def test_defended_probes_a_plain_purifier_without_drawing_from_the_global_generator(tiny):
    """``defended`` runs a plain callable once to see whether it gives a gradient (BPDA otherwise); that
    probe used to draw from the global generator (and a random purifier drew again), so building a
    defense moved every seeded result after it."""
    from advviz.defenses import defended

    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert defended(tiny, _noisy).bpda is False
    assert torch.equal(state, torch.get_rng_state())


def test_adaptive_attack_uses_eot_on_a_random_defense(tiny):
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.zeros(6, dtype=torch.long)
    fast = (("apgd_ce", {"steps": 3}),)  # the mechanism only; the papers run the full suite
    res = T.adaptive_attack(tiny, x, y, eps=8 / 255, purifier=_noisy, attacks=fast)
    assert res.config["randomized"] is True and res.config["eot_samples"] == T.EOT_DRAWS
    assert res.config["threat"]["attacked"]["eot_samples"] == T.EOT_DRAWS
    res = T.adaptive_attack(tiny, x, y, eps=8 / 255, purifier=_smooth, attacks=fast)
    assert res.config["randomized"] is False and res.config["eot_samples"] == 1


class _MaskedByRounding(nn.Module):
    """Hand-set 3-class classifier on ``(2, 4, 4)`` images, label 0 = "fewer than 12 of the 16 pixels
    of channel 0 round to 1".

    ``logit_0 = 11.5 - sum(round(x[:, 0])) - 25 * relu(x[:, 1, 0, 0] - 0.45)``, ``logit_1 = 0``,
    ``logit_2 = -100``. ``round`` has a zero gradient, so no gradient attack can move channel 0 (an
    attack from a random start on the eps sphere flips at most a few pixels); the transfer image
    ``x + eps`` flips all 16 of a point at 0.3. Channel 1's pixel (0, 0), when above 0.5, is an
    ordinary differentiable way to break a point: at 0.75 it is classified correctly, and every point
    of its 0.25-ball has a gradient there (no random start falls below 0.45).
    """

    num_classes = 3
    input_size = (2, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z0 = 11.5 - torch.round(x[:, 0]).flatten(1).sum(1) - 25 * torch.relu(x[:, 1, 0, 0] - 0.45)
        return torch.stack([z0, torch.zeros_like(z0), torch.full_like(z0, -100.0)], dim=1)


def test_row_accuracy_is_the_per_image_worst_case_and_names_the_breaker():
    """Four points: A (channel 0 at 0.3) is left robust by the gradient attacks (zero gradients) and
    broken by the transfer attack; B is misclassified clean; C (0.1) is robust to everything; D
    (channel 1's pixel at 0.75) falls to APGD-CE. The row's accuracy is the worst case per image:
    C alone."""
    x = torch.zeros(4, 2, 4, 4)
    x[0, 0], x[1, 0], x[2, 0], x[3, 0] = 0.3, 0.6, 0.1, 0.1
    x[3, 1, 0, 0] = 0.75
    y = torch.zeros(4, dtype=torch.long)
    eps = 0.25
    transfer = (x + eps).clamp(0, 1)
    model = _MaskedByRounding()
    res = T.adaptive_attack(model, x, y, eps=eps, transfer=transfer, transfer_name="x + eps")
    assert res.per_sample == ["transfer", "clean", None, "apgd_ce"]
    assert res.accuracy == 0.25 and res.end_to_end_accuracy == 0.5 and res.transfer_accuracy == 0.25
    assert res.breakers == {"clean": 1, "apgd_ce": 1, "apgd_t": 0, "transfer": 1, "robust": 1}
    assert torch.equal(res.x_adv[0], transfer[0]) and torch.equal(res.x_adv[1], x[1]) and torch.equal(res.x_adv[2], x[2])
    assert (model(res.x_adv).argmax(1) == y).tolist() == [False, False, True, False]  # the inputs that decided
    assert any(f.startswith("transfer-beats-adaptive") for f in res.flags)
    row = res.row()
    assert row["accuracy"] == 0.25 and row["per_sample"] == res.per_sample and row["flags"] == res.flags
    # the config records the suite (100 iterations, one restart each), BPDA, EOT and the transfer attack
    assert [(a["attack"], a["n_iter"], a["n_restarts"]) for a in res.config["attacks"]] == [("apgd_ce", 100, 1),
                                                                                            ("apgd_t", 100, 1)]
    assert res.config["eot_samples"] == 1 and res.config["bpda"] is False and res.config["transfer"] == "x + eps"
    # without the transfer attack, A counts as robust and nothing is flagged
    alone = T.adaptive_attack(model, x, y, eps=eps)
    assert alone.per_sample == [None, "clean", None, "apgd_ce"] and alone.accuracy == 0.5
    # the one flag left is the toy model's class count (3 classes: APGD-T gets 2 targets, not 9)
    assert [f.split(":")[0] for f in alone.flags] == ["few-classes"]
    assert alone.transfer_accuracy is None and "transfer" not in alone.breakers
    text = T.format_breakers([{"defense": "d", **row}], label=lambda r: r["defense"])
    assert "d: clean 1, apgd_ce 1, apgd_t 0, transfer 1, robust 1" in text and "transfer-beats-adaptive" in text


def test_transfer_images_must_lie_within_the_budget():
    model = _MaskedByRounding()
    x = torch.full((2, 2, 4, 4), 0.3)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="outside the Linf ball"):
        T.adaptive_attack(model, x, y, eps=0.1, transfer=(x + 0.2).clamp(0, 1))
    with pytest.raises(ValueError, match="one attacked image per image"):
        T.adaptive_attack(model, x, y, eps=0.1, transfer=x[:1])


def test_transfer_flag_threshold():
    """More than 0.2 percentage points of the points and at least one (the reference's black-box check)."""
    assert FL.transfer_flag(0, 10) is None and FL.transfer_flag(0, 0) is None
    assert FL.transfer_flag(1, 500) is None  # exactly 0.2 %
    assert FL.transfer_flag(1, 499).startswith("transfer-beats-adaptive")
    assert FL.transfer_flag(3, 1000).startswith("transfer-beats-adaptive")
    assert FL.transfer_flag(1, 4, what="white-box").startswith("transfer-beats-white-box")
    msg = FL.transfer_flag(2, 8)
    assert "2 of 8" in msg and "DLR" in msg and "EOT" in msg and "BPDA" in msg
