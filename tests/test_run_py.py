"""``run.py`` behaves like the program it wraps: signals reach the child, the child's status comes back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A driver that runs run.py's `call` on a command given as argv: the same code path as
# `python3 run.py advviz ...`, without run.py's virtual-environment set-up.
DRIVER = textwrap.dedent(f"""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("advviz_run", {str(ROOT / "run.py")!r})
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    sys.exit(run.call(sys.argv[1:]))
""")

CHILD = textwrap.dedent("""
    import signal, sys, time
    out = sys.argv[1]
    def handler(signum, frame):
        open(out, "a").write(f"got {signal.Signals(signum).name}\\n")
        sys.exit(7)
    if sys.argv[2] == "handle":
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
    open(out, "a").write("ready\\n")
    time.sleep(60)
""")


def _start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "child.log"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, sys.executable, "-c", CHILD, str(out), mode],
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (out.is_file() and "ready" in out.read_text()):
        assert proc.poll() is None, "the driver exited early"
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    return proc, out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_reaches_child_and_its_status_comes_back(tmp_path: Path, sig: signal.Signals) -> None:
    proc, out = _start(tmp_path, "handle")
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 7
    assert out.read_text().splitlines() == ["ready", f"got {sig.name}"]


def test_child_killed_by_signal_kills_wrapper_the_same_way(tmp_path: Path) -> None:
    proc, _ = _start(tmp_path, "default")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM


def test_exit_status_is_the_childs(tmp_path: Path) -> None:
    code = subprocess.call([sys.executable, "-c", DRIVER, sys.executable, "-c", "import sys; sys.exit(3)"])
    assert code == 3


def _explore(tmp_path: Path, *, stdout: int) -> subprocess.Popen:
    """``advviz explore --no-browser`` behind run.py's driver, in its own session, Jupyter's folders in ``tmp_path``."""
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
           "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", DRIVER, sys.executable, "-m", "advviz.cli", "explore", "--no-browser"]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=tmp_path, start_new_session=True)


def _terminate_and_check(proc: subprocess.Popen, family: list, psutil) -> None:
    """``kill -TERM`` the driver; it ends within 60 s and none of ``family`` (its processes) outlives it by 30 s."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, f"still running after SIGTERM: {[p.cmdline() for p in alive]}"


@pytest.mark.slow
def test_sigterm_takes_down_explore_jupyterlab_and_kernels(tmp_path: Path) -> None:
    """``kill -TERM`` on the wrapper of ``advviz explore`` leaves no JupyterLab process behind."""
    psutil = pytest.importorskip("psutil")
    proc = _explore(tmp_path, stdout=subprocess.PIPE)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any(re.search(r"http://127\.0\.0\.1:\d+", ln) for ln in lines):
            assert time.monotonic() < deadline, f"no URL reported: {lines}"
            line = proc.stdout.readline()
            assert line or proc.poll() is None, f"explore exited early: {lines}"
            lines.append(line)
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("jupyter" in " ".join(p.cmdline()) for p in family), [p.cmdline() for p in family]
        _terminate_and_check(proc, family, psutil)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _run_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("advviz_run_docs", ROOT / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    return run


@pytest.mark.parametrize(("args", "mode", "rest"), [
    ([], "cache", []),
    (["--no-exec", "-W", "--keep-going"], "off", ["-W", "--keep-going"]),
    (["--force"], "force", []),
])
def test_docs_builds_site_with_the_chosen_execution(monkeypatch: pytest.MonkeyPatch, args: list[str], mode: str,
                                                     rest: list[str]) -> None:
    run = _run_module()
    seen = {}
    monkeypatch.setattr(run, "call", lambda cmd, **kw: seen.update(cmd=cmd, **kw) or 0)
    for var in ("ADVVIZ_DOCS_EXECUTE", "ADVVIZ_FAST", "ADVVIZ_DATA"):
        monkeypatch.delenv(var, raising=False)
    assert run.docs(args) == 0
    cmd, env = seen["cmd"], seen["env"]
    assert cmd[1:5] == ["-m", "sphinx", "-b", "html"]
    assert cmd[-2 - len(rest):len(cmd) - len(rest)] == [str(ROOT / "docs"), str(ROOT / "site")]
    assert cmd[len(cmd) - len(rest):] == rest
    assert env["ADVVIZ_DOCS_EXECUTE"] == mode and env["ADVVIZ_FAST"] == "1"
    assert str(ROOT) in env["PYTHONPATH"].split(os.pathsep)
    shared = ROOT.parent / "shared" / "data"
    assert env.get("ADVVIZ_DATA") == (str(shared) if shared.is_dir() else None)


def test_docs_exec_only_executes_the_named_notebooks(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run_module()
    seen = {}
    monkeypatch.setattr(run, "call", lambda cmd, **kw: seen.update(cmd=cmd, **kw) or 0)
    monkeypatch.delenv("ADVVIZ_DOCS_EXECUTE", raising=False)
    assert run.docs(["--exec-only", "00_explorer", "-W"]) == 0
    assert seen["env"]["ADVVIZ_DOCS_EXECUTE_ONLY"] == "00_explorer" and seen["env"]["ADVVIZ_DOCS_EXECUTE"] == "cache"
    assert seen["cmd"][-1] == "-W" and "00_explorer" not in seen["cmd"]
    assert run.docs(["--no-exec", "--exec-only", "00_explorer"]) == 0   # executing one notebook wins over --no-exec
    assert seen["env"]["ADVVIZ_DOCS_EXECUTE"] == "cache"
    assert run.docs(["--exec-only"]) == 2


def test_widgets_js_pins_are_the_ipywidgets_8_html_manager() -> None:
    import json

    import ipywidgets

    pins = json.loads((ROOT / "docs" / "widgets-js.json").read_text())
    assert ipywidgets.__version__.startswith("8.")        # html-manager 1.x draws ipywidgets 8 state
    assert pins["@jupyter-widgets/html-manager"]["version"].startswith("1.")
    assert pins["@jupyter-widgets/html-manager"]["file"] == "dist/embed-amd.js"
    assert pins["requirejs"]["file"] == "require.js"


@pytest.mark.slow
def test_sigterm_while_the_server_starts_leaves_no_jupyterlab(tmp_path: Path) -> None:
    """Bug: ``kill -TERM`` before the explorer had installed its handler (while JupyterLab started, or
    right after the URL was printed) ended the wrapper by default and left JupyterLab running."""
    psutil = pytest.importorskip("psutil")
    proc = _explore(tmp_path, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        family: list = []
        while not any("jupyter" in " ".join(p.cmdline()) for p in family):  # JupyterLab launched, not yet answering
            assert proc.poll() is None and time.monotonic() < deadline, "JupyterLab never started"
            try:
                family = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                family = []
            time.sleep(0.05)
        _terminate_and_check(proc, family, psutil)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
