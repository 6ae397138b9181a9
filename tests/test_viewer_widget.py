"""CircuitViewer: what it sends to the browser, what it takes back, and ablation messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from viewer_run import viewer_run

from sparsecircuits.checkpoint import list_checkpoints, load_model
from sparsecircuits.circuits.ablate import ablate, evaluate

pytest.importorskip("anywidget")

from sparsecircuits.viewer import CircuitViewer, decode
from sparsecircuits.viewer.bundle import build_bundle
from sparsecircuits.viewer.page import module_source

__all__ = ["viewer_run"]  # the fixture


@pytest.fixture(scope="module")
def widget(viewer_run: Path) -> CircuitViewer:
    return CircuitViewer(viewer_run, task="quote")


def test_widget_sends_the_bundle_once_as_binary(widget: CircuitViewer, viewer_run: Path) -> None:
    from ipywidgets.widgets.widget import _remove_buffers

    state = widget.get_state()
    assert state["bundle"] == build_bundle(viewer_run)
    assert state["_esm"] == module_source()
    assert (state["view"], state["tasks"], state["step_index"]) == ("circuits", ["quote"], 0)
    assert state["can_ablate"] is True
    stripped, paths, buffers = _remove_buffers(state)
    assert paths == [["bundle"]] and len(buffers) == 1  # a binary buffer, not JSON
    assert "bundle" not in stripped
    assert decode(bytes(buffers[0])).header["tasks"][0]["name"] in widget.task_names


def test_widget_carries_the_time_panel(widget: CircuitViewer, viewer_run: Path) -> None:
    from sparsecircuits.rundir import RunDir

    state = widget.get_state()
    sent = decode(state["bundle"])
    analysed = json.loads(RunDir(viewer_run).trajectory.read_text())
    assert sent.header["time"]["missing"] is None
    np.testing.assert_allclose(sent.arrays["trajectory.weights"],
                               np.array(analysed["trajectory"]["weights"]["coords"])[:, :2],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sent.arrays["similarity.jaccard"].astype(float),
                               analysed["similarity"]["matrices"]["jaccard"], atol=1e-3)
    assert sent.header["time"]["oscillation"]["flipping"] == analysed["oscillation"]["flipping"]
    assert state["oscillating"] is False
    widget.set_state({"oscillating": True})  # the panel's toggle, from the browser
    assert widget.oscillating is True
    widget.oscillating = False


def test_widget_takes_state_from_the_browser(widget: CircuitViewer) -> None:
    widget.set_state({"step_index": 2, "threshold": 0.05, "color_by": "status",
                      "selected": ["blocks.0.mlp.hook_post:3"], "view": "weights"})
    assert widget.step_index == 2 and widget.threshold == 0.05
    assert widget.color_by == "status" and widget.selected == ["blocks.0.mlp.hook_post:3"]
    widget.step_index = 10_000
    assert widget.step_index == len(widget.steps) - 1
    widget.set_state({"step_index": 0, "threshold": 0.0, "color_by": "sign", "selected": [],
                      "view": "circuits"})


def test_widget_refuses_unknown_tasks(viewer_run: Path) -> None:
    with pytest.raises(ValueError, match="no circuits of"):
        CircuitViewer(viewer_run, task="no_such_task")
    assert CircuitViewer(viewer_run).view == "weights"


def test_ablation_message_matches_the_ablation_api(widget: CircuitViewer,
                                                   viewer_run: Path) -> None:
    sent = []
    widget.send = lambda content, buffers=None: sent.append(content)
    nodes = ["blocks.0.mlp.hook_post:3", "blocks.0.attn.hook_v:1", "tokens:5"]
    widget._handle_custom_msg({"type": "ablate", "step_index": 1, "nodes": nodes}, [])
    (reply,) = sent
    assert reply["type"] == "ablation" and reply["step_index"] == 1
    assert reply["step"] == widget.steps[1] and reply["method"] == "mean"
    assert reply["skipped"] == ["tokens:5"]  # no hook point
    assert set(reply["results"]) == set(widget.task_names)
    ckpt = next(c for c in list_checkpoints(viewer_run) if int(c.name) == widget.steps[1])
    model, _ = load_model(ckpt)
    for task, result in reply["results"].items():
        loss, _ = evaluate(model, task)
        with ablate(model, nodes[:2], method="mean", reference=task):
            ablated, _ = evaluate(model, task)
        assert result["loss"] == pytest.approx(loss, abs=1e-6)
        assert result["ablated"] == pytest.approx(ablated, abs=1e-6)
        assert result["delta"] == pytest.approx(ablated - loss, abs=1e-6)


def test_ablation_errors_come_back_as_messages(widget: CircuitViewer) -> None:
    sent = []
    widget.send = lambda content, buffers=None: sent.append(content)
    widget._handle_custom_msg({"type": "ablate", "step_index": 999, "nodes": []}, [])
    widget._handle_custom_msg({"type": "something else"}, [])
    (reply,) = sent
    assert reply["type"] == "ablation" and "error" in reply
