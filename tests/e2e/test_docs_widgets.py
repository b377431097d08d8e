"""End-to-end: the documentation site's explorer page draws the explorer's saved widget state.

Builds the walkthrough pages only (``ADVVIZ_DOCS_NOTEBOOKS_ONLY=1``, no API reference) with the
explorer notebook executed (``ADVVIZ_DOCS_EXECUTE_ONLY=00_explorer``, ``ADVVIZ_FAST=1``) into a
temporary folder, serves it on 127.0.0.1 and opens ``notebooks/00_explorer.html`` in headless
Chromium (Playwright, the flags of DEVELOPERS.md). It checks that the page embeds the widget
state, that the ipywidgets HTML manager turned it into the explorer (its six tabs, the picked
image, no widget error) and that no image is broken. Screenshot:
``test-output/e2e/docs_00_explorer.png``.

Needs ``/usr/bin/chromium`` and the HTML manager in ``docs/_static/widgets/``
(``python3 run.py widgets-js``; ``.ci/run`` fetches it): skipped with the reason otherwise, a
failure under ``ADVVIZ_REQUIRE_E2E=1``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e._browser import CHROMIUM, CHROMIUM_ARGS, OUT, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

STATE = 'script[type="application/vnd.jupyter.widget-state+json"]'
# what the HTML manager drew: tab titles, images (and how many are broken), widget error views
DRAWN = """() => ({
  tabs: Array.from(document.querySelectorAll('.jupyter-widgets .lm-TabBar-tab')).map(t => t.textContent.trim()),
  images: Array.from(document.querySelectorAll('.jupyter-widgets img')).filter(i => i.offsetParent !== null).length,
  broken: Array.from(document.querySelectorAll('.jupyter-widgets img'))
            .filter(i => i.offsetParent !== null && !(i.complete && i.naturalWidth > 0)).length,
  errors: document.querySelectorAll('.jupyter-widgets-error-widget, .widget-error').length,
  title: (document.querySelector('.advviz-explorer') || {textContent: ''}).textContent.slice(0, 200)})"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves the built site without logging every request."""

    def log_message(self, *_args: object) -> None:
        pass


def _require(ok: bool, why: str) -> None:
    if not ok:
        if os.environ.get("ADVVIZ_REQUIRE_E2E"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} not found: install Debian's chromium package")
    pins = json.loads((ROOT / "docs" / "widgets-js.json").read_text())
    local = ROOT / "docs" / "_static" / "widgets"
    _require(all((local / Path(v["file"]).name).is_file() for k, v in pins.items() if not k.startswith("_")),
             f"the ipywidgets HTML manager is not in {local}: run `python3 run.py widgets-js` (npm)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "ADVVIZ_DOCS_NOTEBOOKS_ONLY": "1", "ADVVIZ_DOCS_EXECUTE": "force",
           "ADVVIZ_DOCS_EXECUTE_ONLY": "00_explorer", "ADVVIZ_FAST": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    build = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(out / ".doctrees"),
                            str(ROOT / "docs"), str(out)], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=540)
    assert build.returncode == 0, build.stderr[-3000:]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield out, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_explorer_page_draws_the_saved_widgets(site, tmp_path):
    from playwright.sync_api import sync_playwright

    from advviz.widgets.explorer import TAB_TITLES

    out, url = site
    html = (out / "notebooks" / "00_explorer.html").read_text()
    assert 'application/vnd.jupyter.widget-state+json' in html, "the executed explorer saved no widget state"
    assert "_static/widgets/embed-amd.js" in html and "NBVAL_CHECK_OUTPUT" not in html
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                   headless=True, args=CHROMIUM_ARGS,
                                                   viewport={"width": 1280, "height": 900})
        try:
            page = ctx.new_page()
            page.goto(f"{url}/notebooks/00_explorer.html")
            assert page.locator(STATE).count() == 1
            page.wait_for_selector(".advviz-explorer .lm-TabBar-tab", timeout=60_000)
            page.wait_for_timeout(500)
            drawn = page.evaluate(DRAWN)
            page.locator(".advviz-explorer").first.screenshot(path=str(OUT / "docs_00_explorer.png"))
        finally:
            ctx.close()
    assert drawn["tabs"][:len(TAB_TITLES)] == list(TAB_TITLES), drawn
    assert "advviz explorer" in drawn["title"], drawn
    assert drawn["images"] >= 1 and drawn["broken"] == 0 and drawn["errors"] == 0, drawn
