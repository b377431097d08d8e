"""End-to-end: the explorer notebook in JupyterLab, driven by headless Chromium (Playwright).

Starts JupyterLab through :func:`advviz.widgets.launch.start` on a free 127.0.0.1 port with a
token and throw-away config/settings/workspace/runtime folders, opens a copy of
``notebooks/00_explorer.ipynb`` and, at 1024x768 (a projector) and at 1920x1080: runs all cells
and checks that the explorer stays on its first tab; that no image is broken or squashed and
nothing is cut off; moves the τ slider with the keyboard and checks that the rendered mask
``<img>`` changed; runs an attack and checks that the status reads "done" (and still does a
second later); scrubs a PGD trajectory and opens the "Takeover" tab; switches the header's
model and checks that no error box appears; uploads an
image through the FileUpload's file input (1024x768 only). JupyterLab's file browser is open (the
explorer then has about 570 pixels at 1024x768), and on every tab no element of the explorer is
wider than the panel that holds it (``WIDER_THAN_PANEL``); the panel's width and where the tabs
start are written to ``test-output/e2e/<size>_geometry.json``. Screenshots go to
``test-output/e2e/<width>x<height>_*.png``.

Needs ``/usr/bin/chromium`` (Debian's ``chromium`` package); skipped with that reason otherwise.
Run: ``pytest -m e2e tests/e2e`` (about 1-2 minutes on 2 cores).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e._browser import CHROMIUM, CHROMIUM_ARGS, GEOMETRY, OUT, ROOT, WIDER_THAN_PANEL, open_file_browser

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]



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
    shutil.copy(ROOT / "notebooks" / "06_your_model.ipynb", nb_dir / "06_your_model.ipynb")
    OUT.mkdir(parents=True, exist_ok=True)
    server = launch.start(0, notebook=nb, env=env, log_path=OUT / "jupyterlab.log",
                          extra_args=["--LabApp.expose_app_in_browser=True"])
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


# displayed <img> elements of the explorer that are broken (no pixels) or squashed (every image
# the explorer shows sits in a square box: a non-square box means the layout squeezed it)
# (or cut off: reaching past the right edge of the tab panel that holds it)
BAD_IMAGES = """() => Array.from(document.querySelectorAll('.advviz-explorer img')).filter(i => i.offsetParent !== null)
  .map(i => { const r = i.getBoundingClientRect(); const box = i.closest('.jupyter-widgets.widget-tab-contents, .lm-TabPanel-stackedPanel, .advviz-explorer').getBoundingClientRect();
              return {w: r.width, h: r.height, ok: i.complete && i.naturalWidth > 0, inside: r.right <= box.right + 1,
                      cls: i.className}; })
  .filter(r => !r.ok || !r.inside || Math.abs(r.w - r.h) > 2 || r.w < 60)"""
NEWS = "text=Would you like to get notified about official Jupyter news"
# the explorer's visible tab panel is wider than the space it has (something is cut off)
OVERFLOW = """() => { const p = document.querySelector('.advviz-explorer .lm-TabPanel-stackedPanel, .advviz-explorer .widget-tab-contents');
  const e = document.querySelector('.advviz-explorer'); return e.scrollWidth - e.clientWidth; }"""
ERROR_BOXES = """() => Array.from(document.querySelectorAll('.advviz-error-box')).map(e => e.textContent.slice(0, 300))"""
# the text of every code cell's stream outputs, read from the notebook's model
CELL_OUTPUTS = """() => { const nb = window.jupyterapp.shell.currentWidget.content.model; const out = [];
  for (let i = 0; i < nb.cells.length; i++) { const c = nb.cells.get(i); if (c.type !== 'code') continue;
    for (let j = 0; j < c.outputs.length; j++) { const o = c.outputs.get(j).toJSON();
      out.push(Array.isArray(o.text) ? o.text.join('') : (o.text || '')); } }
  return out; }"""
TAB = "() => { const t = document.querySelector('.advviz-explorer .lm-TabBar-tab.lm-mod-current'); return t && t.textContent; }"


def _tab(page, title: str) -> None:
    page.locator(f".advviz-explorer .lm-TabBar-tab:has-text('{title}')").first.click()
    page.wait_for_timeout(500)


@pytest.mark.parametrize("size", [(1024, 768), (1920, 1080)], ids=["1024x768", "1920x1080"])
def test_explorer_in_a_real_browser(lab, tmp_path, size):
    from playwright.sync_api import sync_playwright

    width, height = size
    tag = f"{width}x{height}"
    upload = tmp_path / "red.png"
    _png(upload)
    with sync_playwright() as p:
        # a fresh profile: launch_persistent_context passes it as --user-data-dir
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=CHROMIUM_ARGS,
                                                       viewport={"width": width, "height": height})
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.goto(lab.url, wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            open_file_browser(page)  # a teacher's layout: the explorer then has ~570 px at 1024x768
            page.screenshot(path=str(OUT / f"{tag}_01_opened.png"))
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(ALL_RUN, timeout=300_000)
            # Run All leaves the explorer on its first tab (the notebook no longer switches it)
            assert (page.evaluate(TAB) or "").strip() == "CFR"
            mask = page.locator("img.advviz-mask").first
            mask.wait_for(state="visible", timeout=30_000)
            page.locator(".advviz-explorer").first.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(OUT / f"{tag}_02_ran_all.png"))
            assert page.evaluate(ERROR_BOXES) == []
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] .jp-RenderedText:has-text('Traceback')").count() == 0
            # the seeded summary cell printed its checks (read from the notebook's model: JupyterLab does
            # not render cells scrolled out of view, and the hidden check cell now follows it)
            summary = page.evaluate(CELL_OUTPUTS)
            assert any("within budget: True" in t for t in summary), summary[-3:]
            assert page.evaluate(BAD_IMAGES) == []
            assert page.evaluate(OVERFLOW) <= 1
            assert page.evaluate(WIDER_THAN_PANEL) == []
            geometry = page.evaluate(GEOMETRY)
            (OUT / f"{tag}_geometry.json").write_text(__import__("json").dumps(geometry))
            assert page.locator(NEWS).count() == 0, "JupyterLab's news pop-up is shown"

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
            page.screenshot(path=str(OUT / f"{tag}_03_tau_moved.png"))

            # the attack lab: Run, then the status reads "done" and stays so
            _tab(page, "Attack lab")
            page.locator(".advviz-attack-run").first.click()
            page.wait_for_function("() => document.querySelector('.advviz-attack-status').textContent.startsWith('done')",
                                   timeout=120_000)
            page.wait_for_timeout(1500)
            assert page.locator(".advviz-attack-status").first.inner_text().startswith("done")
            page.wait_for_function(KERNEL_IDLE, timeout=60_000)
            page.locator(".advviz-adv-image").first.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            assert page.evaluate(BAD_IMAGES) == [] and page.evaluate(OVERFLOW) <= 1
            assert page.evaluate(WIDER_THAN_PANEL) == []
            page.screenshot(path=str(OUT / f"{tag}_04_attack.png"))
            # the attack's trajectory: the notebook's attack is FGSM (one step); run PGD for a scrubber
            page.locator(".advviz-attack-name select").first.select_option("pgd")
            page.wait_for_function(KERNEL_IDLE, timeout=60_000)
            page.locator(".advviz-attack-run").first.click()
            page.wait_for_function("() => document.querySelector('.advviz-attack-status').textContent.startsWith('done')",
                                   timeout=120_000)
            page.wait_for_function(KERNEL_IDLE, timeout=60_000)
            page.locator(".advviz-traj-strip").first.wait_for(state="visible", timeout=30_000)
            page.locator(".advviz-traj-info").first.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            assert page.evaluate(BAD_IMAGES) == []
            assert "flip" in page.locator(".advviz-traj-strip").first.inner_text()
            page.screenshot(path=str(OUT / f"{tag}_04b_trajectory.png"))
            _tab(page, "Takeover")
            page.locator(".advviz-takeover-chart svg").first.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(500)
            assert page.evaluate(BAD_IMAGES) == [] and page.evaluate(ERROR_BOXES) == []
            assert page.evaluate(WIDER_THAN_PANEL) == []
            page.screenshot(path=str(OUT / f"{tag}_04c_takeover.png"))
            _tab(page, "Purifiers")
            page.wait_for_function(KERNEL_IDLE, timeout=60_000)
            assert page.evaluate(BAD_IMAGES) == [] and page.evaluate(WIDER_THAN_PANEL) == []
            page.screenshot(path=str(OUT / f"{tag}_05_purifiers.png"))
            _tab(page, "Features")
            page.locator(".advviz-fmap-channel").nth(2).click()
            page.wait_for_function(KERNEL_IDLE, timeout=60_000)
            page.wait_for_timeout(500)
            assert page.evaluate(BAD_IMAGES) == [] and page.evaluate(WIDER_THAN_PANEL) == []
            page.screenshot(path=str(OUT / f"{tag}_06_feature_maps.png"))

            # switch the header's model: every component follows, no error box anywhere (on a
            # fresh machine the menu holds lenet5_digits alone: nothing to switch to)
            select = page.locator(".advviz-model-choice select").first
            options = [o for o in select.locator("option").all_inner_texts()]
            current = select.input_value()
            other = next((o for o in ("lenet5_digits", "resnet20_cifar10", *options) if o in options and o != current),
                         None)
            if other is not None:
                select.scroll_into_view_if_needed()
                select.select_option(other)
                page.wait_for_timeout(1000)
                page.wait_for_function(KERNEL_IDLE, timeout=120_000)
                page.wait_for_timeout(1000)
            _tab(page, "Purifiers")
            assert page.evaluate(ERROR_BOXES) == []
            assert page.evaluate(BAD_IMAGES) == []
            page.locator(".advviz-explorer").first.scroll_into_view_if_needed()
            page.screenshot(path=str(OUT / f"{tag}_07_model_switched.png"))
            _tab(page, "Train")
            assert page.evaluate(BAD_IMAGES) == [] and page.evaluate(WIDER_THAN_PANEL) == []
            page.screenshot(path=str(OUT / f"{tag}_08_train.png"))
            _tab(page, "CFR")

            if width == 1024:
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
                assert page.evaluate(ERROR_BOXES) == []
                page.screenshot(path=str(OUT / f"{tag}_09_uploaded.png"))
        finally:
            (OUT / f"{tag}_console.log").write_text("\n".join(console) if "console" in locals() else "")
            browser.close()


def test_your_model_notebook_at_1024x768(lab, tmp_path):
    """Notebook 06 (a user's network and a folder of photos) in JupyterLab with the file browser open:
    every tab of its explorer, nothing wider than its panel, no error box."""
    from playwright.sync_api import sync_playwright

    tag = "06_1024x768"
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=CHROMIUM_ARGS,
                                                       viewport={"width": 1024, "height": 768})
        console: list[str] = []
        try:
            page = browser.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            # a workspace of its own, reset: JupyterLab does not restore the explorer notebook's tab (two
            # notebooks restored together ask "Select Kernel" for the second one)
            page.goto(f"{lab.base_url}/lab/workspaces/own-model/tree/06_your_model.ipynb?reset&token={lab.token}",
                      wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            page.wait_for_timeout(1500)
            accept = page.locator(".jp-Dialog .jp-mod-accept")
            if accept.count():  # a kernel dialog all the same: take the default kernel
                accept.first.click()
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            open_file_browser(page)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # not awaited
            try:
                page.wait_for_function(ALL_RUN, timeout=400_000)
            finally:
                page.screenshot(path=str(OUT / f"{tag}_00_run_all.png"), full_page=True)
            page.locator("img.advviz-cam").first.wait_for(state="visible", timeout=60_000)
            page.locator(".advviz-explorer").first.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(OUT / f"{tag}_01_ran_all.png"))
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] "
                                ".jp-RenderedText:has-text('Traceback')").count() == 0
            outputs = page.evaluate(CELL_OUTPUTS)  # from the notebook's model: JupyterLab renders only what is in view
            assert any("rounding flagged for gradient masking: True" in t for t in outputs), outputs[-3:]
            assert "lab net" in page.locator(".advviz-model-info").first.inner_text()
            page.locator(".advviz-title").first.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)
            page.screenshot(path=str(OUT / f"{tag}_02_header.png"))
            geometry = page.evaluate(GEOMETRY)
            (OUT / f"{tag}_geometry.json").write_text(__import__("json").dumps(geometry))
            assert geometry["panel"] < 620, geometry  # the file browser is open: a narrow panel
            widths = {}
            for title in ("CFR", "Attack lab", "Purifiers", "Features", "Takeover", "Train", "Robustness"):
                _tab(page, title)
                if title == "Attack lab":
                    page.locator(".advviz-attack-run").first.click()
                    page.wait_for_function("() => document.querySelector('.advviz-attack-status').textContent"
                                           ".startsWith('done')", timeout=120_000)
                if title == "Features":
                    page.locator(".advviz-fmap-channel").nth(1).click()
                if title == "Robustness":
                    page.locator(".advviz-robust-run").first.click()
                    page.wait_for_function("() => document.querySelector('.advviz-robust-status').textContent"
                                           ".startsWith('done')", timeout=240_000)
                    page.locator(".advviz-robust-chart svg").first.wait_for(state="visible", timeout=30_000)
                page.wait_for_function(KERNEL_IDLE, timeout=120_000)
                page.wait_for_timeout(700)
                page.screenshot(path=str(OUT / f"{tag}_{title.replace(' ', '_').lower()}.png"), full_page=True)
                widths[title] = page.evaluate(WIDER_THAN_PANEL)
                assert page.evaluate(ERROR_BOXES) == [], title
                assert page.evaluate(BAD_IMAGES) == [], title
            (OUT / f"{tag}_too_wide.json").write_text(__import__("json").dumps(widths))
            assert widths == {t: [] for t in widths}, widths
        finally:
            (OUT / f"{tag}_console.log").write_text("\n".join(console))
            browser.close()
