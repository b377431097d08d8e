"""The notebook-duration plugin: per-notebook totals, the budget check, the table and the JSON."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests import notebook_durations as nd

REPORTS = [
    ("notebooks/01_a.ipynb::Cell 0", "setup", 2.0, False),
    ("notebooks/01_a.ipynb::Cell 0", "call", 10.0, False),
    ("notebooks/01_a.ipynb::Cell 0", "teardown", 0.0, False),
    ("notebooks/01_a.ipynb::Cell 1", "call", 5.5, False),
    ("notebooks/01_a.ipynb::Cell 1", "teardown", 1.0, False),
    ("tests/test_x.py::test_y", "call", 100.0, False),
    ("notebooks/02_b.ipynb::Cell 0", "call", 200.0, False),
    ("notebooks/03_c.ipynb::Cell 0", "call", 300.0, True),
]


def test_summarise_sums_the_phases_of_each_notebook_and_ignores_other_tests():
    s = nd.summarise(REPORTS)
    assert list(s) == ["notebooks/01_a.ipynb", "notebooks/02_b.ipynb", "notebooks/03_c.ipynb"]
    assert s["notebooks/01_a.ipynb"] == {"seconds": 18.5, "cells": 2, "failed": False,
                                         "per_cell": {"Cell 0": 12.0, "Cell 1": 6.5}}
    assert s["notebooks/03_c.ipynb"]["failed"] is True


def test_budget_picks_the_slow_notebooks_and_zero_turns_it_off():
    s = nd.summarise(REPORTS)
    assert nd.over_budget(s, 180) == ["notebooks/02_b.ipynb", "notebooks/03_c.ipynb"]
    assert nd.over_budget(s, 250) == ["notebooks/03_c.ipynb"]
    assert nd.over_budget(s, 0) == []
    table = nd.format_table(s, 180)
    assert "01_a.ipynb     2     18.5" in table and table.splitlines()[1].endswith("  ok")
    assert "OVER BUDGET" in table.splitlines()[2] and "failed" in table.splitlines()[3]


def test_budget_charges_the_kernel_cpu_time_when_known():
    s = {"busy.ipynb": {"seconds": 400.0, "kernel_cpu_seconds": 90.0, "cells": 1, "failed": False},
         "slow.ipynb": {"seconds": 200.0, "kernel_cpu_seconds": 190.0, "cells": 1, "failed": False},
         "unknown.ipynb": {"seconds": 200.0, "cells": 1, "failed": False}}
    assert nd.over_budget(s, 180) == ["slow.ipynb", "unknown.ipynb"]


def test_budget_from_the_environment(monkeypatch):
    monkeypatch.delenv(nd.BUDGET_VAR, raising=False)
    assert nd.default_budget() == 180
    monkeypatch.setenv(nd.BUDGET_VAR, "240")
    assert nd.default_budget() == 240
    monkeypatch.setenv(nd.BUDGET_VAR, "three minutes")
    with pytest.raises(ValueError, match="number of seconds"):
        nd.default_budget()


def test_plugin_writes_the_json_and_fails_the_session_over_budget(tmp_path, monkeypatch):
    monkeypatch.setenv(nd.BUDGET_VAR, "180")
    plugin = nd.NotebookDurations(tmp_path)
    for nodeid, when, seconds, failed in REPORTS:
        plugin.pytest_runtest_logreport(SimpleNamespace(nodeid=nodeid, when=when, duration=seconds, failed=failed))
    session = SimpleNamespace(exitstatus=0)
    plugin.pytest_sessionfinish(session, 0)
    data = json.loads((tmp_path / nd.OUTPUT).read_text())
    assert data["budget_s"] == 180 and data["notebooks"]["notebooks/02_b.ipynb"]["seconds"] == 200.0
    assert data["over_budget"] == ["notebooks/02_b.ipynb"]   # 03 failed anyway: not counted twice
    assert session.exitstatus == 1
    lines = []
    plugin.pytest_terminal_summary(SimpleNamespace(section=lambda *a, **k: None,
                                                   write_line=lambda s, **k: lines.append(s)))
    assert any("FAILED budget: notebooks/02_b.ipynb took 200 s (kernel CPU None s)" in s for s in lines)


def test_kernel_cpu_reads_the_kernel_process(tmp_path):
    import os
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; t = time.process_time()\n"
                             "while time.process_time() - t < 0.5: pass\ntime.sleep(30)"])
    try:
        item = SimpleNamespace(parent=SimpleNamespace(kernel=SimpleNamespace(
            km=SimpleNamespace(provisioner=SimpleNamespace(process=proc)))))
        cpu = None
        for _ in range(100):
            cpu = nd.kernel_cpu(item)
            if cpu is None or cpu >= 0.5:
                break
            __import__("time").sleep(0.1)
        if not os.path.exists(f"/proc/{proc.pid}/stat"):
            pytest.skip("no /proc on this system")
        assert cpu is not None and 0.5 <= cpu < 5
    finally:
        proc.kill()
        proc.wait()
    assert nd.kernel_cpu(SimpleNamespace(parent=None)) is None


def test_no_notebooks_no_file(tmp_path):
    plugin = nd.NotebookDurations(tmp_path)
    plugin.pytest_runtest_logreport(SimpleNamespace(nodeid="tests/t.py::t", when="call", duration=1.0, failed=False))
    session = SimpleNamespace(exitstatus=0)
    plugin.pytest_sessionfinish(session, 0)
    assert not (tmp_path / nd.OUTPUT).exists() and session.exitstatus == 0
