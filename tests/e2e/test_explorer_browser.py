"""End-to-end: the explorer notebook in JupyterLab, driven by headless Chromium (Playwright).

Starts JupyterLab through :func:`advviz.widgets.launch.start` on a free 127.0.0.1 port with a
token and throw-away config/settings/workspace/runtime folders, opens
``notebooks/00_explorer.ipynb``, runs all cells, moves the τ slider with the keyboard and checks
that the rendered mask ``<img>`` changed, uploads an image through the FileUpload's file input,
and saves screenshots under ``test-output/e2e/``.

Needs ``/usr/bin/chromium`` (Debian's ``chromium`` package); skipped with that reason otherwise.
Run: ``pytest -m e2e tests/e2e`` (about 1-2 minutes on 2 cores).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "e2e"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        why = f"{CHROMIUM} not found: install Debian's chromium package (apt-get install -y chromium)"
        if os.environ.get("ADVVIZ_REQUIRE_E2E"):  # CI installs it: a missing browser is a failure there
            pytest.fail(why)
        pytest.skip(why)
    from advviz.widgets import launch

    base = tmp_path_factory.mktemp("jupyter")
    env = {
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "ADVVIZ_FAST": "1",
        "ADVVIZ_OFFLINE": "1",
        "MPLBACKEND": "Agg",
    }
    for key in ("ADVVIZ_DATA", "ADVVIZ_WEIGHTS", "ADVVIZ_CACHE"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    # a copy of the notebook, so that the run's outputs never touch the repository's file
    nb_dir = base / "notebooks"
    nb_dir.mkdir()
    nb = nb_dir / "00_explorer.ipynb"
    shutil.copy(launch.find_notebook(), nb)
    OUT.mkdir(parents=True, exist_ok=True)
    server = launch.start(0, notebook=nb, env=env, log_path=OUT / "jupyterlab.log",
                          extra_args=["--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
                                      "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"])
    try:
        yield server
    finally:
        server.stop()


# the current notebook's kernel is idle
KERNEL_IDLE = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""
# every code cell ran (has an execution count) and the kernel is idle again
ALL_RUN = """() => { const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  return !!k && k.status === 'idle' && cells.every(c => c.model.executionCount !== null); }"""


# the bytes behind an <img> src (a blob: URL made by the ipywidgets Image view)
IMG_BYTES = """async (src) => Array.from(new Uint8Array(await (await fetch(src)).arrayBuffer()))"""


def _png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)


def test_explorer_in_a_real_browser(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    upload = tmp_path / "red.png"
    _png(upload)
    with sync_playwright() as p:
        # a fresh profile: launch_persistent_context passes it as --user-data-dir
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=CHROMIUM_ARGS,
                                                       viewport={"width": 1400, "height": 1000})
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.goto(lab.url, wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            page.screenshot(path=str(OUT / "01_opened.png"))
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(ALL_RUN, timeout=300_000)
            # the notebook leaves the attack-lab tab selected: go back to the CFR tab
            page.locator(".advviz-explorer .lm-TabBar-tab:has-text('CFR / Grad-CAM')").first.click()
            mask = page.locator("img.advviz-mask").first
            mask.wait_for(state="visible", timeout=30_000)
            page.screenshot(path=str(OUT / "02_ran_all.png"), full_page=True)
            errors = page.locator(".advviz-error").all_inner_texts()
            assert not any(t.strip() for t in errors), errors
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] .jp-RenderedText:has-text('Traceback')").count() == 0
            # the seeded summary cell printed its checks
            summary = page.locator(".jp-OutputArea-output").all_inner_texts()
            assert any("within budget: True" in t for t in summary), summary[-3:]

            # move the tau slider of the first explorer with the keyboard
            before = mask.get_attribute("src")
            before_bytes = page.evaluate(IMG_BYTES, before)
            handle = page.locator(".advviz-tau .noUi-handle, .advviz-tau .slider-container [role='slider']").first
            handle.scroll_into_view_if_needed()
            handle.focus()
            for _ in range(15):
                page.keyboard.press("ArrowRight")
            page.wait_for_function("([sel, old]) => document.querySelector(sel).getAttribute('src') !== old",
                                   arg=["img.advviz-mask", before], timeout=30_000)
            page.wait_for_timeout(1000)  # let the last of the key presses arrive
            after = mask.get_attribute("src")
            after_bytes = page.evaluate(IMG_BYTES, after)
            assert after and after != before
            assert before_bytes[:4] == [137, 80, 78, 71] and after_bytes[:4] == [137, 80, 78, 71]  # PNG
            assert after_bytes != before_bytes, "the mask image's bytes did not change"
            mask.scroll_into_view_if_needed()
            page.screenshot(path=str(OUT / "03_tau_moved.png"))

            # upload an image through the FileUpload widget
            info = page.locator(".advviz-picker-info").first
            cam_before = page.locator("img.advviz-cam").first.get_attribute("src")
            # ipywidgets' FileUpload keeps its <input type=file> out of the DOM and clicks it from
            # the button: catch the file chooser it opens and set the file on that input
            with page.expect_file_chooser(timeout=30_000) as chooser:
                page.locator(".advviz-upload").first.click()
            chooser.value.element.set_input_files(str(upload))
            page.wait_for_function("() => document.querySelector('.advviz-picker-info').textContent.includes('upload: red.png')",
                                   timeout=30_000)
            assert "upload: red.png" in info.inner_text()
            page.wait_for_function(KERNEL_IDLE, timeout=60_000)
            page.wait_for_function("([sel, old]) => document.querySelector(sel).getAttribute('src') !== old",
                                   arg=["img.advviz-cam", cam_before], timeout=30_000)  # Grad-CAM followed
            info.scroll_into_view_if_needed()
            page.screenshot(path=str(OUT / "04_uploaded.png"))
        finally:
            (OUT / "console.log").write_text("\n".join(console) if "console" in locals() else "")
            browser.close()
