"""The CFR patch attack (paper 002): quality targets, mask confinement, the documented modes."""

from __future__ import annotations

import pytest
import torch

from advviz.attacks import cfr, cfr_attack
from advviz.explain import cfr_mask, gradcam
from tests.helpers import TinyConvNet


@pytest.fixture(scope="module")
def cfr_run(resnet20, cifar_correct):
    x, y = cifar_correct
    return x, y, cfr_attack(resnet20, x, y)


def test_cfr_reaches_the_paper_quality_from_zero_init(cfr_run):
    from advviz.metrics import lp_norms, ssim

    x, y, r = cfr_run
    asr = r.success.float().mean().item()
    norms = lp_norms(x, r.x_adv)
    s = float(ssim(x, r.x_adv))
    # targets (paper, ResNet-18): ASR 1.00, SSIM 0.99, l2 1.56, linf 0.07
    assert asr >= 0.99, asr
    assert s >= 0.98, s
    assert norms["l2"] <= 1.6 and norms["linf"] <= 0.1, norms


def test_cfr_perturbs_only_inside_the_cfr(cfr_run):
    x, _, r = cfr_run
    outside = (r.mask == 0).expand_as(x)
    assert r.delta[outside].abs().max() == 0
    assert torch.equal(r.x_adv, (x + r.delta).clamp(0, 1))
    assert torch.allclose(r.mask.flatten(1).sum(1)[r.mask.flatten(1).sum(1) > 0], torch.tensor(1.0), atol=1e-5)


def test_cfr_uses_a_given_cam_and_matches_registered_function(resnet20, cifar_correct):
    x, y = cifar_correct[0][:8], cifar_correct[1][:8]
    cam = gradcam(resnet20, x, target=y)
    a = cfr_attack(resnet20, x, y, cam=cam)
    b = cfr(resnet20, x, y)
    assert torch.equal(a.x_adv, b)
    assert torch.equal(a.mask, cfr_mask(cam, 0.2))


def test_cfr_size_term_and_threshold_behave_as_documented(resnet20, cifar_correct):
    x, y = cifar_correct[0][:16], cifar_correct[1][:16]
    loose = cfr_attack(resnet20, x, y, beta=0.0)
    tight = cfr_attack(resnet20, x, y, beta=20.0)
    assert tight.delta.flatten(1).norm(dim=1).mean() < loose.delta.flatten(1).norm(dim=1).mean()
    wide, narrow = cfr_attack(resnet20, x, y, tau=0.0), cfr_attack(resnet20, x, y, tau=0.6)
    assert (narrow.mask > 0).sum() < (wide.mask > 0).sum()
    assert ((narrow.delta != 0).sum() <= (wide.delta != 0).sum())
    # T cancels under the normalised step (documented), and matters for raw SGD steps
    t_small, t_large = cfr_attack(resnet20, x, y, T=0.1), cfr_attack(resnet20, x, y, T=2.0)
    assert torch.equal(t_small.steps, t_large.steps)
    assert torch.allclose(t_small.x_adv, t_large.x_adv, atol=1e-5)
    sgd_small_t = cfr_attack(resnet20, x, y, mode="sgd", T=0.01)
    sgd_large_t = cfr_attack(resnet20, x, y, mode="sgd", T=2.0)
    assert not torch.equal(sgd_small_t.x_adv, sgd_large_t.x_adv)


def test_literal_algorithm_stalls(resnet20, cifar_correct):
    """Algorithm 1 as printed (sum-normalised mask applied twice) moves no pixel measurably."""
    x, y = cifar_correct[0][:16], cifar_correct[1][:16]
    r = cfr_attack(resnet20, x, y, mode="paper")
    assert r.success.float().mean() <= 0.1
    assert r.delta.abs().max() < 1e-2


def test_cfr_bad_parameters():
    m = TinyConvNet()
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="tau"):
        cfr(m, x, y, tau=1.5)
    with pytest.raises(ValueError, match="inverse temperature"):
        cfr(m, x, y, T=0)
    with pytest.raises(ValueError, match="mode"):
        cfr(m, x, y, mode="literal")
    with pytest.raises(ValueError, match="cam"):
        cfr_attack(m, x, y, cam=torch.rand(2, 1, 4, 4))


def test_cfr_early_stop_off_runs_every_step(resnet20, cifar_correct):
    """``early_stop=False`` runs all N steps for every image (issue 15, point 16); the default
    still stops each image once misclassified."""
    x, y = cifar_correct[0][:8], cifar_correct[1][:8]
    on = cfr_attack(resnet20, x, y, steps=10)
    off = cfr_attack(resnet20, x, y, steps=10, early_stop=False)
    assert (off.steps == 10).all() and (on.steps < 10).any()
    assert torch.equal(cfr(resnet20, x, y, steps=10), on.x_adv)  # default unchanged
    assert torch.equal(cfr(resnet20, x, y, steps=10, early_stop=False), off.x_adv)
    # running on past the first misclassification only grows the perturbation
    assert off.delta.flatten(1).norm(dim=1).mean() > on.delta.flatten(1).norm(dim=1).mean()


def test_cfr_reproduction_records_the_variant():
    """Every CFR setting in a result names its mode, step rule and early stop (issue 15, point 15)."""
    from advviz.papers import cfr as paper

    rec = paper._recorded(paper._attack_configs(True))["cfr"]
    assert rec["mode"] == "normalized" and rec["early_stop"] is True and rec["step_rule"].startswith("L2-normalised")
    assert {"tau", "T", "beta", "steps", "step", "eta"} <= set(rec)
    for mode in ("normalized", "sgd", "paper"):
        assert paper.cfr_label({"mode": mode}) == f"cfr ({mode})"
    assert paper._recorded({"cfr": {"mode": "paper"}})["cfr"]["early_stop"] is False


@pytest.mark.slow
def test_fig7_compares_cfr_and_pgd_at_a_matched_l2_budget(resnet20):
    """Fig. 7's CFR and PGD rows run at the same L2 budget, both for all their steps."""
    from advviz.papers import cfr as paper

    res = paper.run(table="fig7", quick=True, n=4, device="cpu")
    cfg = res["config"]
    assert cfg["attacks"]["cfr"]["early_stop"] is False and cfg["attacks"]["cfr"]["mode"] == "normalized"
    attacks = {r["attack"] for r in res["rows"]}
    assert {"cfr (normalized)", "pgd_l2 (matched)", "pgd"} <= attacks and "cfr" not in attacks
    for sub, pgd_cfg in cfg["pgd_l2_matched"].items():
        rows = {r["attack"]: r for r in res["rows"] if r["substitute"] == sub and r["white_box"]}
        assert pgd_cfg["norm"] == "l2" and pgd_cfg["steps"] == 20 and pgd_cfg["eps"] > 0
        # PGD stays inside the CFR-matched ball; the CFR mean norm is near its median
        assert rows["pgd_l2 (matched)"]["l2"] <= pgd_cfg["eps"] * (1 + 1e-4)
        assert rows["pgd_l2 (matched)"]["l2"] == pytest.approx(rows["cfr (normalized)"]["l2"], rel=0.5)
