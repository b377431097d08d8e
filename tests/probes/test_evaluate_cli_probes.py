"""Probes of issue 24 on ``advviz evaluate`` and ``robust_accuracy``'s inputs and files (items 3, 6,
19, 20, 21).

Each case once gave a silent wrong answer, a traceback or a message from deep inside Python; it must
now give one clear message, before any work, that says what is wrong and what to do. Kept forever.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from advviz import evaluate as E
from advviz import models
from advviz.cli import main

CLI = ["evaluate", "lenet5_digits", "--data", "digits", "--attacks", "fgsm", "--n", "4", "--no-progress",
       "--no-steps-check"]
KW = dict(attacks=["fgsm"], eps=[0.1], n=4, batch_size=2, seed=0, progress=False, steps_check=False)


class Counting(nn.Module):
    """The model, counting its forward passes (work done)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


@pytest.fixture
def no_work(monkeypatch):
    """``advviz evaluate`` must refuse before loading anything."""
    def load(*args, **kwargs):
        raise AssertionError("work started: the model was loaded before the options were checked")

    monkeypatch.setattr(models, "load", load)


def _run(capsys, *extra: str) -> tuple[int, str]:
    try:
        rc = main([*CLI, *extra])
    except SystemExit as exc:  # argparse's own refusals exit 2
        rc = exc.code
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------------------------------ item 6

@pytest.mark.parametrize("size", ["-4", "0"])
def test_batch_size_must_be_positive(capsys, no_work, size):
    rc, err = _run(capsys, "--batch-size", size)
    assert rc == 2 and "--batch-size" in err and "at least 1" in err and size in err


@pytest.mark.parametrize("size", [-4, 0])
def test_robust_accuracy_refuses_a_non_positive_batch_size(lenet_digits, digits_test, size):
    with pytest.raises(ValueError, match=rf"batch_size must be a positive integer.*got {size}"):
        E.robust_accuracy(lenet_digits, digits_test, **{**KW, "batch_size": size})


# ------------------------------------------------------------------------------------------ item 19

@pytest.mark.parametrize("args", [["--eps", "-1/255"], ["--eps=-1/255"], ["--eps", "2/255,-1/255"]])
def test_negative_budget_refused_clearly(capsys, no_work, args):
    rc, err = _run(capsys, *args)
    assert rc == 2 and err.startswith("advviz: error: --eps") and "-1/255" in err and ">= 0" in err
    assert "expected one argument" not in err


def test_robust_accuracy_refuses_a_negative_budget_before_work(lenet_digits, digits_test, tmp_path):
    model = Counting(lenet_digits)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        E.robust_accuracy(model, digits_test, resume=tmp_path / "r.jsonl", **{**KW, "eps": ["-1/255"]})
    assert model.calls == 0 and not (tmp_path / "r.jsonl").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_gpu_is_one_message(capsys, no_work):
    rc, err = _run(capsys, "--device", "cuda")
    assert rc == 2 and "no CUDA GPU" in err and "--device cpu" in err and "Traceback" not in err
    rc, err = _run(capsys, "--device", "gpu")
    assert rc == 2 and "not a device" in err


# ------------------------------------------------------------------------------------------ item 20

def test_resume_file_of_random_bytes(tmp_path, lenet_digits, digits_test):
    path = tmp_path / "junk.jsonl"
    path.write_bytes(bytes(range(128, 256)) * 3)
    with pytest.raises(E.ResumeMismatchError, match="not an advviz evaluation resume file.*delete it"):
        E.robust_accuracy(lenet_digits, digits_test, resume=path, **KW)


def test_resume_file_with_damaged_records(tmp_path, lenet_digits, digits_test):
    path = tmp_path / "run.jsonl"
    E.robust_accuracy(lenet_digits, digits_test, resume=path, **KW)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[2])
    del rec["clean"]
    path.write_text("\n".join([lines[0], lines[1], json.dumps(rec), *lines[3:]]) + "\n")
    with pytest.raises(E.ResumeMismatchError, match=r"run.jsonl, line 3: .*no 'clean'.*delete it"):
        E.robust_accuracy(lenet_digits, digits_test, resume=path, **KW)


def test_cli_resume_file_with_damaged_records(capsys, tmp_path):
    path = tmp_path / "run.jsonl"
    assert main([*CLI, "--resume", str(path)]) == 0
    head, first, *rest = path.read_text().splitlines()
    rec = json.loads(first)
    rec["robust"] = {}
    path.write_text("\n".join([head, json.dumps(rec), *rest]) + "\n")
    capsys.readouterr()
    rc, err = _run(capsys, "--resume", str(path))
    assert rc == 2 and str(path) in err and "line 2" in err and "no results at eps" in err


def test_a_record_cut_by_a_kill_does_not_swallow_the_next(tmp_path, lenet_digits, digits_test):
    path = tmp_path / "run.jsonl"
    full = E.robust_accuracy(lenet_digits, digits_test, resume=path, **KW)
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 20])  # the last record cut mid-line
    again = E.robust_accuracy(lenet_digits, digits_test, resume=path, **KW)  # redoes the cut batch
    assert again.samples == full.samples
    model = Counting(lenet_digits)
    assert E.robust_accuracy(model, digits_test, resume=path, **KW).samples == full.samples
    assert model.calls == 0  # every record was read back: the redone one did not land on the cut line


# ------------------------------------------------------------------------------------------ item 21

@pytest.mark.parametrize("option", ["--json", "--plot", "--resume"])
def test_unwritable_output_refused_before_work(capsys, tmp_path, no_work, option):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    target = tmp_path / "file.txt" / "out"  # fails for root too
    rc, err = _run(capsys, option, str(target))
    assert rc == 2 and option in err and "is a file, not a folder" in err and "Traceback" not in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("option", ["--json", "--resume"])
def test_read_only_folder_refused_before_work(capsys, tmp_path, no_work, option):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        rc, err = _run(capsys, option, str(folder / "out"))
    finally:
        folder.chmod(0o700)
    assert rc == 2 and "cannot write" in err and str(folder) in err


def test_robust_accuracy_refuses_an_unwritable_resume_path_before_work(tmp_path, lenet_digits, digits_test):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    model = Counting(lenet_digits)
    with pytest.raises(ValueError, match="cannot write the resume file .*file.txt"):
        E.robust_accuracy(model, digits_test, resume=tmp_path / "file.txt" / "r.jsonl", **KW)
    assert model.calls == 0


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only files")
def test_read_only_partial_resume_file_refused_before_a_batch(tmp_path, lenet_digits, digits_test):
    path = tmp_path / "run.jsonl"
    E.robust_accuracy(lenet_digits, digits_test, resume=path, **KW)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n")  # one point done, three to go
    path.chmod(0o444)
    model = Counting(lenet_digits)
    with pytest.raises(ValueError, match="cannot write the resume file"):
        E.robust_accuracy(model, digits_test, resume=path, **KW)
    assert model.calls == 0


# ------------------------------------------------------------------------------------------ item 3

def test_resume_file_of_other_weights_refused(tmp_path, lenet_digits, digits_test):
    path = tmp_path / "run.jsonl"
    trained = E.robust_accuracy(lenet_digits, digits_test, resume=path, **KW)
    other = models.create("lenet5").eval()  # untrained: the same architecture, other weights
    with pytest.raises(E.ResumeMismatchError, match=r"differs in: weights: the model's weights \(sha256"):
        E.robust_accuracy(other, digits_test, resume=path, **KW)
    truth = E.robust_accuracy(other, digits_test, **KW)
    assert truth.clean_accuracy < trained.clean_accuracy  # what reusing the file would have hidden
    wrapped = Counting(lenet_digits)  # the same weights inside a wrapper: the same identity, resumed
    assert E.robust_accuracy(wrapped, digits_test, resume=path, **KW).samples == trained.samples
    assert wrapped.calls == 0


def test_cli_resume_records_every_artefact_and_refuses_another(capsys, tmp_path):
    path = tmp_path / "run.jsonl"
    assert main([*CLI, "--resume", str(path)]) == 0
    head = json.loads(path.read_text().splitlines()[0])
    sha = head["config"]["meta"]["artifacts"]["lenet5_digits"]
    assert len(sha) == 64 and len(head["config"]["weights"]["model"]) == 64
    head["config"]["meta"]["artifacts"]["lenet5_digits"] = "0" * 64  # as if written with other weight files
    rest = path.read_text().splitlines()[1:]
    path.write_text("\n".join([json.dumps(head), *rest]) + "\n")
    capsys.readouterr()
    rc, err = _run(capsys, "--resume", str(path))
    assert rc == 2 and "artefact lenet5_digits (sha256 000000000000... in the file, " + sha[:12] in err
