"""The shared mechanisms of issue 14, part 3: the training engine (a GAN step through
``train.fit_steps``), its checkpoints and Ctrl-C, the one gradient penalty, the one model guard and
the one module-device helper."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from advviz import train
from advviz._modules import model_guard, module_device
from advviz.generative import wgan
from advviz.train.checkpoints import load_checkpoint

# ---------------------------------------------------------------------------------------------
# a tiny WGAN-GP through the engine: two optimisers, n_critic critic steps per generator step
# ---------------------------------------------------------------------------------------------

N_CRITIC = 2


def _gan(seed: int = 0) -> nn.ModuleDict:
    torch.manual_seed(seed)
    return nn.ModuleDict({"gen": nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)),
                          "critic": nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))})


def _run(gan: nn.ModuleDict, *, epochs: int, checkpoint=None, callbacks=(), seen=None) -> train.FitResult:
    real = torch.randn(24, 3, generator=torch.Generator().manual_seed(7)) + 2
    opt_g = torch.optim.Adam(gan["gen"].parameters(), lr=1e-2, betas=(0.5, 0.9))
    opt_c = torch.optim.Adam(gan["critic"].parameters(), lr=1e-2, betas=(0.5, 0.9))
    critic = lambda v: gan["critic"](v).squeeze(1)  # noqa: E731

    def step(batch: torch.Tensor, state: train.TrainState) -> dict[str, float]:
        z = torch.randn(batch.shape[0], 2, generator=state.generator)
        with torch.no_grad():
            fake = gan["gen"](z)
        gp = wgan.gradient_penalty(critic, batch, fake, generator=state.generator)
        c_loss = critic(fake).mean() - critic(batch).mean() + 10 * gp
        opt_c.zero_grad(set_to_none=True)
        c_loss.backward()
        opt_c.step()
        out = {"critic": float(c_loss.detach())}
        if state.batch % N_CRITIC == 0:
            with model_guard(gan["critic"], eval=False):
                g_loss = -critic(gan["gen"](torch.randn(8, 2, generator=state.generator))).mean()
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
            out["gen"] = float(g_loss.detach())
            assert all(p.requires_grad for p in gan["critic"].parameters())
        if seen is not None:
            seen.append((state.epoch, state.batch, sorted(out)))
        return out

    def data(state: train.TrainState):
        order = torch.randperm(24, generator=state.generator)
        return [real[order[i:i + 6]] for i in range(0, 24, 6)]

    return train.fit_steps(gan, step, data, optimizers=[opt_g, opt_c], epochs=epochs, steps_per_epoch=4,
                           seed=3, device="cpu", checkpoint=checkpoint, run="tiny-wgan", callbacks=callbacks,
                           progress=False, extra=lambda: {"note": "tiny"})


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_gan_step_history_counts_generator_steps_per_n_critic():
    seen: list = []
    res = _run(_gan(), epochs=2, seen=seen)
    assert [s[:2] for s in seen] == [(e, b) for e in (1, 2) for b in (1, 2, 3, 4)]
    assert [s[2] for s in seen[:2]] == [["critic"], ["critic", "gen"]]
    assert [h["epoch"] for h in res.history] == [1, 2] and not res.interrupted
    assert {"critic", "gen", "seconds"} <= set(res.history[0])
    # the epoch's numbers are means over the steps that reported them
    assert all(math.isfinite(h["gen"]) and math.isfinite(h["critic"]) for h in res.history)


def test_gan_loop_ctrl_c_keeps_epoch_k_and_its_checkpoint_resumes_exactly(tmp_path):
    ref = _gan()
    _run(ref, epochs=3)
    after: dict[int, dict[str, torch.Tensor]] = {}

    class Snap:
        def on_epoch_end(self, state):
            after[state.epoch] = _state(state.model)

    class CtrlC:  # Ctrl-C in epoch k + 1 = 3, after a critic and a generator step
        def on_batch_end(self, state):
            if state.epoch == 3 and state.batch == 2:
                raise KeyboardInterrupt

    gan = _gan()
    res = _run(gan, epochs=4, checkpoint=tmp_path / "ck", callbacks=[Snap(), CtrlC()])
    assert res.interrupted and res.epochs_completed == 2 and not gan.training
    for k, v in gan.state_dict().items():  # the networks hold epoch 2's weights
        assert torch.equal(v, after[2][k]), k
    saved, meta = train.read_checkpoint(tmp_path / "ck")
    assert meta["epoch"] == 2 and meta["run"] == "tiny-wgan" and meta["extra"] == {"note": "tiny"}
    assert meta["format"] == train.CHECKPOINT_FORMAT and len(meta["optimizers"]) == 2
    for k, v in saved.items():  # ... and so does the checkpoint
        assert torch.equal(v, after[2][k]), k
    # a fresh model resumes from it (weights, both optimisers, epoch) and ends where an
    # uninterrupted 3-epoch run ends
    fresh = _gan(seed=1)
    res2 = _run(fresh, epochs=3, checkpoint=tmp_path / "ck")
    assert [h["epoch"] for h in res2.history] == [1, 2, 3] and res2.history[:2] == res.history
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k


def test_ctrl_c_from_an_epoch_end_callback_keeps_that_epoch(tmp_path):
    class StopAfter1:
        def on_epoch_end(self, state):
            if state.epoch == 1:
                raise KeyboardInterrupt

    ref = _gan()
    _run(ref, epochs=1)
    gan = _gan()
    res = _run(gan, epochs=3, checkpoint=tmp_path / "ck", callbacks=[StopAfter1()])
    assert res.interrupted and res.epochs_completed == 1
    for k, v in gan.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
    assert json.loads((tmp_path / "ck.json").read_text())["epoch"] == 1


def test_checkpoint_of_another_run_is_not_resumed(tmp_path):
    _run(_gan(), epochs=1, checkpoint=tmp_path / "ck")
    meta = json.loads((tmp_path / "ck.json").read_text())
    meta["run"] = "something else"
    (tmp_path / "ck.json").write_text(json.dumps(meta))
    res = _run(_gan(), epochs=2, checkpoint=tmp_path / "ck")
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert json.loads((tmp_path / "ck.json").read_text())["run"] == "tiny-wgan"


def test_the_four_gan_trainers_run_on_the_engine(monkeypatch):
    """pix2pix, GNR, AdvGAN and TSGAN have no loop of their own: each calls train.fit_steps."""
    from advviz.defenses import gnr, pix2pix
    from advviz.generative import advgan, tsgan

    calls = []
    real = train.fit_steps

    def spy(module, step, data, **kw):
        calls.append(kw["description"])
        return real(module, step, data, **kw)

    monkeypatch.setattr(train, "fit_steps", spy)
    x = torch.rand(8, 1, 8, 8)
    pix2pix.train_pix2pix(pix2pix.UNetGenerator(1, ngf=2, depth=3), pix2pix.PatchDiscriminator(1, ndf=2),
                          (x, x * 0.5), epochs=1, batch_size=4, device="cpu", progress=False)
    gnr.train_gnr(gnr.NoiseGenerator(1, z_dim=4, widths=(4, 4, 4), base=1, convs_per_unit=0),
                  gnr.NoiseCritic(1, widths=(4, 4, 4), size=8), x * 0.01, steps=2, batch_size=4, n_critic=1,
                  device="cpu", progress=False, log_every=1)
    adv = advgan.AdvGAN(advgan.AdvGANConfig(name="t", batch_size=4, epochs=1, width=2), (1, 8, 8), target=0)
    adv.fit(x, torch.zeros(8, dtype=torch.long), nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), device="cpu",
            progress=False)
    gan = tsgan.TSGAN(tsgan.TSGANConfig(name="t", batch_size=4, n_critic=2, width=2, z_dim=4), (1, 8, 8))
    gan.fit_normal(x, epochs=1, device="cpu", progress=False)
    gan.fit_adversarial(x, nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), [1], epochs=1, device="cpu",
                        progress=False)
    assert calls == ["pix2pix", "gnr (wgan-gp)", "AdvGAN (target 0)", "TSGAN stage 1 (WGAN-GP)",
                     "TSGAN stage 2, target 1"]


def test_old_single_optimizer_checkpoints_still_resume(tmp_path):
    """Checkpoints written before the engine (format advviz-fit-1: one optimizer, ``optim.<pid>.<key>``)."""
    from safetensors.torch import save_file

    m = nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m(torch.ones(1, 3)).sum().backward()
    opt.step()
    tensors = {f"model.{k}": v.detach().clone() for k, v in m.state_dict().items()}
    st = opt.state_dict()
    for pid, ps in st["state"].items():
        tensors.update({f"optim.{pid}.{k}": v for k, v in ps.items() if isinstance(v, torch.Tensor)})
    save_file(tensors, str(tmp_path / "old.safetensors"))
    (tmp_path / "old.json").write_text(json.dumps({"epoch": 1, "history": [{"epoch": 1, "loss": 0.5}],
                                                   "param_groups": st["param_groups"], "optim_scalars": {},
                                                   "format": "advviz-fit-1"}))
    m2, opt2 = nn.Linear(3, 2), None
    opt2 = torch.optim.Adam(m2.parameters(), lr=1e-3)
    epoch, hist = load_checkpoint(tmp_path / "old", m2, [opt2], torch.device("cpu"))
    assert epoch == 1 and hist == [{"epoch": 1, "loss": 0.5}]
    assert torch.equal(m2.weight, m.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], st["state"][0]["exp_avg"])


# ---------------------------------------------------------------------------------------------
# the one gradient penalty
# ---------------------------------------------------------------------------------------------

def test_one_gradient_penalty_exact_on_a_hand_set_critic():
    from advviz.defenses import gnr
    from advviz.generative import tsgan

    assert gnr.gradient_penalty is wgan.gradient_penalty and tsgan.gradient_penalty is wgan.gradient_penalty
    # D(x) = <w, x> with w = (3, 4) (norm 5) plus a quadratic part on a second sample:
    # D(x) = sum(a * x^2): grad = 2 a x_bar
    w = torch.tensor([3.0, 4.0])
    lin = lambda v: (v * w).sum(1)  # noqa: E731
    real, fake = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[0.0, 0.0], [4.0, 1.0]])
    assert wgan.gradient_penalty(lin, real, fake, t=torch.tensor([0.3, 0.9])).item() == pytest.approx(16.0)
    a = torch.tensor([1.0, 0.5])
    quad = lambda v: (a * v ** 2).sum(1)  # noqa: E731
    t = torch.tensor([0.5, 0.25])
    x_bar = t[:, None] * real + (1 - t[:, None]) * fake  # [[0.5, 1.0], [3.0, 1.0]]
    norms = (2 * a * x_bar).norm(dim=1)  # [sqrt(1 + 1), sqrt(36 + 1)]
    expected = ((math.sqrt(2) - 1) ** 2 + (math.sqrt(37) - 1) ** 2) / 2
    assert norms.tolist() == pytest.approx([math.sqrt(2), math.sqrt(37)])
    assert wgan.gradient_penalty(quad, real, fake, t=t).item() == pytest.approx(expected, rel=1e-6)
    # TSGAN's critic loss passes its interpolation weights through (its keyword is eps)
    loss, parts = tsgan.critic_loss(lin, real, fake, gp_weight=10.0, eps=torch.tensor([0.3, 0.9]))
    assert parts["gp"] == pytest.approx(16.0)


# ---------------------------------------------------------------------------------------------
# the one model guard
# ---------------------------------------------------------------------------------------------

def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 1))


def test_model_guard_restores_mode_and_flags_on_exception():
    net = _net().train()
    net[2].eval()  # a mixed state: restored per submodule, not by one net.train(...)
    net[3].weight.requires_grad_(False)
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    with pytest.raises(RuntimeError, match="boom"), model_guard(net):
        assert not any(m.training for m in net.modules())
        assert not any(p.requires_grad for p in net.parameters())
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == flags


def test_model_guard_options_and_nesting():
    net = _net().train()
    with model_guard(net, freeze=False):
        assert not net.training and all(p.requires_grad for p in net.parameters())
        with model_guard(net[0], eval=False):  # nested: freezes only the first layer
            assert not net[0].weight.requires_grad and net[3].weight.requires_grad
            with model_guard(net):
                assert not any(p.requires_grad for p in net.parameters())
            assert not net[0].weight.requires_grad and net[3].weight.requires_grad
        assert all(p.requires_grad for p in net.parameters()) and not net.training
    assert net.training and all(m.training for m in net.modules())
    # the attack core's name is the same guard
    from advviz.attacks._core import model_guard as core_guard

    assert core_guard is model_guard


def test_model_guard_keeps_batchnorm_statistics():
    net = _net().train()
    before = {k: v.clone() for k, v in net[1].state_dict().items()}
    with model_guard(net, eval=False, freeze=False, keep_batchnorm_stats=True):
        net(torch.randn(8, 2))  # a training-mode pass updates the running statistics ...
        assert not torch.equal(net[1].running_mean, before["running_mean"])
    for k, v in net[1].state_dict().items():  # ... which are put back
        assert torch.equal(v, before[k]), k


# ---------------------------------------------------------------------------------------------
# the one device helper
# ---------------------------------------------------------------------------------------------

def test_module_device():
    assert module_device(nn.Linear(2, 2)) == torch.device("cpu")
    only_buffers = nn.Module()
    only_buffers.register_buffer("b", torch.zeros(1))
    assert module_device(only_buffers) == torch.device("cpu")
    assert module_device(nn.ReLU(), default="meta") == torch.device("meta")


# ---------------------------------------------------------------------------------------------
# the GAN trainers' checkpoints (the engine's format)
# ---------------------------------------------------------------------------------------------

def test_tsgan_ctrl_c_after_epoch_k_keeps_epoch_k_in_memory_and_on_disk(tmp_path):
    from advviz.generative import tsgan

    cfg = tsgan.TSGANConfig(name="t", batch_size=4, n_critic=2, width=2, z_dim=4)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ref = tsgan.TSGAN(cfg, (1, 8, 8))
    ref.fit_normal(x, epochs=2, device="cpu", progress=False, seed=4)

    def stop_after_2(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    gan = tsgan.TSGAN(cfg, (1, 8, 8))
    res = gan.fit_normal(x, epochs=5, device="cpu", progress=False, seed=4, checkpoint=tmp_path / "ck.safetensors",
                         callback=stop_after_2)
    assert res.interrupted and res.epochs_completed == 2 and gan.epochs_done == {"normal": 2}
    for k, v in gan.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
    saved, meta = train.read_checkpoint(tmp_path / "ck")
    assert meta["epoch"] == 2 and meta["extra"]["epochs_done"] == {"normal": 2} and len(meta["optimizers"]) == 2
    for k, v in saved.items():
        assert torch.equal(v, ref.state_dict()[k]), k
    # a fresh model picks every stage up from the checkpoint; another configuration is refused
    fresh = tsgan.TSGAN(cfg, (1, 8, 8))
    assert fresh.fit_normal(x, epochs=3, device="cpu", progress=False, seed=4,
                            checkpoint=tmp_path / "ck.safetensors").epochs_completed == 3
    with pytest.raises(ValueError, match="different configuration"):
        tsgan.TSGAN(cfg.replace(width=3), (1, 8, 8)).fit_normal(x, epochs=3, progress=False,
                                                                checkpoint=tmp_path / "ck.safetensors")


def test_advgan_checkpoint_resumes_and_refuses_another_target(tmp_path):
    from advviz.generative import advgan

    cfg = advgan.AdvGANConfig(name="t", batch_size=4, epochs=2, width=2)
    x, y = torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)
    target = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    torch.manual_seed(0)
    ref = advgan.AdvGAN(cfg, (1, 8, 8), target=0)
    ref.fit(x, y, target, device="cpu", progress=False)
    torch.manual_seed(0)
    first = advgan.AdvGAN(cfg, (1, 8, 8), target=0)
    assert first.fit(x, y, target, epochs=1, device="cpu", progress=False,
                     checkpoint=tmp_path / "a").epochs_completed == 1
    torch.manual_seed(5)
    fresh = advgan.AdvGAN(cfg, (1, 8, 8), target=0)
    res = fresh.fit(x, y, target, device="cpu", progress=False, checkpoint=tmp_path / "a")
    assert res.epochs_completed == 2 and fresh.epochs_done == 2 and [h["epoch"] for h in fresh.history] == [1, 2]
    for k, v in fresh.state_dict().items():  # weights and both optimisers resumed: as one 2-epoch run
        assert torch.equal(v, ref.state_dict()[k]), k
    with pytest.raises(ValueError, match="different configuration or target"):
        advgan.AdvGAN(cfg, (1, 8, 8), target=3).fit(x, y, target, progress=False, checkpoint=tmp_path / "a")
