"""Session set-up shared by ``tests/`` and ``notebooks/`` (nbval).

* Offline and hermetic: ``ADVVIZ_OFFLINE=1``; ``ADVVIZ_DATA``/``ADVVIZ_WEIGHTS`` default to
  ``../shared/{data,weights}`` beside the repository when unset; ``ADVVIZ_CACHE`` points at a
  per-session temporary folder (set ``ADVVIZ_TEST_CACHE`` to reuse one between runs).
* ``ADVVIZ_CHECK_EXERCISES=1`` (unless set): the notebooks re-measure their exercise answers and
  check the numbers the text quotes (``advviz.papers.quoted``).
* ``--device``: CPU by default; ``pytest --device cuda`` opts in to the GPU.
* Each notebook's duration is recorded (``tests/notebook_durations.py``): a table at the end of the
  session, ``test-output/notebook-durations.json``, and a failure when one exceeds its budget.

Notebook kernels are subprocesses: they inherit these variables because they are set in
``os.environ`` before any kernel starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="device for device-parametrised tests (cpu or cuda)")


def pytest_configure(config: pytest.Config) -> None:
    from tests.notebook_durations import NotebookDurations

    config.pluginmanager.register(NotebookDurations(ROOT), "advviz-notebook-durations")


def _set_environment() -> None:
    os.environ["ADVVIZ_OFFLINE"] = "1"
    if "ADVVIZ_DATA" not in os.environ and (SHARED / "data").is_dir():
        os.environ["ADVVIZ_DATA"] = str(SHARED / "data")
    if "ADVVIZ_WEIGHTS" not in os.environ and (SHARED / "weights").is_dir():
        os.environ["ADVVIZ_WEIGHTS"] = str(SHARED / "weights")
    cache = os.environ.get("ADVVIZ_TEST_CACHE")
    if cache:
        os.environ["ADVVIZ_CACHE"] = cache
    elif "ADVVIZ_CACHE_SESSION" not in os.environ:
        import tempfile

        os.environ["ADVVIZ_CACHE"] = os.environ["ADVVIZ_CACHE_SESSION"] = tempfile.mkdtemp(prefix="advviz-test-cache-")
    os.environ.setdefault("MPLBACKEND", "Agg")
    # the notebooks' hidden last cells re-run the exercises and compare the numbers their answers
    # quote with the text (advviz.papers.quoted); a class's run skips that
    os.environ.setdefault("ADVVIZ_CHECK_EXERCISES", "1")


# At import, before any other conftest or test module reads the environment.
_set_environment()
