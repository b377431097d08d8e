"""What the browser tests share: where Chromium is, its flags (DEVELOPERS.md), where screenshots go."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "e2e"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]

# Elements of the explorer wider than the panel that holds them, or reaching past its right edge:
# the tab panel for what is inside a tab, the explorer itself for its header (each as {tag, cls,
# w, right, panel}). Hidden elements (other tabs) have no box and are skipped.
WIDER_THAN_PANEL = """() => { const root = document.querySelector('.advviz-explorer'); const out = [];
  const rootBox = root.getBoundingClientRect();
  for (const el of root.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const panel = el.closest('.lm-TabPanel-stackedPanel, .widget-tab-contents');
    const p = panel && panel !== el ? panel.getBoundingClientRect() : rootBox;
    if (r.right > p.right + 1 || r.width > p.width + 1) {
      const cls = typeof el.className === 'string' ? el.className : (el.className.baseVal || '');
      out.push({tag: el.tagName, cls: cls.slice(0, 80), w: Math.round(r.width), right: Math.round(r.right),
                panel: Math.round(p.width)});
    }
  }
  return out.slice(0, 12); }"""

# The explorer's visible tab panel's width, and how far below the explorer's top its tab bar starts.
GEOMETRY = """() => { const root = document.querySelector('.advviz-explorer');
  const bar = root.querySelector('.lm-TabBar'); const panel = root.querySelector('.lm-TabPanel-stackedPanel, .widget-tab-contents');
  return {explorer: Math.round(root.getBoundingClientRect().width), panel: Math.round(panel.getBoundingClientRect().width),
          tabs_below_top: Math.round(bar.getBoundingClientRect().top - root.getBoundingClientRect().top)}; }"""


def open_file_browser(page) -> None:  # noqa: ANN001 - a Playwright page
    """Open JupyterLab's file browser in the left sidebar (what narrows the explorer to ~570 px at 1024)."""
    page.evaluate("() => { window.jupyterapp.shell.expandLeft(); window.jupyterapp.shell.activateById('filebrowser'); }")
    page.wait_for_timeout(800)
