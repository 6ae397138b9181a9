"""The viewer's bundle: decoded in Python it holds the timeline's presence, weights, circuits,
losses and time analyses; it is cached in the run folder and rebuilt when the run or its
analyses change."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from viewer_run import planted_run, viewer_run

from sparsecircuits import open_run
from sparsecircuits import trajectory as tj
from sparsecircuits.checkpoint import write_json
from sparsecircuits.circuits.layout import layout
from sparsecircuits.circuits.timeline import CircuitTimeline
from sparsecircuits.figures.style import NEUTRAL, OKABE_ITO
from sparsecircuits.rundir import RunDir
from sparsecircuits.viewer import bundle as bundle_module
from sparsecircuits.viewer.bundle import build_bundle, decode, encode
from sparsecircuits.viewer.page import module_source

__all__ = ["planted_run", "viewer_run"]  # the fixtures


@pytest.fixture(scope="module")
def timeline(viewer_run: Path) -> CircuitTimeline:
    return open_run(viewer_run).timeline()


@pytest.fixture(scope="module")
def bundle(viewer_run: Path):
    return decode(encode(viewer_run))


def test_bundle_round_trips_the_weight_graph(bundle, timeline: CircuitTimeline) -> None:
    edges = timeline.weight_graph.edges
    assert bundle.edge_keys == list(edges.keys)
    np.testing.assert_array_equal(bundle.edge_presence(), edges.present)
    weights = bundle.edge_weights()
    np.testing.assert_array_equal(np.isnan(weights), ~edges.present)
    expected = edges.value[edges.present]
    np.testing.assert_allclose(weights[edges.present], expected, rtol=1e-3, atol=1e-7)
    assert bundle.header["checkpoints"]["steps"] == timeline.steps.tolist()
    assert bundle.header["checkpoints"]["sources"] == list(timeline.sources)
    assert bundle.header["checkpoints"]["edge_counts"] == edges.present.sum(0).tolist()
    kinds = bundle.header["kinds"]
    assert [kinds[k] for k in bundle.arrays["edge_kind"]] == [a["kind"] for a in edges.attrs]


def test_bundle_nodes_sit_at_the_shared_layout(bundle, viewer_run: Path) -> None:
    positions = layout(open_run(viewer_run).config.model)
    assert bundle.node_ids == list(positions)
    xy = np.array(list(positions.values()), dtype=np.float32)
    np.testing.assert_array_equal(bundle.arrays["node_x"], xy[:, 0])
    np.testing.assert_array_equal(bundle.arrays["node_y"], xy[:, 1])
    assert [b["y"] for b in bundle.header["bands"]] == sorted(set(xy[:, 1].astype(int).tolist()))


def test_bundle_round_trips_circuits(bundle, timeline: CircuitTimeline) -> None:
    index = {node: i for i, node in enumerate(bundle.node_ids)}
    row = {key: i for i, key in enumerate(bundle.edge_keys)}
    assert [t["name"] for t in bundle.header["tasks"]] == list(timeline.tasks)
    for info in bundle.header["tasks"]:
        circuit = timeline.circuits[info["name"]]
        nodes = np.zeros((len(index), len(timeline.steps)), dtype=bool)
        importance = np.full(nodes.shape, np.nan)
        for key, present, value in zip(circuit.nodes.keys, circuit.nodes.present,
                                       circuit.nodes.value, strict=True):
            nodes[index[key]], importance[index[key]] = present, value
        np.testing.assert_array_equal(bundle.circuit_nodes(info["name"]), nodes)
        np.testing.assert_allclose(bundle.circuit_importance(info["name"]), importance,
                                   rtol=1e-3, atol=1e-6, equal_nan=True)
        edges = np.zeros_like(timeline.weight_graph.edges.present)
        for key, present in zip(circuit.edges.keys, circuit.edges.present, strict=True):
            edges[row[key]] = present
        np.testing.assert_array_equal(bundle.circuit_edges(info["name"]), edges)
        assert info["extracted"] == circuit.extracted.tolist()
        assert info["solved"] == [bool(a.get("solved")) for a in circuit.attrs]
    assert any(bundle.circuit_nodes(t).any() for t in timeline.tasks), "no circuit to check"


def test_bundle_round_trips_the_loss_matrix(bundle, viewer_run: Path) -> None:
    matrix = open_run(viewer_run).loss_matrix()
    np.testing.assert_allclose(bundle.arrays["loss"], matrix.loss, rtol=1e-6)
    assert bundle.header["loss"]["sources"] == list(matrix.sources)
    assert bundle.header["loss"]["trained"] == list(matrix.trained)


def test_bundle_arrays_are_aligned_typed_arrays(viewer_run: Path) -> None:
    data = encode(viewer_run)
    header_length = int.from_bytes(data[8:12], "little")
    start = 12 + header_length
    assert start % 8 == 0
    arrays = decode(data).header["arrays"]
    assert arrays
    for spec in arrays.values():
        assert spec["offset"] % 8 == 0
    assert data[:4] == b"SCVB"


def test_bundle_is_cached_until_the_run_changes(viewer_run: Path) -> None:
    path = RunDir(viewer_run).bundle
    first = build_bundle(viewer_run)
    assert path.read_bytes() == first
    stamp = path.stat().st_mtime_ns
    assert build_bundle(viewer_run) == first
    assert path.stat().st_mtime_ns == stamp  # reused, not rewritten
    evals = RunDir(viewer_run).evals
    os.utime(evals, ns=(evals.stat().st_atime_ns, evals.stat().st_mtime_ns + 10**9))
    build_bundle(viewer_run)
    assert path.stat().st_mtime_ns != stamp  # the run changed: rebuilt
    assert decode(path.read_bytes()).header["fingerprint"] != decode(first).header["fingerprint"]
    stamp = path.stat().st_mtime_ns
    analyses = RunDir(viewer_run).trajectory
    os.utime(analyses, ns=(analyses.stat().st_atime_ns, analyses.stat().st_mtime_ns + 10**9))
    build_bundle(viewer_run)
    assert path.stat().st_mtime_ns != stamp  # analysed again: rebuilt


def test_bundle_round_trips_the_time_analyses(bundle, viewer_run: Path) -> None:
    numbers = tj.analyze(open_run(viewer_run))  # computed here, not read from the run folder
    time = bundle.header["time"]
    assert time["missing"] is None and time["period"] == 2
    for kind in ("weights", "masks"):
        expected = numbers["trajectory"][kind]
        np.testing.assert_allclose(bundle.arrays[f"trajectory.{kind}"],
                                   np.array(expected["coords"])[:, :2], rtol=1e-5, atol=1e-6)
        for key in ("explained", "explained_first2", "closure", "closure_pc12"):
            assert time["trajectory"][kind][key] == pytest.approx(expected[key])
    similarity = numbers["similarity"]
    steps = bundle.header["checkpoints"]["steps"]
    assert time["similarity"]["schedule_period"] == similarity["schedule_period"]
    for name, matrix in similarity["matrices"].items():
        carried = time["similarity"]["matrices"][name]
        first = len(steps) - len(matrix)  # the displacement matrices start at checkpoint 1
        assert carried["checkpoints"] == list(range(first, len(steps)))
        assert carried["period"] == similarity["periods"][name]
        np.testing.assert_allclose(bundle.arrays[f"similarity.{name}"].astype(float), matrix,
                                   atol=1e-3)
    oscillation = numbers["oscillation"]
    for key in ("period", "checkpoints", "weights", "flipping", "oscillating", "alpha"):
        assert time["oscillation"][key] == oscillation[key]
    assert time["oscillation"]["carried"] == len(oscillation["oscillating_weights"]) == 0


def test_bundle_carries_the_oscillating_weights_as_edges(planted_run, monkeypatch) -> None:
    root, planted = planted_run
    bundle = decode(encode(root))
    x, _, spans = tj.run_weights(open_run(root))
    assert bundle.header["checkpoints"]["steps"] == open_run(root).steps
    start = {name: a for name, a, _ in spans}
    in_graph = [w for w in planted if not w[0].endswith(".b")]
    edges = bundle.arrays["oscillating_edge"]
    assert len(edges) == len(in_graph) and bundle.header["time"]["oscillation"] == {
        **bundle.header["time"]["oscillation"], "carried": len(in_graph),
        "outside_graph": len(planted) - len(in_graph), "listed": True}
    np.testing.assert_allclose(bundle.arrays["oscillating_power"], [w[2] for w in in_graph])
    presence, weights = bundle.edge_presence(), bundle.edge_weights()
    for e, (tensor, index, _) in zip(edges.tolist(), in_graph, strict=True):
        column = x[:, start[tensor] + index]  # the weight itself, through the checkpoints
        assert bundle.edge_keys[e][2] == tensor
        np.testing.assert_array_equal(presence[e], column != 0)
        np.testing.assert_allclose(weights[e][column != 0], column[column != 0], rtol=1e-3)
    monkeypatch.setattr(bundle_module, "MAX_OSCILLATING", 2)
    capped = decode(encode(root))
    np.testing.assert_array_equal(capped.arrays["oscillating_edge"], edges[:2])  # the strongest
    assert capped.header["time"]["oscillation"]["carried"] == 2


def test_bundle_says_why_it_has_no_time_analyses(viewer_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "run"
    shutil.copytree(viewer_run, root, ignore=shutil.ignore_patterns("viewer", "analysis"))
    bundle = decode(encode(root))
    assert "sparsecircuits analyze" in bundle.header["time"]["missing"]
    assert not [name for name in bundle.arrays if name.startswith(("trajectory.", "similarity."))]
    files = RunDir(root)
    files.trajectory.parent.mkdir()
    numbers = json.loads(RunDir(viewer_run).trajectory.read_text())
    write_json(files.trajectory, {**numbers, "steps": numbers["steps"][:-1]})
    assert "stale" in decode(encode(root)).header["time"]["missing"]
    files.trajectory.write_text("{not json")
    assert "cannot be read" in decode(encode(root)).header["time"]["missing"]
    run = open_run(root)
    time, arrays = bundle_module._time_analyses(run, run.steps[:1], {}, run.config.model)
    assert time == {"missing": "one checkpoint: no path through time"} and arrays == {}


def test_viewer_draws_in_the_figures_colours() -> None:
    source = module_source()
    for name, table in (("viridis", "VIRIDIS"), ("RdBu_r", "RDBU_R"), ("cividis", "CIVIDIS")):
        found = re.search(rf"const {table} = (\[.*?\]\]);", source, re.S)
        assert found, table
        stops = np.array(json.loads(found.group(1)))
        cmap = matplotlib.colormaps[name]
        expected = np.array([cmap(x)[:3] for x in np.linspace(0, 1, len(stops))]) * 255
        np.testing.assert_allclose(stops, expected, atol=0.51)
    assert f'const NEUTRAL = "{NEUTRAL}"' in source
    assert f'const OSCILLATING_COLOR = "{OKABE_ITO["reddish_purple"]}"' in source
