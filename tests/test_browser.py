"""A real browser test: JupyterLab in headless Chromium runs lesson 01 and its widgets work.

It starts JupyterLab on a free loopback port over a temporary copy of the notebook (so the
committed one is never touched), opens it in Debian's Chromium driven by Playwright, runs all
cells, and asserts that the sliders render (no "Error displaying widget") and that moving a slider
redraws the figure. Without /usr/bin/chromium it is skipped, unless REQUIRE_BROWSER_TEST=1 (set by
.ci/run), where a missing browser is a failure.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "01_patches.ipynb"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]

if not CHROMIUM.exists():
    if os.environ.get("REQUIRE_BROWSER_TEST") == "1":
        pytest.fail("REQUIRE_BROWSER_TEST=1 but /usr/bin/chromium is missing: apt-get install chromium", pytrace=False)
    pytest.skip("browser test skipped: /usr/bin/chromium is not installed (apt-get install chromium)",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def jupyter_lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of lesson 01; yields its base URL and token."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), JUPYTER_PREFER_ENV_PATH="1")
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    break
                time.sleep(0.5)
        else:
            raise RuntimeError(f"JupyterLab did not start; see {tmp_path / 'jupyter.log'}")
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _widget_figure(page) -> str:
    """The src of the figure inside the live widget's output area ('' if none yet)."""
    images = page.locator(".jp-OutputArea-output .widget-output img, .jupyter-widgets-output-area img")
    return images.first.get_attribute("src") if images.count() else ""


def _accept_kernel_dialog(page, seconds: float = 8) -> None:
    """Accept JupyterLab's "Select Kernel" dialog (the notebook's own kernel) if it pops up."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        dialog = page.locator(".jp-Dialog .jp-mod-accept")
        if dialog.count():
            dialog.first.click()
            return
        time.sleep(0.25)


def test_lesson_01_widgets_render_and_redraw(jupyter_lab, tmp_path):
    from playwright.sync_api import sync_playwright

    base, token = jupyter_lab
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
            _accept_kernel_dialog(page)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            _accept_kernel_dialog(page, seconds=5)  # it can also appear when Run All finds no kernel yet
            try:
                page.wait_for_selector(".widget-hslider .noUi-handle", timeout=180_000)
            except Exception:
                page.screenshot(path=str(tmp_path / "no-slider.png"), full_page=False)
                raise AssertionError(f"no slider appeared after Run All; screenshot: {tmp_path / 'no-slider.png'}")
            page.wait_for_function("() => document.querySelectorAll('.widget-output img, .jupyter-widgets-output-area img').length > 0",
                                   timeout=60_000)
            assert "Error displaying widget" not in page.content()
            sliders = page.locator(".widget-hslider")
            assert sliders.count() >= 2, "patch size and patch index sliders are shown"

            before = _widget_figure(page)
            handle = page.locator(".widget-hslider .noUi-handle").nth(1)  # the patch index slider
            handle.scroll_into_view_if_needed()
            handle.focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            deadline = time.time() + 30
            while time.time() < deadline and _widget_figure(page) in ("", before):
                time.sleep(0.25)
            page.screenshot(path=str(tmp_path / "lesson01.png"), full_page=False)
            assert _widget_figure(page) not in ("", before), "moving the slider redraws the figure"
            all_outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            assert any("✅ patchify" in text for text in all_outputs), "the checks ran in the browser too"
        finally:
            browser.close()
