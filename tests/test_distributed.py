"""N processes through torch.distributed (gloo on CPU): the same results as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from advviz import distributed

ROOT = Path(__file__).resolve().parents[1]


def test_one_process_defaults():
    assert not distributed.active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard([5, 6, 7]) == [5, 6, 7]
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_sum(t) is t
    assert distributed.init() is False  # not launched by torchrun: nothing to join


FIT = textwrap.dedent("""
    import sys, torch
    from safetensors.torch import save_file
    from advviz import data, distributed, models, train
    torch.manual_seed(0)
    model = models.create("lenet5")
    res = train.fit(model, data.load("digits", "train"), epochs=1, lr=1e-3, batch_size=64, optimizer="adam",
                    device="cpu", seed=0, progress=False, checkpoint=sys.argv[2])
    if distributed.is_main():
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, sys.argv[1], metadata={"loss": repr(res.history[-1]["loss"]),
                                                "accuracy": repr(res.history[-1]["accuracy"]),
                                                "world": str(distributed.world_size())})
    distributed.shutdown()
""")


def _run_fit(tmp_path: Path, nproc: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    script = tmp_path / "fit.py"
    script.write_text(FIT)
    out, ckpt = tmp_path / f"w{nproc}.safetensors", tmp_path / f"ckpt{nproc}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(script), str(out), str(ckpt)] if nproc > 1 else [sys.executable, str(script), str(out), str(ckpt)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / f"ckpt{nproc}.json").is_file(), "rank 0 writes the checkpoint"
    with safe_open(str(out), "pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


@pytest.mark.slow
def test_ddp_fit_on_two_processes_matches_one_process_with_the_same_global_batch(tmp_path):
    one, meta1 = _run_fit(tmp_path, 1)
    two, meta2 = _run_fit(tmp_path, 2)
    assert meta2["world"] == "2" and meta1["world"] == "1"
    assert one.keys() == two.keys()
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < 1e-4, worst
    assert float(meta2["loss"]) == pytest.approx(float(meta1["loss"]), rel=1e-4)
    assert float(meta2["accuracy"]) == pytest.approx(float(meta1["accuracy"]), abs=2 / 1437)


def _evaluate(tmp_path: Path, name: str, *extra: str) -> dict:
    import json

    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "advviz", "evaluate", "lenet5_digits", "--data", "digits", "--attacks", "pgd,fgsm",
           "--eps", "0.1,0.2", "--n", "48", "--batch-size", "16", "--seed", "3", "--no-progress", "--json", str(out),
           *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_evaluate_on_two_processes_gives_the_samples_of_one(tmp_path):
    from advviz import models

    models.load("lenet5_digits")  # trained once here, into the session cache the subprocesses share
    one = _evaluate(tmp_path, "one")
    two = _evaluate(tmp_path, "two", "--nproc", "2", "--resume", str(tmp_path / "two.jsonl"))
    assert len(one["samples"]) == 48
    assert sorted(one["samples"], key=lambda s: s["index"]) == sorted(two["samples"], key=lambda s: s["index"])
    assert one["results"] == two["results"]
    assert two["config"]["processes"] == 2 and "processes" not in one["config"]
    # each rank appended its own part of the resume file; a one-process rerun finds all 48 done
    parts = sorted(p.name for p in tmp_path.glob("two.jsonl.rank*"))
    assert parts == ["two.jsonl.rank0", "two.jsonl.rank1"]
    from advviz.evaluate.robust import _read_resume_parts

    config = json.loads((tmp_path / "two.jsonl.rank0").read_text().splitlines()[0])["config"]
    assert len(_read_resume_parts(tmp_path / "two.jsonl", config)) == 48
