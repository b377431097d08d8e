"""A pytest plugin (registered by the root ``conftest.py``) that times each notebook nbval runs.

Every notebook's time is the sum of its cells' setup, call and teardown phases (the kernel's start
and shutdown included); beside it, the CPU seconds its kernel used (read from ``/proc`` after each
cell), which a busy shared machine inflates less than the wall time. At the end of the session it

* prints a table (notebook, cells, seconds, budget, verdict) in the terminal summary;
* writes ``test-output/notebook-durations.json``: ``{"mode", "budget_s", "load_average",
  "notebooks": {path: {"seconds", "cells", "failed", "per_cell": {cell: seconds}, "kernel_cpu_seconds"}},
  "over_budget": [path, ...]}``;
* fails the session (exit status 1) when a notebook took longer than its budget, so a slow
  notebook shows in CI as a failure and not only as a number. The check uses the kernel's CPU
  seconds when known (:func:`charged`), which a busy machine stretches far less than the wall time.

The budget is ``ADVVIZ_NOTEBOOK_BUDGET_S`` seconds when set, else :func:`default_budget`: 180 s
(the class-time target: a notebook's default run within 3 minutes) in both the fast configuration
(``ADVVIZ_FAST=1``, CI) and the default one. ``ADVVIZ_NOTEBOOK_BUDGET_S=0`` records without
checking.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

OUTPUT = Path("test-output") / "notebook-durations.json"
BUDGET_VAR = "ADVVIZ_NOTEBOOK_BUDGET_S"


def fast_mode() -> bool:
    """True when ``ADVVIZ_FAST`` selects the notebooks' fast configuration."""
    return os.environ.get("ADVVIZ_FAST", "") not in ("", "0")


def default_budget() -> float:
    """Seconds a notebook may take: ``$ADVVIZ_NOTEBOOK_BUDGET_S`` or 180 (0 turns the check off)."""
    raw = os.environ.get(BUDGET_VAR, "").strip()
    if not raw:
        return 180.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{BUDGET_VAR} must be a number of seconds (0 turns the check off), got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{BUDGET_VAR} must be >= 0 (0 turns the check off), got {raw!r}")
    return value


def kernel_cpu(item: Any) -> float | None:
    """User + system CPU seconds used so far by the kernel of nbval item ``item`` (Linux ``/proc``;
    ``None`` where unknown)."""
    kernel = getattr(getattr(item, "parent", None), "kernel", None)
    proc = getattr(getattr(getattr(kernel, "km", None), "provisioner", None), "process", None)
    pid = getattr(proc, "pid", None)
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def notebook_of(nodeid: str) -> str | None:
    """``"notebooks/01_x.ipynb"`` for an nbval item's node id, ``None`` for any other test."""
    path = nodeid.split("::", 1)[0]
    return path if path.endswith(".ipynb") else None


def summarise(reports: list[tuple[str, str, float, bool]]) -> dict[str, dict[str, Any]]:
    """Per-notebook totals (and per-cell seconds) from ``(nodeid, phase, seconds, failed)`` reports, in
    first-seen order."""
    out: dict[str, dict[str, Any]] = {}
    for nodeid, phase, seconds, failed in reports:
        nb = notebook_of(nodeid)
        if nb is None:
            continue
        entry = out.setdefault(nb, {"seconds": 0.0, "cells": 0, "failed": False, "per_cell": {}})
        entry["seconds"] += seconds
        entry["cells"] += phase == "call"
        entry["failed"] = entry["failed"] or failed
        cell = nodeid.split("::", 1)[1] if "::" in nodeid else ""
        entry["per_cell"][cell] = entry["per_cell"].get(cell, 0.0) + seconds
    for entry in out.values():
        entry["seconds"] = round(entry["seconds"], 1)
        entry["per_cell"] = {k: round(v, 1) for k, v in entry["per_cell"].items()}
    return out


def charged(entry: dict[str, Any]) -> float:
    """The seconds the budget is checked against: the kernel's CPU seconds when known, else the wall
    time. Load on a shared machine stretches both, the wall time far more: notebook 01's default run
    took 7 s (11 CPU seconds) on a quiet 2-core machine and 276 s (92 CPU seconds) with ten busy
    processes on it. On an idle 2-core CPU the wall time is at most about the CPU time."""
    cpu = entry.get("kernel_cpu_seconds")
    return float(entry["seconds"] if cpu is None else cpu)


def over_budget(summary: dict[str, dict[str, Any]], budget: float) -> list[str]:
    """The notebooks whose :func:`charged` time exceeds ``budget`` seconds (none when ``budget`` is 0)."""
    if budget <= 0:
        return []
    return [nb for nb, e in summary.items() if charged(e) > budget]


def format_table(summary: dict[str, dict[str, Any]], budget: float) -> str:
    """A plain-text table of the notebooks' times against the budget."""
    width = max([len("notebook")] + [len(nb) for nb in summary])
    lines = [f"{'notebook':{width}s} {'cells':>5s} {'seconds':>8s} {'kernel CPU s':>12s}  verdict"]
    for nb, e in summary.items():
        verdict = "failed" if e["failed"] else ("OVER BUDGET" if over_budget({nb: e}, budget) else "ok")
        cpu = e.get("kernel_cpu_seconds")
        lines.append(f"{nb:{width}s} {e['cells']:5d} {e['seconds']:8.1f} {'' if cpu is None else f'{cpu:.1f}':>12s}"
                     f"  {verdict}")
    lines.append(f"budget: {budget:g} s of kernel CPU (else wall) time per notebook" + (" (check off)" if budget <= 0 else "")
                 + f"; configuration: {'fast (ADVVIZ_FAST=1)' if fast_mode() else 'default'}")
    return "\n".join(lines)


class NotebookDurations:
    """The plugin object: collects reports, writes the JSON, prints the table, applies the budget."""

    def __init__(self, rootdir: Path) -> None:
        self.rootdir = Path(rootdir)
        self.reports: list[tuple[str, str, float, bool]] = []
        self.summary: dict[str, dict[str, Any]] = {}
        self.budget = default_budget()
        self.over: list[str] = []
        self.cpu: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        nb = notebook_of(report.nodeid)
        if nb is not None:
            self.reports.append((report.nodeid, report.when, float(report.duration), bool(report.failed)))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: Any) -> Any:
        yield
        nb = notebook_of(item.nodeid)
        if nb is not None:
            cpu = kernel_cpu(item)
            if cpu is not None:
                self.cpu[nb] = max(cpu, self.cpu.get(nb, 0.0))

    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        self.summary = summarise(self.reports)
        if not self.summary:
            return
        for nb, cpu in self.cpu.items():
            if nb in self.summary:
                self.summary[nb]["kernel_cpu_seconds"] = round(cpu, 1)
        self.over = [nb for nb in over_budget(self.summary, self.budget) if not self.summary[nb]["failed"]]
        try:
            load = list(os.getloadavg())
        except OSError:
            load = None
        path = self.rootdir / OUTPUT
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"mode": "fast" if fast_mode() else "default", "budget_s": self.budget,
                                    "load_average": load, "notebooks": self.summary,
                                    "over_budget": self.over}, indent=1) + "\n")
        if self.over and session.exitstatus == 0:
            session.exitstatus = 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.summary:
            return
        terminalreporter.section("notebook durations")
        terminalreporter.write_line(format_table(self.summary, self.budget))
        terminalreporter.write_line(f"written to {OUTPUT}")
        for nb in self.over:
            e = self.summary[nb]
            terminalreporter.write_line(f"FAILED budget: {nb} took {e['seconds']:.0f} s (kernel CPU "
                                        f"{e.get('kernel_cpu_seconds')} s), over the {self.budget:g} s budget "
                                        f"({BUDGET_VAR} changes it)", red=True)
