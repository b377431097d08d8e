#!/usr/bin/env python3
"""Self-setting-up entry point: ``python3 run.py explore | demo | test | advviz ...``.

The first call creates a virtual environment (``.venv`` beside this file, or
``$ADVVIZ_VENV``) and installs advviz with its development extra into it; later calls reuse
it, and reinstall only when ``pyproject.toml`` changes. Needs nothing but Python 3.11+.

* ``python3 run.py explore``  open the explorer notebook in JupyterLab (the main job)
* ``python3 run.py demo``     train LeNet-5 on the offline digits, attack it, print a summary
* ``python3 run.py test``     run the whole test suite (extra arguments go to pytest); the
  notebooks run their fast configuration (``ADVVIZ_FAST=1``) unless ``ADVVIZ_FAST`` is set
* ``python3 run.py advviz ARGS``  any ``advviz`` subcommand inside the environment
* ``python3 run.py docs [--no-exec] [--force] [SPHINX ARGS]``  build the documentation site into
  ``site/`` (open ``site/index.html``): README, walkthrough notebooks executed with
  ``ADVVIZ_FAST=1`` (results cached in ``build/jupyter_cache``; ``--force`` runs them all again,
  ``--no-exec`` renders them as stored), API reference; extra arguments go to sphinx-build
  (``-W --keep-going`` fails on warnings, as CI does)
  ``--exec-only NAME[,NAME]`` executes only those notebooks (CI: ``00_explorer``, so that its page
  shows the explorer's widgets); ``--widgets-js`` first fetches the widgets' HTML manager (below)
* ``python3 run.py widgets-js``  fetch the ipywidgets HTML manager pinned in ``docs/widgets-js.json``
  into ``docs/_static/widgets/`` with npm, so that the site draws widgets offline
* ``python3 run.py gpu-check``  the prepared check for a CUDA machine (tests on CUDA, benchmarks,
  torchrun on every GPU; one JSON of figures, under 8 minutes)

It behaves like the program it wraps: SIGTERM (and a SIGINT sent to it alone) is passed on to
the child, and it exits with the child's status (killed by a signal: by the same signal).

Note on pip: a ``find-links`` folder that holds a CPU-only torch build (as some machines
configure) makes pip pick a torch that the registry's torchvision cannot load
("operator torchvision::nms does not exist"). The install therefore points ``PIP_FIND_LINKS``
at an empty folder, which overrides any configured find-links and changes nothing else.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("ADVVIZ_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".advviz-install-stamp"

# What `test` runs: the unit tests, then every notebook through nbval.
TEST_ARGS = ["-m", "pytest", "tests", "notebooks", "--nbval-lax", "-p", "no:cacheprovider"]


def _stamp() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def _log(msg: str) -> None:
    sys.stderr.write(f"[run.py] {msg}\n")
    sys.stderr.flush()


def ensure_env() -> None:
    """Create the virtual environment and install advviz[dev] when missing or outdated."""
    if sys.version_info < (3, 11):
        sys.exit(f"advviz needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if PY.exists() and STAMP.exists() and STAMP.read_text().strip() == _stamp():
        return
    if not PY.exists():
        _log(f"creating virtual environment in {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    empty = VENV / ".no-find-links"
    empty.mkdir(exist_ok=True)
    env = dict(os.environ, PIP_FIND_LINKS=str(empty), PIP_DISABLE_PIP_VERSION_CHECK="1")
    _log("installing advviz and its dependencies (first run: a few minutes)")
    subprocess.run([str(PY), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"], check=True, env=env, cwd=ROOT)
    STAMP.write_text(_stamp())


def _terminal_sent_it() -> bool:
    """True when we are the foreground process group of a terminal: a Ctrl-C there reaches our
    child (same process group) directly, so passing SIGINT on would deliver it twice."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def call(cmd: list[str], **kwargs: object) -> int:
    """Run ``cmd`` as a child, passing SIGINT and SIGTERM on to it, and return its status.

    A child killed by a signal is reported the way a shell would see it: this process then
    ends by the same signal (so ``$?`` is 128 + N either way).
    """
    proc = subprocess.Popen(cmd, **kwargs)  # type: ignore[call-overload]

    def forward(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and _terminal_sent_it():
            return
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code < 0 and -code in (signal.SIGINT, signal.SIGTERM):
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def widgets_js() -> int:
    """Fetch the ipywidgets HTML manager pinned in docs/widgets-js.json into docs/_static/widgets/ (npm).

    The documentation site then draws the explorer's saved widgets from local files (offline too,
    and in the browser check ``tests/e2e/test_docs_widgets.py``); without them it uses jsDelivr.
    """
    import json
    import shutil
    import tarfile
    import tempfile

    pins = {k: v for k, v in json.loads((ROOT / "docs" / "widgets-js.json").read_text()).items()
            if not k.startswith("_")}
    out = ROOT / "docs" / "_static" / "widgets"
    if all((out / Path(v["file"]).name).is_file() for v in pins.values()):
        _log(f"ipywidgets HTML manager already in {out}")
        return 0
    npm = shutil.which("npm")
    if npm is None:
        _log("npm not found: install Node.js (apt-get install -y npm) or let the site load the files from jsDelivr")
        return 1
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, pin in pins.items():
            code = call([npm, "pack", "--silent", f"{name}@{pin['version']}"], cwd=tmp, stdout=subprocess.DEVNULL)
            if code:
                _log(f"npm pack {name}@{pin['version']} failed ({code})")
                return code
        for tgz in Path(tmp).glob("*.tgz"):
            with tarfile.open(tgz) as tar:
                if hasattr(tarfile, "data_filter"):   # Python 3.11.4+: refuse links and paths outside
                    tar.extractall(Path(tmp) / tgz.stem, filter="data")
                else:
                    tar.extractall(Path(tmp) / tgz.stem)
        for name, pin in pins.items():
            src = next(Path(tmp).glob(f"*/package/{pin['file']}"), None)
            if src is None:
                _log(f"{pin['file']} not found in {name}@{pin['version']}")
                return 1
            shutil.copyfile(src, out / src.name)
    _log(f"ipywidgets HTML manager written to {out}")
    return 0


def docs(args: list[str]) -> int:
    """Build the documentation site into ``site/`` with sphinx-build (see the module docstring)."""
    mode = os.environ.get("ADVVIZ_DOCS_EXECUTE", "cache")
    if "--no-exec" in args:
        mode = "off"
    if "--force" in args:
        mode = "force"
    extra: dict[str, str] = {}
    if "--exec-only" in args:      # --exec-only NAME[,NAME]: execute those notebooks, render the others as stored
        i = args.index("--exec-only")
        if i + 1 >= len(args):
            _log("--exec-only needs notebook names, e.g. --exec-only 00_explorer")
            return 2
        extra["ADVVIZ_DOCS_EXECUTE_ONLY"] = args[i + 1]
        args = args[:i] + args[i + 2:]
        if mode == "off":
            mode = "cache"
    if "--widgets-js" in args and widgets_js() != 0:
        return 1
    args = [a for a in args if a not in ("--no-exec", "--force", "--widgets-js")]
    env = {**os.environ, **extra, "ADVVIZ_DOCS_EXECUTE": mode, "ADVVIZ_FAST": os.environ.get("ADVVIZ_FAST", "1"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    shared = ROOT.parent / "shared"     # the same defaults as the tests (conftest.py)
    for var, sub in (("ADVVIZ_DATA", "data"), ("ADVVIZ_WEIGHTS", "weights")):
        if var not in env and (shared / sub).is_dir():
            env[var] = str(shared / sub)
    _log(f"building the documentation into {ROOT / 'site'} (notebook execution: {mode})")
    cmd = [str(PY), "-m", "sphinx", "-b", "html", "-d", str(ROOT / "site" / ".doctrees"), str(ROOT / "docs"),
           str(ROOT / "site"), *args]
    return call(cmd, cwd=ROOT, env=env)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__ or "")
        return 0
    cmd, rest = argv[0], argv[1:]
    ensure_env()
    if cmd == "test":
        env = {**os.environ, "ADVVIZ_FAST": os.environ.get("ADVVIZ_FAST", "1")}
        return call([str(PY), *TEST_ARGS, *rest], cwd=ROOT, env=env)
    if cmd in ("explore", "demo", "reproduce", "bench", "train", "evaluate", "artifacts"):
        return call([str(PY), "-m", "advviz.cli", cmd, *rest], cwd=ROOT)
    if cmd == "advviz":
        return call([str(PY), "-m", "advviz.cli", *rest], cwd=ROOT)
    if cmd == "docs":
        return docs(rest)
    if cmd == "widgets-js":
        return widgets_js()
    if cmd == "gpu-check":
        return call([str(PY), "-m", "advviz.benchmarks.gpu_check", *rest], cwd=ROOT)
    sys.stderr.write(f"unknown command {cmd!r}; use explore, demo, test, docs, widgets-js, gpu-check or advviz ARGS\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
