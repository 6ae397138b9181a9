"""The widget in a real JupyterLab: a server on localhost, a notebook run in headless Chromium,
the widget's canvas drawn with the timeline's edges, a pinned node ablated through Python.

Skipped where JupyterLab or the browser is missing, except under CI (``CI=true``), where that
fails. Requests that leave localhost (JupyterLab's news and extension-manager look-ups) are
blocked: the widget needs none.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from viewer_run import viewer_run

from sparsecircuits import open_run
from sparsecircuits.viewer import _browser

__all__ = ["viewer_run"]  # the fixture

try:
    import jupyterlab  # noqa: F401

    _MISSING = _browser.available()
except ImportError:
    _MISSING = "jupyterlab is not installed (the dev extra)"
if _MISSING and os.environ.get("CI", "").lower() == "true":
    pytest.fail(f"the JupyterLab test cannot run under CI: {_MISSING}", pytrace=False)
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lab")
    port, token = _free_port(), secrets.token_hex(16)
    log = (root / "server.log").open("w")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"),
           "JUPYTER_DATA_DIR": str(root / ".data"), "JUPYTER_RUNTIME_DIR": str(root / ".rt")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("JupyterLab did not start:\n" + (root / "server.log").read_text())
            time.sleep(0.5)
    yield root, url, token
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def test_widget_draws_in_jupyterlab(lab, viewer_run: Path) -> None:
    root, url, token = lab
    source = ("from sparsecircuits.viewer import CircuitViewer\n"
              f"CircuitViewer({str(viewer_run)!r})")
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "viewer",
                   "metadata": {}, "outputs": [], "source": source}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    (root / "viewer.ipynb").write_text(json.dumps(notebook))
    expected = int(open_run(viewer_run).timeline().weight_graph.edges.present[:, 0].sum())
    with _browser.browser() as b:
        context = b.new_context(viewport={"width": 1500, "height": 1100})
        context.route(lambda u: not u.startswith(url), lambda route: route.abort())
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type in ("error", "warning") and errors.append(m.text))
        ours = ("scv", "sparsecircuits", "anywidget", "CircuitViewer")
        page.goto(f"{url}/lab/tree/viewer.ipynb?token={token}")
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.wait_for(timeout=180_000)
        # Run the cell; while the kernel is still connecting, Shift+Enter runs nothing (the
        # prompt stays "[ ]"), so try again until the prompt shows "[*]" or "[1]".
        prompt = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            editor.click()
            page.keyboard.press("Shift+Enter")
            page.wait_for_timeout(5_000)
            if "*" in prompt.inner_text() or "1" in prompt.inner_text():
                break
        viewer = page.locator(".scv[data-ready='1']")
        try:
            viewer.wait_for(timeout=180_000)
        except Exception:
            page.screenshot(path=str(root / "jupyterlab.png"))
            output = page.locator(".jp-OutputArea").first.inner_text() if page.locator(
                ".jp-OutputArea").count() else "(no output area)"
            pytest.fail(f"no viewer drawn; cell output: {output!r}; console: {errors}; "
                        f"screenshot {root / 'jupyterlab.png'}")
        assert int(viewer.get_attribute("data-edges-drawn")) == expected > 0
        drawn = page.evaluate("""() => {
            const c = document.querySelector('.scv .scv-edges');
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
            return n;
        }""")
        assert drawn > 1000
        # pin a node, ablate it through Python, read each task's loss change
        node = "blocks.0.mlp.hook_post:3"
        point = page.evaluate(f"document.querySelector('.scv').scv.nodePoint('{node}')")
        page.mouse.click(point["x"], point["y"])
        info = page.locator(".scv .scv-info")
        info.locator(".scv-ablate").click()
        info.locator("th", has_text="Δ").wait_for(timeout=120_000)
        text = info.inner_text()
        assert "mean-ablation at step" in text
        assert all(task in text for task in open_run(viewer_run).timeline().tasks)
        page.screenshot(path=str(root / "jupyterlab.png"))
        assert not [e for e in errors if any(word in e for word in ours)], errors
        context.close()
