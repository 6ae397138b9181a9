"""The exported viewer page in headless Chromium (Debian's, through Playwright), offline.

Skipped where no browser can be driven, except under CI (``CI=true``), where that fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from viewer_run import planted_run, viewer_run

from sparsecircuits import open_run
from sparsecircuits.viewer import _browser, decode, export_html
from sparsecircuits.viewer.bundle import build_bundle

__all__ = ["planted_run", "viewer_run"]  # the fixtures

_MISSING = _browser.available()
if _MISSING and os.environ.get("CI", "").lower() == "true":
    pytest.fail(f"browser tests cannot run under CI: {_MISSING}", pytrace=False)
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))


@pytest.fixture(scope="module")
def page_path(viewer_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_html(viewer_run, tmp_path_factory.mktemp("page") / "viewer.html")


@pytest.fixture(scope="module")
def browser():
    with _browser.browser() as b:
        yield b


def _open(browser, path: Path):
    page, log = _browser.offline_page(browser)
    page.goto(path.as_uri())
    page.wait_for_selector(".scv[data-ready='1']", timeout=30_000)
    return page, log


@pytest.fixture
def page(browser, page_path: Path):
    page, log = _open(browser, page_path)
    yield page, log
    page.context.close()


def _drawn(page) -> dict[str, int]:
    root = page.locator(".scv")
    return {key: int(root.get_attribute(f"data-{key}"))
            for key in ("step-index", "edges-drawn", "dying-drawn", "nodes-drawn")}


def _slide(page, i: int) -> None:
    page.eval_on_selector(".scv-slider input[type=range]",
                          "(el, i) => { el.value = String(i); "
                          "el.dispatchEvent(new Event('input', {bubbles: true})); }", i)


def test_page_is_self_contained(page_path: Path) -> None:
    text = page_path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert "<script src" not in text and "<link" not in text


def test_page_loads_offline_without_errors(page) -> None:
    page, log = page
    page.wait_for_timeout(200)
    assert log == {"requests": [], "errors": [], "failed": []}


def test_slider_draws_the_timelines_edges_at_every_checkpoint(page, viewer_run: Path) -> None:
    page, log = page
    present = open_run(viewer_run).timeline().weight_graph.edges.present
    for i in [*range(present.shape[1]), 0]:
        _slide(page, i)
        drawn = _drawn(page)
        assert drawn["step-index"] == i
        assert drawn["edges-drawn"] == int(present[:, i].sum())
    page.locator(".scv").focus()
    page.keyboard.press("ArrowRight")
    assert _drawn(page)["step-index"] == 1
    page.keyboard.press("ArrowLeft")
    assert _drawn(page)["step-index"] == 0
    assert not log["errors"]


def test_status_threshold_and_circuits_match_the_bundle(page, viewer_run: Path) -> None:
    page, log = page
    bundle = decode(build_bundle(viewer_run))
    present, weights = bundle.edge_presence(), bundle.edge_weights()
    t = present.shape[1] - 1
    state = page.evaluate(f"window.scv.set({{step_index: {t}, color_by: 'status'}})")
    assert state["edges_drawn"] == int(present[:, t].sum())
    assert state["dying_drawn"] == int((present[:, t - 1] & ~present[:, t]).sum())
    threshold = float(np.nanmedian(np.abs(weights[:, t])))
    state = page.evaluate(f"window.scv.set({{color_by: 'sign', threshold: {threshold}}})")
    assert state["edges_drawn"] == int((np.abs(np.nan_to_num(weights[:, t])) >= threshold).sum())
    for task in bundle.header["tasks"]:
        state = page.evaluate(
            f"window.scv.set({{threshold: 0, view: 'circuits', tasks: ['{task['name']}']}})")
        assert state["edges_drawn"] == int(bundle.circuit_edges(task["name"])[:, t].sum())
        assert state["nodes_drawn"] >= int(bundle.circuit_nodes(task["name"])[:, t].sum())
    assert not log["errors"]


def test_hover_and_click_pin_a_node(page, viewer_run: Path) -> None:
    page, log = page
    bundle = decode(build_bundle(viewer_run))
    task = next(t["name"] for t in bundle.header["tasks"] if bundle.circuit_nodes(t["name"]).any())
    t = int(np.flatnonzero(bundle.circuit_nodes(task).any(axis=0))[0])
    node = bundle.node_ids[int(np.flatnonzero(bundle.circuit_nodes(task)[:, t])[0])]
    page.evaluate(f"window.scv.set({{step_index: {t}, view: 'circuits', tasks: ['{task}']}})")
    point = page.evaluate(f"window.scv.nodePoint('{node}')")
    page.mouse.move(point["x"], point["y"])
    tip = page.locator(".scv-tip")
    assert tip.is_visible()
    assert node in tip.inner_text() and "importance" in tip.inner_text()
    page.mouse.click(point["x"], point["y"])
    info = page.locator(".scv-info").inner_text()
    assert node in info and "importance" in info
    assert page.locator(".scv-info .scv-ablate").count() == 0  # no Python behind the page
    page.keyboard.press("Escape")
    assert node not in page.locator(".scv-info").inner_text()
    assert not log["errors"]


def test_screenshot_is_not_blank(page, tmp_path: Path) -> None:
    page, _ = page
    png = page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
    assert len(png) > 20_000
    colours = page.evaluate("""() => {
        const v = document.querySelector('.scv');
        const front = v.querySelector('.scv-canvas');
        const c = document.createElement('canvas');
        c.width = front.width;
        c.height = front.height;
        const ctx = c.getContext('2d');
        for (const layer of v.querySelectorAll('.scv-graph canvas')) ctx.drawImage(layer, 0, 0);
        const data = ctx.getImageData(0, 0, c.width, c.height).data;
        let coloured = 0;
        for (let i = 0; i < data.length; i += 4)
          if (data[i] < 200 || data[i + 1] < 200 || data[i + 2] < 200) coloured++;
        return coloured / (data.length / 4);
    }""")
    assert colours > 0.02


_INK = """(selector) => {
    const canvas = document.querySelector(selector);
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let ink = 0;
    for (let i = 0; i < data.length; i += 4)
      if (data[i] < 200 || data[i + 1] < 200 || data[i + 2] < 200) ink++;
    return ink / (data.length / 4);
}"""


def test_time_panel_draws_and_follows_the_checkpoint(page, viewer_run: Path) -> None:
    page, log = page
    root = page.locator(".scv")
    assert root.get_attribute("data-time") == "1"
    assert page.evaluate(_INK, ".scv-path") > 0.01  # the path, its axes and labels
    assert page.evaluate(_INK, ".scv-similarity") > 0.2  # mostly the matrix
    steps = open_run(viewer_run).steps
    for i in range(len(steps)):  # scrubbing moves the panel's cursor
        _slide(page, i)
        assert root.get_attribute("data-time-step") == str(i)
    page.locator(".scv-path").scroll_into_view_if_needed()  # below the graph
    for i in (1, 0, len(steps) - 1):  # clicking a point on the path goes to its checkpoint
        point = page.evaluate(f"window.scv.pathPoint({i})")
        page.mouse.click(point["x"], point["y"])
        assert _drawn(page)["step-index"] == i
        assert root.get_attribute("data-time-step") == str(i)
    for canvas, select, choice in ((".scv-similarity", "similarity", "jaccard"),
                                   (".scv-path", "path of", "masks")):
        image = f"document.querySelector('{canvas}').toDataURL()"
        before = page.evaluate(image)
        page.select_option(f".scv-time select[aria-label='{select}']", choice)
        assert page.evaluate(image) != before
    assert page.locator(".scv-time input[type=checkbox]").count() == 0  # none oscillates
    assert "0 of" in page.locator(".scv-time").inner_text()
    assert log == {"requests": [], "errors": [], "failed": []}


def test_oscillating_weights_are_highlighted(browser, planted_run, tmp_path: Path) -> None:
    root, _ = planted_run
    bundle = decode(build_bundle(root))
    edges = bundle.arrays["oscillating_edge"]
    present = bundle.edge_presence()[edges]
    page, log = _open(browser, export_html(root, tmp_path / "planted.html"))
    box = page.locator(".scv-time input[type=checkbox]")
    drawn = lambda: int(page.locator(".scv").get_attribute("data-oscillating-drawn"))  # noqa: E731
    assert f"highlight the {len(edges)} oscillating" in page.locator(".scv-time").inner_text()
    assert drawn() == 0
    box.check()
    for t in range(present.shape[1]):
        _slide(page, t)
        assert drawn() == present[:, t].sum()
    assert "oscillates with the cycle" in page.locator(".scv-controls").inner_text()
    box.uncheck()
    assert drawn() == 0
    assert log == {"requests": [], "errors": [], "failed": []}
    page.context.close()


def test_time_panel_says_why_it_is_empty(browser, viewer_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "run"
    shutil.copytree(viewer_run, root, ignore=shutil.ignore_patterns("viewer", "analysis"))
    page, log = _open(browser, export_html(root))
    assert page.locator(".scv").get_attribute("data-time") == "0"
    assert page.locator(".scv-time canvas").count() == 0
    assert "sparsecircuits analyze" in page.locator(".scv-time").inner_text()
    assert page.evaluate("window.scv.pathPoint(0)") is None
    assert log == {"requests": [], "errors": [], "failed": []}
    page.context.close()
