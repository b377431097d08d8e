"""The advviz command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from advviz import cli


def test_parser_knows_every_subcommand():
    p = cli.build_parser()
    for argv in (["demo"], ["train", "lenet5", "--out", "x.safetensors"], ["explore", "--no-browser"],
                 ["reproduce", "cfr", "--quick", "--json", "o.json"], ["bench", "attacks", "--quick"]):
        assert p.parse_args(argv).command == argv[0]
    with pytest.raises(SystemExit):
        p.parse_args(["reproduce", "nonexistent-paper"])


def test_train_subcommand_saves_loadable_weights(tmp_path):
    out = tmp_path / "lenet.safetensors"
    code = subprocess.run([sys.executable, "-m", "advviz.cli", "train", "lenet5", "--data", "digits", "--epochs", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stderr
    assert "saved" in code.stdout and out.is_file()
    from advviz import models

    m = models.load("lenet5", weights=out)
    assert not m.training


def test_errors_are_one_line_not_tracebacks(tmp_path):
    code = subprocess.run([sys.executable, "-m", "advviz.cli", "train", "lenet5", "--data", "cifar10",
                           "--out", str(tmp_path / "x.safetensors")], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "ADVVIZ_DATA": str(tmp_path)})
    assert code.returncode == 2
    assert code.stderr.startswith("advviz: error:") and "Traceback" not in code.stderr


@pytest.mark.slow
def test_demo_runs_and_reports():
    from advviz.demo import demo_result

    r = demo_result(progress=False)
    assert r["clean_accuracy"] >= 0.95
    assert r["pgd_asr"] >= r["fgsm_asr"] - 1e-9  # PGD-10 is at least as strong as FGSM at the same eps
    assert r["pgd_asr"] > 0.5
