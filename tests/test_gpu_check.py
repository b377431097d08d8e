"""The prepared GPU check: refuses clearly without CUDA; its steps and its agreement figure."""

from __future__ import annotations

import pytest
import torch

from advviz.benchmarks import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the refusal on a machine without CUDA")
def test_refuses_without_cuda(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "g.json")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


def test_steps_cover_tests_benchmarks_and_torchrun_on_every_gpu(tmp_path):
    steps = gpu_check.steps(4, tmp_path, n_eval=64)
    names = [s["name"] for s in steps]
    assert names[0] == "tests (cuda)" and "--device" in steps[0]["cmd"] and "cuda" in steps[0]["cmd"]
    assert "bench attacks (cuda)" in names
    torchrun = [s for s in steps if "torch.distributed.run" in s["cmd"]]
    assert len(torchrun) == 2 and all("--nproc_per_node=4" in s["cmd"] for s in torchrun)
    assert sum(s["timeout"] for s in steps) <= 8 * 60


def test_agreement_counts_identical_per_sample_results():
    one = {"name": "evaluate, 1 process", "seconds": 4.0,
           "figures": {"samples": [{"index": i, "robust": {"0.0314": i % 2 == 0}} for i in range(4)]}}
    many = {"name": "evaluate, torchrun x2", "seconds": 2.5,
            "figures": {"samples": [{"index": i, "robust": {"0.0314": i in (0, 2, 3)}} for i in (3, 2, 1, 0)]}}
    got = gpu_check._agreement([one, many])
    assert got == {"samples": 4, "identical": 3, "share": 0.75, "seconds_1": 4.0, "seconds_n": 2.5}
    assert gpu_check._agreement([one]) is None


def test_run_step_records_status_summary_and_figures(tmp_path):
    out = tmp_path / "f.json"
    step = {"name": "demo", "timeout": 30, "json": out,
            "cmd": ["python3", "-c", f"import json; json.dump([1, 2], open({str(out)!r}, 'w')); print('3 passed, 1 skipped')"]}
    rec = gpu_check.run_step(step, {"PATH": "/usr/bin:/bin"})
    assert rec["status"] == 0 and rec["figures"] == [1, 2] and rec["summary"] == "3 passed, 1 skipped"
    slow = gpu_check.run_step({"name": "slow", "timeout": 1, "cmd": ["python3", "-c", "import time; time.sleep(5)"]},
                              {"PATH": "/usr/bin:/bin"})
    assert slow["status"] == 124
