"""``python3 run.py gpu-check``: the prepared check for a machine with CUDA GPUs (under 8 minutes).

It runs, each step as a subprocess with its own time limit, and writes one JSON of the figures:

1. the device-parametrised tests on CUDA (``pytest tests --device cuda -m "not slow and not e2e"``);
2. ``advviz bench attacks --device cuda --quick`` (advviz beside torchattacks, ratios);
3. ``advviz bench autoattack --device cuda --quick`` when that benchmark exists;
4. a ``torchrun`` evaluation on every visible GPU (``advviz evaluate resnet20_cifar10 --attacks
   pgd --eps 1/255``, where about 5% of ResNet-20 points stay robust) and the same evaluation on one process, with the share of per-sample
   results that agree (it must be 1) and both throughputs;
5. a one-epoch DDP ``advviz train`` of LeNet-5 on the digits, on every visible GPU.

The JSON (``gpu-check.json`` in the current folder, or ``--out``) records the GPU model, the
torch and CUDA versions, and per step: the command, exit status, seconds and its figures (the
benchmarks' rows; the tests' summary line). A step that fails does not stop the others; the
exit status is 1 when any failed. Without CUDA the check refuses at once and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from advviz.cli import BENCHES

__all__ = ["steps", "run_step", "main"]

PY = sys.executable


def steps(n_gpus: int, work: Path, *, n_eval: int = 512) -> list[dict[str, Any]]:
    """The check's steps: ``{"name", "cmd", "timeout", "json"?}`` (``json``: a file the step writes)."""
    evaluate = ["-m", "advviz", "evaluate", "resnet20_cifar10", "--data", "cifar10", "--attacks", "pgd",
                "--eps", "1/255", "--num-images", str(n_eval)]
    out: list[dict[str, Any]] = [
        {"name": "tests (cuda)", "timeout": 150,
         "cmd": [PY, "-m", "pytest", "tests", "--device", "cuda", "-m", "not slow and not e2e", "-q", "-x",
                 "-p", "no:cacheprovider"]},
        {"name": "bench attacks (cuda)", "timeout": 90, "json": work / "bench_attacks.json",
         "cmd": [PY, "-m", "advviz", "bench", "attacks", "--device", "cuda", "--quick", "--json",
                 str(work / "bench_attacks.json")]},
    ]
    if "autoattack" in BENCHES:
        out.append({"name": "bench autoattack (cuda)", "timeout": 90, "json": work / "bench_autoattack.json",
                    "cmd": [PY, "-m", "advviz", "bench", "autoattack", "--device", "cuda", "--quick", "--json",
                            str(work / "bench_autoattack.json")]})
    out += [
        {"name": "evaluate, 1 process", "timeout": 45, "json": work / "eval1.json",
         "cmd": [PY, *evaluate, "--json", str(work / "eval1.json")]},
        {"name": f"evaluate, torchrun x{n_gpus}", "timeout": 60, "json": work / "evalN.json",
         "cmd": [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_gpus}", *evaluate,
                 "--json", str(work / "evalN.json")]},
        {"name": f"train lenet5 digits, torchrun x{n_gpus}", "timeout": 45,
         "cmd": [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_gpus}", "-m", "advviz",
                 "train", "lenet5", "--data", "digits", "--epochs", "1", "--out", str(work / "lenet.safetensors")]},
    ]
    return out


def run_step(step: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Run one step; return its record (command, status, seconds, output tail, figures)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(step["cmd"], env=env, capture_output=True, text=True, timeout=step["timeout"])
        status, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        status = 124
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    record: dict[str, Any] = {"name": step["name"], "cmd": " ".join(str(c) for c in step["cmd"]), "status": status,
                              "seconds": round(time.perf_counter() - t0, 2), "tail": output[-2000:]}
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?)\s*=*$", output, flags=re.M)
    if summary:
        record["summary"] = summary[-1]
    path = step.get("json")
    if path is not None and Path(path).is_file():
        record["figures"] = json.loads(Path(path).read_text())
    return record


def _agreement(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    one = next((r for r in records if r["name"] == "evaluate, 1 process" and "figures" in r), None)
    many = next((r for r in records if r["name"].startswith("evaluate, torchrun") and "figures" in r), None)
    if one is None or many is None:
        return None
    a = {s["index"]: s["robust"] for s in one["figures"].get("samples", [])}
    b = {s["index"]: s["robust"] for s in many["figures"].get("samples", [])}
    same = sum(a[i] == b.get(i) for i in a)
    return {"samples": len(a), "identical": same, "share": same / max(len(a), 1),
            "seconds_1": one["seconds"], "seconds_n": many["seconds"]}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the GPU check; write the JSON; return 0 when every step passed."""
    p = argparse.ArgumentParser(prog="run.py gpu-check", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gpu-check.json", help="where to write the figures (default gpu-check.json)")
    p.add_argument("--n", type=int, default=512, help="images of the evaluation steps (default 512)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.stderr.write("gpu-check needs a CUDA GPU and this machine has none (torch.cuda.is_available() is "
                         "False); run it on a GPU machine, see DEVELOPERS.md\n")
        return 2
    n_gpus = torch.cuda.device_count()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    report: dict[str, Any] = {"gpu": [torch.cuda.get_device_name(i) for i in range(n_gpus)], "torch": torch.__version__,
                              "cuda": torch.version.cuda, "steps": []}
    with tempfile.TemporaryDirectory(prefix="advviz-gpu-check-") as tmp:
        for step in steps(n_gpus, Path(tmp), n_eval=args.n):
            sys.stderr.write(f"[gpu-check] {step['name']} ...\n")
            record = run_step(step, env)
            sys.stderr.write(f"[gpu-check] {step['name']}: status {record['status']} in {record['seconds']} s\n")
            report["steps"].append(record)
            Path(args.out).write_text(json.dumps(report, indent=1))
    report["evaluate_agreement"] = _agreement(report["steps"])
    Path(args.out).write_text(json.dumps(report, indent=1))
    sys.stderr.write(f"[gpu-check] figures written to {args.out}\n")
    return int(any(r["status"] != 0 for r in report["steps"]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
