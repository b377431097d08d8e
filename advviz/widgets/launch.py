"""``advviz explore``: open JupyterLab on a working copy of the explorer notebook, bound to 127.0.0.1.

Which notebook: the explorer opens a *working copy*, ``<advviz cache>/explorer/00_explorer.ipynb``
(:func:`working_copy`), never the repository's ``notebooks/00_explorer.ipynb``: JupyterLab
autosaves outputs, and saved widget outputs show "Error: widget model not found" when the
notebook is reopened. The copy is made from the repository's notebook (or, in an installed
wheel, from :mod:`advviz.widgets._notebook`) the first time; later launches keep the user's
edits and clear the saved outputs.

The server gets a random token and a free port (unless one is given), listens on 127.0.0.1
only, writes its log to ``<advviz cache>/explorer/jupyterlab.log`` (the path is printed with
the URL), and runs with JupyterLab's news and update checks off (:data:`QUIET_LAB_ARGS`); a
browser is opened only when asked and a display is available.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import advviz
from advviz._paths import cache_dir
from advviz.widgets._notebook import write_notebook

log = logging.getLogger(__name__)

__all__ = ["find_notebook", "working_copy", "model_notebook", "lab_command", "free_port", "LabServer", "start", "main",
           "QUIET_LAB_ARGS"]

NOTEBOOK = "00_explorer.ipynb"

#: JupyterLab options for the explorer's server: no news fetched (a news URL of None; an empty
#: one does not), no update check.
QUIET_LAB_ARGS = ("--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
#: The plugin that asks "Would you like to get notified about official Jupyter news?" whatever the
#: server's news URL; the explorer's server disables it through a page config of its own.
ANNOUNCEMENTS_PLUGIN = "@jupyterlab/apputils-extension:announcements"


def quiet_config_dir() -> Path:
    """A Jupyter config folder (prepended to ``JUPYTER_CONFIG_PATH`` for the explorer's server only)
    whose ``labconfig/page_config.json`` disables the news pop-up; the user's own settings are untouched."""
    base = cache_dir() / "explorer" / "jupyter-config"
    page = base / "labconfig" / "page_config.json"
    page.parent.mkdir(parents=True, exist_ok=True)
    want = {"disabledExtensions": {ANNOUNCEMENTS_PLUGIN: True}}
    if not page.is_file() or json.loads(page.read_text() or "{}") != want:
        page.write_text(json.dumps(want, indent=1))
    return base


def find_notebook() -> Path:
    """The explorer notebook to open (the checkout's, else a user copy written on demand)."""
    repo = Path(advviz.__file__).resolve().parents[1] / "notebooks" / NOTEBOOK
    if repo.is_file():
        return repo
    user = cache_dir() / "notebooks" / NOTEBOOK
    if not user.is_file():
        write_notebook(user)
    return user


def working_copy(folder: str | os.PathLike[str] | None = None) -> Path:
    """The notebook ``advviz explore`` opens: a copy outside the repository, outputs cleared.

    Made from :func:`find_notebook` when missing; an existing copy keeps its cells (the user's
    edits) and loses its saved outputs, so that no stale widget output is shown on reopening.

    Args:
        folder: where the copy lives (default ``<advviz cache>/explorer``).
    """
    import nbformat

    base = Path(folder) if folder is not None else cache_dir() / "explorer"
    base.mkdir(parents=True, exist_ok=True)
    copy = base / NOTEBOOK
    if not copy.is_file():
        shutil.copyfile(find_notebook(), copy)
    nb = nbformat.read(str(copy), as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            cell.outputs, cell.execution_count = [], None
            changed = True
    if nb.metadata.pop("widgets", None) is not None:  # saved widget state: stale in a new kernel
        changed = True
    if changed:
        nbformat.write(nb, str(copy))
    return copy


MODEL_NOTEBOOK = "your_model.ipynb"


def model_notebook(code: str, *, command: str = "advviz explore", folder: str | os.PathLike[str] | None = None) -> Path:
    """The notebook ``advviz explore --model/--arch/--data …`` opens: a short note and one code cell,
    ``code``, that loads the model and opens the explorer on the images with advviz's public functions.

    It is rewritten at each such launch (``<advviz cache>/explorer/your_model.ipynb``); copy it
    elsewhere to keep your edits.

    Args:
        code: the cell's source.
        command: the command line, quoted in the note.
        folder: where it is written (default ``<advviz cache>/explorer``).
    """
    import nbformat

    base = Path(folder) if folder is not None else cache_dir() / "explorer"
    base.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.cells = [nbformat.v4.new_markdown_cell(
                    f"# advviz explorer on your model\n\nWritten by `{command}`: the cell below loads the model and "
                    "opens the explorer on the images, with advviz's public functions (the same steps work in any "
                    "notebook). This file is rewritten at each such launch: copy it elsewhere to keep your edits. "
                    "The guided tour is in the explorer notebook (`advviz explore` without options)."),
                nbformat.v4.new_code_cell(code)]
    path = base / MODEL_NOTEBOOK
    nbformat.write(nb, str(path))
    return path


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabServer:
    """A running JupyterLab: its process, URL of the notebook (with token), token and root."""

    process: subprocess.Popen
    url: str
    base_url: str
    token: str
    root: Path
    notebook: Path

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server (and wait for it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def lab_command(port: int, token: str, root: Path, extra_args: Sequence[str] = ()) -> list[str]:
    """The ``jupyter lab`` command line: 127.0.0.1 only, this port and token, no browser, no news."""
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", *QUIET_LAB_ARGS, *extra_args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers often run as root
        cmd.append("--allow-root")
    return cmd


def start(port: int = 0, *, notebook: str | os.PathLike[str] | None = None, token: str | None = None,
          env: Mapping[str, str] | None = None, extra_args: Sequence[str] = (), timeout: float = 120.0,
          log_path: str | os.PathLike[str] | None = None) -> LabServer:
    """Start JupyterLab (no browser) on 127.0.0.1 and wait until it answers.

    Args:
        port: TCP port; 0 picks a free one.
        notebook: the notebook to open (default :func:`working_copy`); its folder is the root.
        token: access token (default: a random one).
        env: extra environment variables for the server and its kernels.
        extra_args: extra ``jupyter lab`` arguments.
        timeout: seconds to wait for the server to answer.
        log_path: where the server's output goes (default: discarded).

    Raises:
        RuntimeError: the server exited or did not answer in time (its log is quoted).
    """
    nb = Path(notebook) if notebook is not None else working_copy()
    if not nb.is_file():
        raise FileNotFoundError(f"notebook not found: {nb}")
    port = port or free_port()
    token = token or secrets.token_hex(16)
    root = nb.resolve().parent
    cmd = lab_command(port, token, root, extra_args)
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    paths = [str(quiet_config_dir())] + [p for p in full_env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    full_env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(paths)
    log = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=str(root))
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/lab/tree/{nb.name}?token={token}"
    server = LabServer(process=proc, url=url, base_url=base, token=token, root=root, notebook=nb)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                tail = Path(log_path).read_text(errors="replace")[-3000:] if log_path else ""
                raise RuntimeError(f"JupyterLab exited with status {proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer on {base} within {timeout:.0f} s")
            time.sleep(0.3)
    except BaseException:  # not answering, Ctrl-C or `kill` while it starts: no server is left behind
        server.stop()
        raise
    return server


def main(port: int = 0, open_browser: bool = True, report: Callable[[str], None] | None = None,
         notebook: str | os.PathLike[str] | None = None) -> int:
    """Serve the explorer notebook until Ctrl-C; report its URL; open a browser if possible.

    Args:
        port: port on 127.0.0.1 (0: a free one).
        notebook: the notebook to open (default: :func:`working_copy`; ``advviz explore --model …``
            passes :func:`model_notebook`'s).
        open_browser: open the URL in a browser when a display exists.
        report: receives the lines for the user (the URL, display hints); the CLI passes its
            terminal writer. Default: ``logging`` at INFO level.

    Returns:
        0 after a clean shutdown, else the server's exit status.
    """
    say = report or log.info
    nb = Path(notebook) if notebook is not None else working_copy()
    log_path = cache_dir() / "explorer" / "jupyterlab.log"

    def _terminate(_signum: int, _frame: object) -> None:  # `kill`: take the server down with us
        raise KeyboardInterrupt  # unwinds out of wait() (which holds Popen's lock), then stop() below

    # installed before the server starts: a `kill` right after the URL is printed (or while the server
    # starts) must not end this process with its default action and leave JupyterLab running
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _serve(nb, notebook is None, log_path, port, open_browser, say)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _serve(nb: Path, working: bool, log_path: Path, port: int, open_browser: bool, say: Callable[[str], None]) -> int:
    """:func:`main`'s work once its SIGTERM handler is in place: start, report, wait; stop on Ctrl-C or `kill`."""
    try:
        server = start(port, notebook=nb, log_path=log_path)  # stops its own server when interrupted
    except KeyboardInterrupt:
        return 0
    try:
        say(f"advviz explorer: {server.url}")
        say(f"notebook (a working copy; the repository's stays clean): {nb}" if working else
            f"notebook (written for your model and images; rewritten at each launch): {nb}")
        say(f"server log: {log_path}")
        if open_browser and _has_display():
            webbrowser.open(server.url)
        elif open_browser:
            say("no display found: open the URL above in a browser")
        return int(server.process.wait() or 0)
    except KeyboardInterrupt:
        server.stop()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(open_browser="--no-browser" not in sys.argv))
