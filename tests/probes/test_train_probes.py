"""Probes of ``advviz train`` (issue 24, items 1 and 2): an interrupt never destroys a good file, a
checkpoint resumes only the run that wrote it, and a diverging or mismatched run says what to do."""

from __future__ import annotations

import pytest
import torch

from advviz import cli, demo, models, train
from advviz._weights import sha256_file


class _StopAt:
    """A ``fit`` callback that presses Ctrl-C at batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_batch_end(self, state: train.TrainState) -> None:
        if state.epoch == self.epoch and state.batch == self.batch:
            raise KeyboardInterrupt


def _interrupt(monkeypatch, epoch: int, batch: int) -> None:
    real = train.fit

    def fit(*a, **k):
        return real(*a, callbacks=[_StopAt(epoch, batch)], **k)

    monkeypatch.setattr(demo.train, "fit", fit)


def _args(out, *extra):
    return ["train", "lenet5", "--data", "digits", "--epochs", "2", "--batch-size", "256", "--out", str(out), *extra]


def test_ctrl_c_in_the_first_epoch_leaves_an_existing_file_alone(tmp_path, monkeypatch, capsys):
    out = tmp_path / "good.safetensors"
    assert cli.main(_args(out, "--epochs", "1")) == 0
    good = sha256_file(out)
    _interrupt(monkeypatch, epoch=1, batch=2)
    code = cli.main(_args(out, "--lr", "0.01", "--fresh"))
    err = capsys.readouterr().err
    assert code == 130 and "nothing was written" in err
    assert sha256_file(out) == good


def test_ctrl_c_after_an_epoch_never_overwrites_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    out = tmp_path / "good.safetensors"
    assert cli.main(_args(out, "--epochs", "1")) == 0
    good = sha256_file(out)
    _interrupt(monkeypatch, epoch=2, batch=1)
    code = cli.main(_args(out, "--epochs", "3"))  # resumes the same run: epoch 2 is interrupted
    err = capsys.readouterr().err
    assert code == 130 and "already exists and was left as it was" in err
    assert sha256_file(out) == good


def test_ctrl_c_after_an_epoch_writes_a_new_file_with_those_epochs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "new.safetensors"
    _interrupt(monkeypatch, epoch=2, batch=1)
    assert cli.main(_args(out)) == 130
    assert "wrote their weights" in capsys.readouterr().err
    model = models.load("lenet5", weights=out, num_classes=10, in_channels=1)
    assert isinstance(model, torch.nn.Module)
    assert not list(tmp_path.glob("*.tmp"))  # atomic: no temporary file left


@pytest.mark.parametrize("change", [["--lr", "0.01"], ["--optimizer", "sgd"], ["--seed", "3"], ["--batch-size", "64"]])
def test_a_rerun_with_other_settings_is_refused_with_what_differs(tmp_path, monkeypatch, capsys, change):
    out = tmp_path / "w.safetensors"
    assert cli.main(_args(out, "--epochs", "1")) == 0
    before = sha256_file(out)
    code = cli.main(_args(out, "--epochs", "1", *change))
    err = capsys.readouterr().err
    key = change[0].lstrip("-").replace("-", "_")
    assert code == 2 and "other settings" in err and key in err and "--fresh" in err
    assert sha256_file(out) == before
    assert cli.main(_args(out, "--epochs", "1", *change, "--fresh")) == 0  # the way out works


def test_the_same_settings_resume(tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    assert cli.main(_args(out, "--epochs", "1")) == 0
    assert cli.main(_args(out, "--epochs", "2")) == 0
    assert "after 2 epoch(s)" in capsys.readouterr().out


def test_a_diverging_run_gets_a_message_not_a_traceback(tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    code = cli.main(_args(out, "--optimizer", "sgd", "--lr", "1e6", "--epochs", "1"))
    err = capsys.readouterr().err
    assert code == 2 and "training diverged" in err and "lower the learning rate" in err
    assert not out.exists()
