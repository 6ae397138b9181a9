"""graphml_text against networkx.read_graphml (the oracle) and networkx's own writer."""

from __future__ import annotations

import io
import math
from typing import Any

import networkx as nx
import pytest
from test_circuits_planted import PLANTED, one_thread, planted_model, planted_task

from sparsecircuits.circuits.graph import weight_graph
from sparsecircuits.circuits.graphml import graphml_text
from sparsecircuits.circuits.prune import PruneConfig, find_circuits
from sparsecircuits.config import config_from_dict
from sparsecircuits.model import SparseGPT

__all__ = ["one_thread", "planted_task"]  # fixtures used here

NASTY = "a<&>\"'b ]]> \t tab\nnewline\r\ncrlf  ünïcode ☃ "


def _read(text: str) -> nx.DiGraph:
    graph = nx.read_graphml(io.BytesIO(text.encode("utf-8")))
    for key in ("node_default", "edge_default"):  # the reader adds these, empty
        assert graph.graph.pop(key, {}) == {}
    return graph


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type; floats compared by repr (nan, -0.0)."""
    if type(a) is not type(b):
        return False
    return repr(a) == repr(b) if isinstance(a, float) else a == b


def _expected(attrs: dict[str, Any], widen: frozenset[str] = frozenset()) -> dict[str, Any]:
    """What GraphML keeps of ``attrs``: no None values, ``widen`` names as floats."""
    return {k: float(v) if k in widen else v for k, v in attrs.items() if v is not None}


def _assert_attrs(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    assert set(got) == set(want), where
    for k, v in want.items():
        assert _same(got[k], v), f"{where} {k}: {got[k]!r} != {v!r}"


def _assert_round_trip(graph: nx.DiGraph, read: nx.DiGraph,
                       widen: frozenset[str] = frozenset()) -> None:
    """``read`` (from GraphML) holds ``graph`` with string node ids, None values left out."""
    assert isinstance(read, nx.DiGraph) and read.is_directed()
    assert set(read.nodes) == {str(n) for n in graph.nodes}
    assert set(read.edges) == {(str(u), str(v)) for u, v in graph.edges}
    _assert_attrs(read.graph, _expected(graph.graph), "graph")
    for n, attrs in graph.nodes(data=True):
        _assert_attrs(read.nodes[str(n)], _expected(attrs, widen), f"node {n!r}")
    for u, v, attrs in graph.edges(data=True):
        _assert_attrs(read.edges[str(u), str(v)], _expected(attrs), f"edge {u!r} -> {v!r}")


def _networkx_round_trip(graph: nx.DiGraph) -> nx.DiGraph:
    """networkx's writer and reader, after dropping None values (its writer rejects them)."""
    plain = nx.DiGraph()
    plain.graph.update(_expected(graph.graph))
    plain.add_nodes_from((n, _expected(d)) for n, d in graph.nodes(data=True))
    plain.add_edges_from((u, v, _expected(d)) for u, v, d in graph.edges(data=True))
    buffer = io.BytesIO()
    nx.write_graphml(plain, buffer, infer_numeric_types=True)  # int and float share "mixed"
    return _read(buffer.getvalue().decode("utf-8"))


def _assert_same_as_networkx(graph: nx.DiGraph) -> None:
    ours, theirs = _read(graphml_text(graph)), _networkx_round_trip(graph)
    assert set(ours.nodes) == set(theirs.nodes) and set(ours.edges) == set(theirs.edges)
    _assert_attrs(ours.graph, theirs.graph, "graph")
    for n in theirs.nodes:
        _assert_attrs(ours.nodes[n], theirs.nodes[n], f"node {n!r}")
    for u, v in theirs.edges:
        _assert_attrs(ours.edges[u, v], theirs.edges[u, v], f"edge {u!r} -> {v!r}")


def hand_graph(nasty: str = NASTY) -> nx.DiGraph:
    graph = nx.DiGraph(name=nasty, count=3, big=2**70, ratio=0.1, flag=True, off=False,
                       missing=None, empty="")
    graph.add_node("blocks.0.mlp.hook_post:180", layer=0, site="blocks.0.mlp.hook_post",
                   index=180, head=None, bias=-1.2345678901234567e-08, mixed=1)
    graph.add_node(nasty, layer=-1, site=nasty, index=0, head=2, bias=float("inf"), mixed=2.5)
    graph.add_node("  spaced id  ", bias=float("nan"), mixed=None)
    graph.add_node("bare")
    graph.add_node(7, bias=-0.0, label="")  # a non-string id is written as str(id)
    graph.add_edge("blocks.0.mlp.hook_post:180", nasty, weight=1 / 3, sign=1, param="p<1>",
                   kind="mlp_out", keep=True)
    graph.add_edge(nasty, "  spaced id  ", weight=-1e300, sign=-1, param="", kind="qk",
                   keep=None)
    graph.add_edge("bare", 7)
    graph.add_edge(7, "bare", weight=float("-inf"), param=nasty)
    return graph


def test_hand_graph_round_trips() -> None:
    graph = hand_graph()
    text = graphml_text(graph)
    assert text.isascii()
    _assert_round_trip(graph, _read(text), widen=frozenset({"mixed"}))
    assert 'attr.name="mixed" attr.type="double"' in text
    assert 'attr.name="missing"' not in text and 'attr.name="head"' in text
    # networkx's writer leaves carriage returns raw, so its reader turns them into newlines
    _assert_same_as_networkx(hand_graph(NASTY.replace("\r", "")))


def test_empty_and_undirected_graphs() -> None:
    _assert_round_trip(nx.DiGraph(), _read(graphml_text(nx.DiGraph())))
    undirected = nx.Graph()
    undirected.add_edge("a", "b", weight=0.5)
    read = nx.read_graphml(io.BytesIO(graphml_text(undirected).encode()))
    assert not read.is_directed() and read.edges["b", "a"]["weight"] == 0.5


def test_weight_graph_round_trips() -> None:
    config = config_from_dict({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2,
                                         "d_head": 16, "d_mlp": 64}})
    graph = weight_graph(SparseGPT(config.model))
    graph.graph["step"] = 10
    assert graph.number_of_edges() > 1000
    _assert_round_trip(graph, _read(graphml_text(graph)))
    _assert_same_as_networkx(graph)


def test_circuit_graph_round_trips(planted_task: str) -> None:
    model = planted_model()
    config = PruneConfig(max_importance_nodes=2)  # the other nodes keep importance None
    circuit = find_circuits(model, [PLANTED], weight_graph(model), config=config)[PLANTED].graph
    circuit.graph["step"] = 10
    importance = nx.get_node_attributes(circuit, "importance")
    assert None in importance.values() and circuit.number_of_edges() > 0
    _assert_round_trip(circuit, _read(graphml_text(circuit)))
    _assert_same_as_networkx(circuit)


def test_unsolved_circuit_graph_round_trips(planted_task: str) -> None:
    model = planted_model()
    graph = weight_graph(model)
    model.unembed.W.data.mul_(0.01)
    circuit = find_circuits(model, [PLANTED], graph,
                            config=PruneConfig(target_loss=0.15))[PLANTED].graph
    assert circuit.graph["loss_circuit"] is None and circuit.number_of_nodes() == 0
    _assert_round_trip(circuit, _read(graphml_text(circuit)))


@pytest.mark.parametrize(("scope", "value", "words"), [
    ("edge", [1, 2], "'tags' has a value of type list"),
    ("node", {"a": 1}, "'tags' has a value of type dict"),
    ("graph", (1,), "'tags' has a value of type tuple"),
    ("node", "x", "'tags' mixes values of types int, str"),
    ("edge", True, "'tags' mixes values of types bool, int"),
])
def test_unsupported_values_name_the_attribute(scope: str, value: Any, words: str) -> None:
    graph = nx.DiGraph(tags=1 if scope != "graph" else value)
    graph.add_node("a", tags=1)
    graph.add_node("b", tags=value if scope == "node" else 2)
    graph.add_edge("a", "b", tags=1)
    graph.add_edge("b", "a", tags=value if scope == "edge" else 2)
    with pytest.raises(TypeError, match=f"{scope} attribute {words}"):
        graphml_text(graph)


def test_unwritable_text_is_refused() -> None:
    graph = nx.DiGraph()
    graph.add_node("a", site="bell\x07")
    with pytest.raises(ValueError, match="'site'"):
        graphml_text(graph)


def test_multigraph_edge_keys_come_back_as_keys() -> None:
    graph = nx.MultiDiGraph(kind="timeline")
    graph.add_edge("blocks.0.attn.hook_v:3", "blocks.0.hook_attn_out:7", key="blocks.0.attn.o.W",
                   weight=0.5)
    graph.add_edge("blocks.0.attn.hook_v:3", "blocks.0.hook_attn_out:7", key="residual",
                   weight=1.0)
    graph.add_edge("x", "y", key="<&>", weight=-2.0)
    read = nx.read_graphml(io.BytesIO(graphml_text(graph).encode()), force_multigraph=True)
    assert isinstance(read, nx.MultiDiGraph)
    assert set(read.edges(keys=True)) == set(graph.edges(keys=True))
    for u, v, key, attrs in graph.edges(keys=True, data=True):
        _assert_attrs(read.edges[u, v, key], attrs, f"edge {key}")


def test_floats_are_exact() -> None:
    values = [0.1, 1 / 3, math.pi, 5e-324, 1.7976931348623157e308, -2.5e-17, 1e16, 123456789.0]
    graph = nx.DiGraph()
    graph.add_nodes_from((str(i), {"x": v}) for i, v in enumerate(values))
    read = _read(graphml_text(graph))
    assert [read.nodes[str(i)]["x"] for i in range(len(values))] == values
