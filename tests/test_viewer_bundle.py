"""The viewer's bundle: decoded in Python it holds the timeline's presence, weights, circuits
and losses; it is cached in the run folder and rebuilt when the run changes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from viewer_run import viewer_run

from sparsecircuits import open_run
from sparsecircuits.circuits.layout import layout
from sparsecircuits.circuits.timeline import CircuitTimeline
from sparsecircuits.rundir import RunDir
from sparsecircuits.viewer.bundle import build_bundle, decode, encode

__all__ = ["viewer_run"]  # the fixture


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
