"""The circuit timeline on constructed graphs and loss matrices with known answers.

(``tests/test_cli_run.py`` reads a real run's files end to end.)"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from sparsecircuits.analysis import RunAnalysis, compare, report
from sparsecircuits.behaviour import behaviour
from sparsecircuits.circuits.export import export_run, spells
from sparsecircuits.circuits.timeline import CircuitTimeline, Where

# --- a constructed run: two tasks a, b, round robin, 3 cycles, a checkpoint per block ----------

STEPS = [9, 19, 29, 39, 49, 59]
SOURCES = ["a", "b"] * 3
EDGES = {
    "e0": ("blocks.0.hook_resid_pre:0", "blocks.0.mlp.hook_post:0", "blocks.0.mlp.W_in"),
    "e1": ("blocks.0.hook_resid_pre:1", "blocks.0.mlp.hook_post:0", "blocks.0.mlp.W_in"),
    "e2": ("blocks.0.hook_resid_pre:2", "blocks.0.mlp.hook_post:1", "blocks.0.mlp.W_in"),
    "e3": ("blocks.0.hook_resid_pre:3", "blocks.0.mlp.hook_post:1", "blocks.0.mlp.W_in"),
    "e4": ("blocks.0.hook_resid_pre:0", "blocks.0.mlp.hook_post:1", "blocks.0.mlp.W_in"),
}
WEIGHT_GRAPH = {"e0": "111111", "e1": "110011", "e2": "011111", "e3": "101010", "e4": "000111"}
CIRCUITS = {  # None: not extracted at that checkpoint
    "a": ["e0 e1", "e0 e1", "e0", "e0 e4", "e0 e1 e4", "e0 e1 e4"],
    "b": ["e0", "e2", None, "e2", "e2", "e2"],
}


def weight(name: str, t: int) -> float:
    return (int(name[1]) + 1) * (1 + t / 10)


def graph(edges: list[str], t: int, **attrs: object) -> nx.DiGraph:
    g = nx.DiGraph(**attrs)
    for name in edges:
        u, v, param = EDGES[name]
        for node in (u, v):
            site, index = node.split(":")
            g.add_node(node, layer=0, site=site, index=int(index), head=None, importance=1.0)
        g.add_edge(u, v, weight=weight(name, t), sign=1, param=param, kind="weight")
    return g


def write_evals(run: Path, orders: list[list[str]], loss_after: list[float], steps_per_block: int,
                metrics_losses: tuple[float, ...] = ()) -> None:
    """evals.jsonl of a schedule (one order per cycle) where a source's loss is
    ``loss_after[d]``, d = blocks since its last exposure (clipped), 5.0 before its first.
    With ``metrics_losses``, metrics.jsonl logs every step, the block's steps at these losses."""
    run.mkdir(parents=True, exist_ok=True)
    last: dict[str, int] = {}
    sources = sorted({s for order in orders for s in order})
    evals, logged = [], []
    for k, (cycle, position, source) in enumerate(
        (c, p, s) for c, order in enumerate(orders) for p, s in enumerate(order)
    ):
        last[source] = k
        step = (k + 1) * steps_per_block - 1
        losses = {
            s: {"loss": loss_after[min(k - last[s], len(loss_after) - 1)] if s in last else 5.0}
            for s in sources
        }
        evals.append({"step": step, "cycle": cycle, "block": k, "position": position,
                      "source": source, "evals": losses})
        logged += [{"step": step - steps_per_block + 1 + i, "source": source, "source_loss": x}
                   for i, x in enumerate(metrics_losses)]
    (run / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    if logged:
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logged))


def make_run(run: Path) -> Path:
    """The run folder's files the timeline does not take from graphs: its loss matrix."""
    write_evals(run, [["a", "b"]] * 3, [1.0, 2.0], steps_per_block=10)
    return run


def timeline_of(run: Path, solved_a: bool = True, empty_first_a: bool = False
                ) -> CircuitTimeline:
    """The constructed timeline: the tables above; a unsolved at its first checkpoint (or at
    every one, ``solved_a=False``), b re-extracted at the last and a at its unsolved first."""
    weight_graphs = [graph([n for n, seq in WEIGHT_GRAPH.items() if seq[t] == "1"], t)
                     for t in range(len(STEPS))]
    circuits: dict[str, list[list[nx.DiGraph]]] = {}
    for task, per_step in CIRCUITS.items():
        circuits[task] = []
        for t, edges in enumerate(per_step):
            if edges is None:
                circuits[task].append([])
                continue
            attrs = {
                "task": task, "step": STEPS[t], "seed": 0, "target_loss": 0.1,
                "solved": t != 0 and (solved_a or task != "a"), "loss_full": 0.05,
                "loss_circuit": 0.09, "loss_ablated": 0.7, "loss_random": 0.6, "n_nodes": 0,
                "n_edges": 0, "method": "mean",
            }
            if empty_first_a and task == "a" and t == 0:
                edges = ""
            circuits[task].append([graph(edges.split(), t, **attrs)])
    # b re-extracted with another seed at the last checkpoint: J = |{e2}| / |{e0, e2}| = 1/2
    circuits["b"][-1].append(graph(["e0", "e2"], 5))
    # a re-extracted at its unsolved first checkpoint: no noise floor there (not J = 1)
    circuits["a"][0].append(graph([], 0, solved=False))
    # the trainer's logged churn over each block, summed over tensors (meta.json's "churn")
    where = [Where(t // 2, t, t % 2, SOURCES[t], (t + 1, 1, 2)) for t in range(len(STEPS))]
    return CircuitTimeline.build(run, STEPS, where, weight_graphs, circuits)


def analysis_of(run: Path, **kwargs: bool) -> RunAnalysis:
    return RunAnalysis(run, behaviour(run), timeline_of(run, **kwargs))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "cyclic")


def row_of(timeline: CircuitTimeline, graph_name: str, edge: str) -> np.ndarray:
    elements = timeline.graph(graph_name).edges
    return elements.present[elements.keys.index(EDGES[edge])]


# --- presence, events, churn -------------------------------------------------------------------


def test_build_makes_presence_and_schedule(run: Path) -> None:
    timeline = timeline_of(run)
    assert timeline.steps.tolist() == STEPS
    assert timeline.cycles.tolist() == [0, 0, 1, 1, 2, 2]
    assert timeline.positions.tolist() == [0, 1] * 3
    assert timeline.sources == tuple(SOURCES)
    assert timeline.tasks == ("a", "b")
    for name, seq in WEIGHT_GRAPH.items():
        assert "".join("1" if x else "0" for x in row_of(timeline, "weight_graph", name)) == seq
    assert row_of(timeline, "a", "e4").tolist() == [False] * 3 + [True] * 3
    assert timeline.circuits["b"].extracted.tolist() == [True, True, False, True, True, True]
    weights = timeline.weight_graph.edges.value[timeline.weight_graph.edges.keys.index(EDGES["e1"])]
    np.testing.assert_allclose(weights, [2.0, 2.2, np.nan, np.nan, 2.8, 3.0])
    assert timeline.circuits["a"].attrs[1]["solved"] is True


def test_edge_forms_fades_and_recovers(run: Path) -> None:
    events = timeline_of(run).events()
    e1 = [(e.kind, e.step, e.cycle) for e in events
          if e.graph == "weight_graph" and e.param and e.element == f"{EDGES['e1'][0]} -> "
          f"{EDGES['e1'][1]}"]
    assert e1 == [("formed", 9, 0), ("faded", 29, 1), ("recovered", 49, 2)]
    # b's circuit was not extracted at step 29: no fade, no recovery of e2 there
    e2 = [e.kind for e in events if e.graph == "b" and e.element_type == "edge"
          and e.element.startswith(EDGES["e2"][0])]
    assert e2 == ["formed"]


def test_churn_split_into_own_other_rest(run: Path) -> None:
    churn = timeline_of(run).churn()
    assert [c.block for c in churn] == [1, 2, 3, 4, 5]
    assert [c.source for c in churn] == ["b", "a", "b", "a", "b"]
    expected = [  # (births, deaths, revivals) per group, worked out by hand from the tables above
        {"own": (1, 0, 0), "other": (0, 0, 0), "rest": (0, 1, 0)},
        {"own": (0, 1, 0), "other": (0, 0, 0), "rest": (0, 0, 1)},
        {"own": (0, 0, 0), "other": (1, 0, 0), "rest": (0, 1, 0)},
        {"own": (0, 0, 1), "other": (0, 0, 0), "rest": (0, 0, 1)},
        {"own": (0, 0, 0), "other": (0, 0, 0), "rest": (0, 1, 0)},
    ]
    assert [c.counts for c in churn] == expected
    assert [c.logged for c in churn] == [(t + 1, 1, 2) for t in range(1, 6)]


# --- similarity ---------------------------------------------------------------------------------


def test_jaccard_curves_and_noise_floor(run: Path) -> None:
    timeline = timeline_of(run)
    post = timeline.similarity("a", "post")
    # checkpoint 0 is unsolved: nothing to compare with, so nan rather than a Jaccard
    np.testing.assert_allclose(post["edges"], [np.nan, np.nan, 1, 0.5, 1, 1])
    # a at step 39 {e0, e4} against step 29 {e0}: Σ min |w| / Σ max |w|
    w = {name: weight(name, 3) for name in ("e0", "e4")}
    assert post["weighted_edges"][3] == pytest.approx(weight("e0", 2) / (w["e0"] + w["e4"]))
    np.testing.assert_allclose(timeline.similarity("b", "post")["edges"],
                               [np.nan, 1, np.nan, 1, 1, 1])
    np.testing.assert_allclose(timeline.similarity("a", "previous")["edges"],
                               [np.nan, np.nan, 0.5, 0.5, 2 / 3, 1])
    np.testing.assert_allclose(timeline.similarity("a", "final")["nodes"][0], 3 / 4)
    np.testing.assert_allclose(timeline.circuits["b"].noise["edges"], [np.nan] * 5 + [0.5])
    assert np.all(np.isnan(timeline.circuits["a"].noise["edges"]))
    overlap = timeline.overlap("edges")
    assert overlap.shape == (6, 2, 2)
    assert overlap[0, 0, 1] == pytest.approx(0.5)  # a {e0, e1}, b {e0}
    assert np.isnan(overlap[2, 0, 1])


def test_circuit_recovery_curves(run: Path) -> None:
    timeline = timeline_of(run)
    curves = timeline.recovery_curves("edges")
    # a's windows in cycles >= 1: J = [1, 0.5] from step 29, [1, 1] from step 49
    np.testing.assert_allclose(curves["a"], [1, 0.75])
    np.testing.assert_allclose(curves["b"], [1, 1])


# --- behaviour and comparison -------------------------------------------------------------------

CYCLIC = [["a", "b", "c"]] * 3
SHUFFLED = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"]]


def test_behaviour_recovery_score_and_savings(tmp_path: Path) -> None:
    # after an exposure the loss is 1, rises to 3, falls to 2 before the next: c(τ) = [0, 2, 1]
    write_evals(tmp_path, CYCLIC, [1.0, 3.0, 2.0], steps_per_block=2, metrics_losses=(1.5, 1.0))
    report = behaviour(tmp_path, n_boot=50)
    np.testing.assert_allclose(report.shift_curve, [0, 2, 1])
    assert report.recovery == pytest.approx((0.5, 0.5, 0.5))
    assert report.cycle_starts.tolist() == [0, 3, 6]
    assert report.prequential == pytest.approx({"a": 2.0, "b": 2.0, "c": 2.0})
    # each re-exposure regains 1.0 at its second step
    assert report.savings == {source: [2, 2] for source in "abc"}


def test_compare_cyclic_with_shuffled_control(tmp_path: Path) -> None:
    write_evals(tmp_path / "cyclic", CYCLIC, [1.0, 3.0, 2.0], steps_per_block=2)
    write_evals(tmp_path / "shuffled", SHUFFLED, [1.0, 2.0, 3.0], steps_per_block=2)
    result = compare(tmp_path / "cyclic", tmp_path / "shuffled", n_boot=50)
    rs = result["loss.recovery_score"]
    # the control's loss keeps rising (1, 2, 3): a negative signed score, (2 − 3) / (3 − 1)
    assert (rs.a, rs.b, rs.diff, rs.low, rs.high) == pytest.approx((0.5, -0.5, 1.0, 1.0, 1.0))
    assert "loss.prequential" in result
    assert "circuit.recovery_score" not in result  # no circuits extracted
    text = report(RunAnalysis.load(tmp_path / "cyclic"),
                  control=RunAnalysis.load(tmp_path / "shuffled"))
    assert "loss.recovery_score" in text and "control:" in text
    assert "need `sparsecircuits extract`" in text


def test_compare_runs_with_circuits(run: Path, tmp_path: Path) -> None:
    other = analysis_of(make_run(tmp_path / "other"))
    result = compare(analysis_of(run), other, n_boot=20)
    rest_deaths = result["churn.rest.deaths_per_block"]  # cycles >= 1: blocks 2..5
    assert rest_deaths.a == pytest.approx(2 / 4)
    assert rest_deaths.diff == 0
    summary = analysis_of(run).summary()
    assert summary["a.solved_fraction"] == pytest.approx(5 / 6)
    assert summary["b.noise_floor.edges"] == pytest.approx(0.5)
    assert any("a: no re-extraction (a.seed<k>.json) where it is solved" in note
               for note in summary["notes"])


def test_a_task_never_solved_is_noted_as_such(run: Path) -> None:
    notes = analysis_of(run, solved_a=False).summary()["notes"]
    assert "a: unsolved at every checkpoint, no circuit to follow" in notes
    assert not any(note.startswith("a: no re-extraction") for note in notes)


# --- exports ------------------------------------------------------------------------------------


def test_spells_of_presence_sequence() -> None:
    steps = [9, 19, 29, 39, 49, 59]
    assert spells([True, True, False, False, True, True], steps) == [(9, 28), (49, 59)]
    assert spells([False, False, False, True, False, False], steps) == [(39, 48)]
    assert spells([False] * 6, steps) == []


def test_export_run_writes_gexf_with_spells(run: Path) -> None:
    folder = export_run(analysis_of(run))
    assert folder == run / "exports"
    g = nx.read_gexf(folder / "weight_graph.gexf")
    assert g.graph["mode"] == "dynamic"
    spans = {(u, v, d["param"]): d["spells"] for u, v, d in g.edges(data=True)}
    assert spans[EDGES["e1"]] == [(9, 28), (49, 59)]
    assert spans[EDGES["e4"]] == [(39, 59)]
    assert g.nodes[EDGES["e3"][0]]["spells"] == [(9, 18), (29, 38), (49, 58)]
    # b's union graph spans only the checkpoints where it was extracted
    b = nx.read_gexf(folder / "b.gexf")
    b_spans = {(u, v, d["param"]): d["spells"] for u, v, d in b.edges(data=True)}
    assert b_spans == {EDGES["e0"]: [(9, 18)], EDGES["e2"]: [(19, 59)]}
    assert not (folder / "graphml" / "00000039" / "weight_graph.graphml").exists()  # opt-in
    snapshot = nx.read_graphml(folder / "graphml" / "00000039" / "a.graphml")
    assert snapshot.number_of_edges() == 2 and snapshot.graph["cycle"] == 1
    data = json.loads((folder / "a.json").read_text())
    assert nx.node_link_graph(data, edges="edges").graph["steps"] == STEPS
    with open(folder / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    value = {(r["metric"], r["task"], int(r["step"])): r["value"] for r in rows}
    assert float(value[("jaccard.post.edges", "a", 39)]) == 0.5
    assert float(value[("churn.own.births", "b", 19)]) == 1
    assert float(value[("loss", "a", 19)]) == 2.0
    with open(folder / "events.csv") as f:
        kinds = [r["kind"] for r in csv.DictReader(f)
                 if r["graph"] == "weight_graph" and r["element_type"] == "edge"]
    assert kinds.count("recovered") == 3  # e1 once, e3 twice
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["a.noise_floor.edges"] is None and not math.isnan(summary["cycles"])


def test_an_empty_unsolved_circuit_keeps_its_attributes(run: Path) -> None:
    timeline = timeline_of(run, empty_first_a=True)
    assert timeline.circuits["a"].attrs[0]["solved"] is False
    assert np.isnan(timeline.similarity("a", "post")["edges"][:2]).all()


def test_survival_of_the_post_exposure_circuit_is_graded(tmp_path: Path) -> None:
    # a trained at checkpoint 0 with circuit {e0, e1}; e1 dies at 1, e3 (not in it) at 2
    present = [["e0", "e1", "e3"], ["e0", "e3"], ["e0"]]
    attrs = {"task": "a", "solved": True, "target_loss": 0.1}
    timeline = CircuitTimeline.build(
        tmp_path, [9, 19, 29], [Where(0, t, t, s) for t, s in enumerate(["a", "b", "b"])],
        [graph(edges, t) for t, edges in enumerate(present)],
        {"a": [[graph(["e0", "e1"], 0, **attrs)], [graph([], 1, task="a", solved=False)],
               [graph([], 2, task="a", solved=False)]]},
    )
    survival = timeline.survival("a")
    np.testing.assert_allclose(survival["edges"], [1.0, 0.5, 0.5])
    # |w| at the post-exposure checkpoint: e0 1.0, e1 2.0
    np.testing.assert_allclose(survival["mass"], [1.0, 1 / 3, 1 / 3])
    assert not timeline.ballooned("a").any()


def test_a_ballooned_circuit_is_marked_and_not_a_reference(tmp_path: Path) -> None:
    sizes = [["e0"], ["e2"], ["e0", "e1", "e2", "e3", "e4"], ["e2"]]  # the third: most of it
    attrs = {"task": "a", "solved": True, "target_loss": 0.1}
    timeline = CircuitTimeline.build(
        tmp_path, [9, 19, 29, 39], [Where(0, t, t, "a") for t in range(4)],
        [graph(list(EDGES), t) for t in range(4)],
        {"a": [[graph(edges, t, **attrs)] for t, edges in enumerate(sizes)]},
    )
    assert timeline.ballooned("a", factor=2.0).tolist() == [False, False, True, False]
    survival = timeline.survival("a", balloon_factor=2.0)["edges"]
    assert np.isnan(survival[2]) and survival[3] == 1.0
