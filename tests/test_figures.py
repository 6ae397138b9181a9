"""circuits.draw and the figures of a run, on a micro run trained and extracted once."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")

import conftest
import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_hex

from sparsecircuits import figures
from sparsecircuits.circuits.draw import NEGATIVE, POSITIVE, draw
from sparsecircuits.circuits.extract import extract_run
from sparsecircuits.circuits.layout import bands, layout, model_config
from sparsecircuits.circuits.prune import PruneConfig
from sparsecircuits.cli import main
from sparsecircuits.config import config_from_dict, validate
from sparsecircuits.figures.data import RunData
from sparsecircuits.metrics import LossMatrix
from sparsecircuits.run import open_run
from sparsecircuits.train import train

MICRO = {**conftest.MICRO, "schedule": {**conftest.MICRO["schedule"], "cycles": 3}}
"""conftest's micro config with a third cycle (the shift-averaged curve needs cycles ≥ 1)."""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro run, 3 cycles over quote and closer, extracted with 2 seeds. The micro model
    stays near chance, so the target loss is set where its circuits are solved (and small)."""
    config = config_from_dict(MICRO)
    validate(config)
    run_dir = train(config, tmp_path_factory.mktemp("figures") / "run", progress=False)
    extract_run(run_dir, seeds=2, progress=False, threads=1,
                config=PruneConfig(target_loss=0.7))
    return run_dir


@pytest.fixture(scope="module")
def graph(run: Path) -> nx.DiGraph:
    return open_run(run).weight_graph(-1)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig) -> str:
    """Every piece of text on a figure, joined."""
    return "\n".join(t.get_text() for t in fig.findobj(mpl.text.Text))


# --- draw --------------------------------------------------------------------------------------


def test_draw_weight_graph_in_the_shared_layout(graph: nx.DiGraph) -> None:
    _, ax = plt.subplots()
    assert draw(graph, ax) is ax
    weights = [d for _, _, d in graph.edges(data=True) if d["kind"] not in ("residual", "qk")]
    collections = [c for c in ax.collections if isinstance(c, LineCollection)]
    residual, weighted = collections  # grey residual edges beneath, weight edges on top
    assert len(weighted.get_segments()) == len(weights)
    linked = {n for u, v, d in graph.edges(data=True) if d["kind"] not in ("residual", "qk")
              for n in (u, v)}
    assert len(residual.get_segments()) == sum(
        d["kind"] == "residual" and u in linked and v in linked
        for u, v, d in graph.edges(data=True)) > 0
    # colour by sign: as many blue segments as positive weights
    colours = [to_hex(c) for c in weighted.get_colors()]
    assert colours.count(POSITIVE.lower()) == sum(d["weight"] > 0 for d in weights)
    assert colours.count(NEGATIVE.lower()) == sum(d["weight"] < 0 for d in weights)
    # width grows with |weight| (segments are drawn thinnest first)
    assert np.all(np.diff(weighted.get_linewidths()) >= 0)
    # nodes: only those a weight reaches, each at its layout position
    (nodes,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(nodes.get_offsets()) == len(linked)
    pos = layout(graph)
    assert {tuple(xy) for xy in np.asarray(nodes.get_offsets())} == {pos[n] for n in linked}
    # a channel whose weights all died is not drawn, though residual edges still reach it
    dead = "blocks.0.mlp.hook_post:7"
    pruned = graph.copy()
    pruned.remove_edges_from([(u, v) for u, v, d in graph.in_edges(dead, data=True)]
                             + list(graph.out_edges(dead)))
    _fig, ax = plt.subplots()
    draw(pruned, ax)
    (nodes,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(nodes.get_offsets()) == len(linked) - 1
    cfg = model_config(graph)
    assert [t.get_text() for t in ax.get_yticklabels()] == [b.label for b in bands(cfg)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "weight > 0", "weight < 0", "residual (norm gain)"]


def test_draw_circuit_shows_every_circuit_node(graph: nx.DiGraph) -> None:
    mlp = [n for n in graph if n.startswith("blocks.0.mlp.hook_post:")]
    keep = set(mlp) | {u for n in mlp for u in (*graph.predecessors(n), *graph.successors(n))}
    isolated = "blocks.0.attn.hook_v:3"
    circuit = graph.subgraph(keep | {isolated}).copy()
    circuit.remove_edges_from(list(circuit.edges(isolated)) + list(circuit.in_edges(isolated)))
    circuit.graph["task"] = "quote"
    assert 100 <= circuit.number_of_nodes() <= 1200
    _fig, ax = plt.subplots()
    draw(circuit, ax, residual=False, legend=False, title="quote")
    (nodes,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(nodes.get_offsets()) == circuit.number_of_nodes()  # the isolated node too
    assert len([c for c in ax.collections if isinstance(c, LineCollection)]) == 1
    assert ax.get_title() == "quote" and ax.get_legend() is None


def test_draw_without_model_shape_needs_a_layout(graph: nx.DiGraph) -> None:
    bare = nx.DiGraph(graph.subgraph(list(graph)[:50]))
    bare.graph.clear()
    with pytest.raises(ValueError, match="graph attributes lack"):
        draw(bare)
    _fig, ax = plt.subplots()
    draw(bare, ax, layout=layout(graph))
    assert not ax.get_yticks().size  # no model shape: no band names


def test_draw_empty_graph_says_so(graph: nx.DiGraph) -> None:
    empty = nx.DiGraph(**graph.graph)
    fig, ax = plt.subplots()
    draw(empty, ax)
    assert "nothing survives" in texts(fig)


# --- the figures -------------------------------------------------------------------------------


def test_circuit_figures(run: Path) -> None:
    ax = figures.circuit(open_run(run), "quote")
    assert ax.get_title(loc="left").startswith("quote, step ")
    assert "target 0.70" in ax.get_xlabel()
    assert figures.circuit(run, "quote", step=-3).get_title(loc="left").startswith(
        "quote, step 23:")
    assert figures.circuit(run, "quote", step=11).get_title(loc="left").startswith(
        "quote, step 11:")
    with pytest.raises(ValueError, match="no checkpoint at step 12"):
        figures.circuit(run, "quote", step=12)
    fig = figures.circuit_exposures(run, "closer")
    panels = [a for a in fig.axes if a.get_visible()]
    assert len(panels) == 3  # 3 cycles: one exposure each
    assert [a.get_title().split("\n")[0] for a in panels] == [
        f"cycle {c}, step {s}" for c, s in zip((0, 1, 2), (11, 23, 35), strict=True)]
    assert fig.get_suptitle() == "closer: circuit at the end of each exposure"
    ax = figures.circuit(run, "nope")
    assert "no circuit of 'nope'" in texts(ax.figure)


def test_edge_survival(run: Path) -> None:
    timeline = open_run(run).timeline()
    ax = figures.edge_survival(timeline)
    (image,) = ax.images
    assert image.get_array().shape[1] == len(timeline.steps)
    assert ax.get_xlabel() == "checkpoint (training step)"
    assert ax.get_title(loc="left").startswith("weight graph: edge survival")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["quote", "closer", "present"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in timeline.steps]


def test_loss_figures(run: Path) -> None:
    report = open_run(run).behaviour()
    ax = figures.loss_matrix(report)
    (image,) = ax.images
    assert image.get_array().shape == (len(report.matrix.sources), len(report.matrix.steps))
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["quote", "closer"]
    assert len(ax.figure.axes) == 2  # and its colour bar
    assert ax.figure.axes[1].get_ylabel().startswith("loss (nats)")
    fig = figures.loss_curves(report)
    assert len(fig.axes) == 2
    assert fig.axes[-1].get_xlabel() == "training step"
    assert "loss just before an exposure" in texts(fig)
    ax = figures.recovery(run, control=run)
    assert len(ax.get_lines()) == 3  # cyclic, control, zero line
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("cyclic (run): signed RS ")
    assert labels[1].startswith("control (run)")
    ax = figures.recovery(run)
    assert "no control run given" in ax.get_legend().get_title().get_text()


def test_circuit_similarity_and_churn(run: Path) -> None:
    fig = figures.jaccard(run)
    panels = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title(loc="left") for a in panels] == ["closer", "quote"]
    assert all(len(a.get_lines()) >= 2 for a in panels)  # the circuit and its noise floor
    fig = figures.churn(run)
    assert len(fig.axes) == 3
    assert [a.get_title(loc="left") for a in fig.axes] == [t for _, t in figures.plots.CHURN_GROUPS]
    assert all(len(a.patches) >= 3 * 5 for a in fig.axes)  # 3 bar series over 5 transitions


def test_missing_data_is_said_in_words() -> None:
    nan = np.full((4, 2), math.nan)
    matrix = LossMatrix(np.array([5, 11, 17, 23]), np.array([0, 0, 1, 1]), np.arange(4),
                        np.array([0, 1, 0, 1]), ("a", "b", "a", "b"), ("a", "b"), nan)
    for make, words in [
        (lambda: figures.loss_matrix(matrix), "nan"),
        (lambda: figures.loss_curves(matrix), "every evaluation is nan"),
        (lambda: figures.recovery(matrix), "every loss after an exposure is nan"),
        (lambda: figures.circuit(matrix, "a"), "no circuit timeline given"),
        (lambda: figures.circuit_exposures(matrix, "a"), "no circuit timeline given"),
        (lambda: figures.edge_survival(matrix), "no circuit timeline given"),
        (lambda: figures.jaccard(matrix), "no circuit timeline given"),
        (lambda: figures.churn(matrix), "no circuit timeline given"),
        (lambda: figures.loss_matrix(RunData("empty", missing={"behaviour": "no evals"})),
         "no evals"),
    ]:
        made = make()
        fig = made if isinstance(made, mpl.figure.Figure) else made.figure
        assert words in texts(fig), words


def test_style_is_a_context_not_a_global(run: Path) -> None:
    before = dict(mpl.rcParams)
    with figures.style():
        assert mpl.rcParams["svg.fonttype"] == "none" and mpl.rcParams["pdf.fonttype"] == 42
    figures.loss_matrix(run)
    assert dict(mpl.rcParams) == before
    assert figures.source_color("quote") == figures.source_color("quote") != \
        figures.source_color("closer")


def test_write_figures_is_byte_identical(run: Path, tmp_path: Path) -> None:
    first = figures.write_figures(run, tmp_path / "a", control=run)
    # again in another process with another string hash seed (set and dict orders differ)
    script = ("import sys; from sparsecircuits.figures import write_figures; "
              "write_figures(sys.argv[1], sys.argv[2], control=sys.argv[1])")
    subprocess.run([sys.executable, "-c", script, str(run), str(tmp_path / "b")], check=True,
                   env={**os.environ, "PYTHONHASHSEED": "12345", "MPLBACKEND": "Agg"})
    second = sorted((tmp_path / "b").iterdir(), key=lambda p: [q.name for q in first].index(p.name))
    assert [p.name for p in first] == [p.name for p in second]
    stems = {p.stem for p in first if p.suffix != ".md"}
    assert stems >= {"loss_matrix", "loss_curves", "recovery", "jaccard", "churn",
                     "edge_survival_weight_graph", "circuit_quote", "circuit_exposures_quote",
                     "edge_survival_closer"}
    assert {p.suffix for p in first} == {".pdf", ".svg", ".png", ".md"}
    assert not list((tmp_path / "a").glob(".*"))  # written through temporary files, renamed
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    index = first[-1].read_text()
    assert sum(line.startswith("- **") for line in index.splitlines()) == len(stems)
    svg = (tmp_path / "a" / "loss_matrix.svg").read_text()
    assert "<text" in svg and "<dc:date>" not in svg  # editable text, no date
    assert b"CreationDate" not in (tmp_path / "a" / "loss_matrix.pdf").read_bytes()


def test_cli_figures(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["figures", str(run), "--format", "png", "--out", str(tmp_path / "f")])
    assert (tmp_path / "f" / "loss_matrix.png").exists()
    assert not list((tmp_path / "f").glob("*.pdf"))
    assert "index.md" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        main(["figures", str(run), "--format", "gif", "--out", str(tmp_path / "g")])
    assert err.value.code == 2
    assert "formats: gif" in capsys.readouterr().err


def test_a_run_without_circuits_gets_its_loss_figures_and_says_the_rest(
        tmp_path: Path) -> None:
    config = config_from_dict({**MICRO, "schedule": {**MICRO["schedule"], "cycles": 2}})
    validate(config)
    bare = train(config, tmp_path / "bare", progress=False)
    written = figures.write_figures(bare, tmp_path / "figs", formats="png")
    index = written[-1].read_text()
    assert "Missing: no circuits: run `sparsecircuits extract` first." in index
    assert {p.stem for p in written} >= {"loss_matrix", "loss_curves", "recovery", "jaccard",
                                         "churn", "edge_survival_weight_graph"}
    ax = figures.edge_survival(bare)
    assert "sparsecircuits extract" in texts(ax.figure)
    ax = figures.recovery(bare)  # cycle 1 holds the one complete window of each source
    assert ax.get_legend().get_texts()[0].get_text().startswith("cyclic (bare): signed RS ")


def test_an_unsolved_task_is_named_with_its_loss(graph: nx.DiGraph) -> None:
    from sparsecircuits.circuits.timeline import CircuitTimeline, Where

    def unsolved(step: int) -> nx.DiGraph:
        return nx.DiGraph(**{**graph.graph, "task": "quote", "step": step, "solved": False,
                             "loss_full": 0.6 - step / 100, "target_loss": 0.15})

    steps = [5, 11, 17]
    where = [Where(0, 0, 0, "quote"), Where(0, 1, 1, "closer"), Where(1, 2, 0, "quote")]
    timeline = CircuitTimeline.build("run", steps, where, [graph] * 3,
                                     {"quote": [[unsolved(s)] for s in steps]})
    words = "quote: unsolved at every checkpoint (the full model's loss is at least 0.43 nats"
    assert words in texts(figures.circuit(timeline, "quote").figure)
    assert words in texts(figures.edge_survival(timeline, "quote").figure)
    fig = figures.circuit_exposures(timeline, "quote")
    assert texts(fig).count("unsolved: the full\nmodel's loss") == 2  # two exposures
    fig = figures.jaccard(timeline)
    assert "no solved circuit right after" in texts(fig)
    assert len(fig.axes[0].get_lines()) >= 1  # the crosses of the unsolved checkpoints


DRAW_SCRIPT = """
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sparsecircuits import figures, open_run
from sparsecircuits.circuits.draw import draw
graph = open_run(sys.argv[1]).weight_graph(-1)
mlp = [n for n in graph if n.startswith("blocks.0.mlp.hook_post:")][::2]
circuit = graph.subgraph(set(mlp) | {u for n in mlp for u in graph.predecessors(n)}).copy()
circuit.graph["task"] = "quote"
with figures.style():
    fig, ax = plt.subplots()
    draw(circuit, ax)
    figures.save(fig, sys.argv[2])
"""
"""A circuit as the extractor's reader builds it: a subgraph on a node set, whose node order
follows the set's (string-hash) order."""


def test_draw_is_the_same_file_under_another_hash_seed(run: Path, tmp_path: Path) -> None:
    files = []
    for seed in ("1", "2"):
        files.append(tmp_path / f"circuit{seed}.svg")
        subprocess.run([sys.executable, "-c", DRAW_SCRIPT, str(run), str(files[-1])],
                       check=True, env={**os.environ, "PYTHONHASHSEED": seed})
    assert files[0].read_bytes() == files[1].read_bytes()


def test_exposures_name_the_bands_on_the_first_drawn_panel(graph: nx.DiGraph) -> None:
    from sparsecircuits.circuits.timeline import CircuitTimeline, Where

    mlp = [n for n in graph if n.startswith("blocks.0.mlp.hook_post:")][:20]
    found = graph.subgraph(set(mlp) | {u for n in mlp for u in graph.predecessors(n)}).copy()
    found.graph.update(task="quote", solved=True, loss_full=0.1, target_loss=0.15)
    unsolved = nx.DiGraph(**{**graph.graph, "task": "quote", "solved": False,
                             "loss_full": 0.6, "target_loss": 0.15})
    where = [Where(0, 0, 0, "quote"), Where(0, 1, 1, "closer"), Where(1, 2, 0, "quote")]
    timeline = CircuitTimeline.build("run", [5, 11, 17], where, [graph] * 3,
                                     {"quote": [[unsolved], [unsolved], [found]]})
    fig = figures.circuit_exposures(timeline, "quote")
    first, second = fig.axes
    assert first.get_title() == "cycle 0, step 5" and "unsolved" in texts(fig)
    assert second.get_title().startswith("cycle 1, step 17\n")
    labels = [t.get_text() for t in second.get_yticklabels() if t.get_visible()]
    assert labels == [b.label for b in bands(model_config(graph))]
    assert second.yaxis.get_tick_params()["labelleft"] is True
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "weight > 0", "weight < 0", "residual (norm gain)"]
    fig = figures.jaccard(timeline)
    (legend,) = fig.legends
    assert "post-exposure circuit's edges alive in the weights" in [
        t.get_text() for t in legend.get_texts()]
    assert figures.plots.SURVIVAL in [line.get_color() for line in fig.axes[0].get_lines()]


def test_figures_compose_into_one(run: Path, tmp_path: Path) -> None:
    data = figures.run_data(open_run(run))
    with figures.style():
        fig = plt.figure(figsize=(figures.TWO_COLUMN, 8), layout="constrained")
        top, middle, bottom = fig.subfigures(3, 1)
        figures.circuit_exposures(data, "quote", fig=top)
        figures.jaccard(data, fig=middle)
        left, right = bottom.subplots(1, 2)
        figures.loss_matrix(data, ax=left)
        figures.recovery(data, ax=right)
        figures.save(fig, tmp_path / "composed.pdf")
    assert (tmp_path / "composed.pdf").stat().st_size > 0
    assert len(top.axes) == 3 and len(middle.axes) == 2
    assert right.get_xlabel() == "blocks since the source's exposure (τ)"


def test_the_time_analyses_join_the_figure_set_once_analyzed(run: Path, tmp_path: Path) -> None:
    """`analyze` writes the numbers; `figures` then draws them beside the others, captioned."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = figures.write_figures(copy, tmp_path / "before", formats="png")
    assert "Missing: no time analyses: run `sparsecircuits analyze` first." in \
        before[-1].read_text()
    main(["analyze", str(copy), "--what", "trajectory,similarity,oscillation"])
    after = figures.write_figures(copy, tmp_path / "after", formats="png")
    new = {p.stem for p in after} - {p.stem for p in before}
    assert new == {"trajectory_weights", "trajectory_masks", "similarity", "oscillation"}
    index = after[-1].read_text()
    assert "no time analyses" not in index
    assert "- **similarity** ([png](similarity.png)): Checkpoint x checkpoint" in index
