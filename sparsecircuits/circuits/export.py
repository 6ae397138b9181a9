"""What leaves the timeline for other tools: Gephi files, GraphML and tidy tables (opt-in).

``export_run(run)`` (``sparsecircuits export RUN``) writes, under ``RunDir.exports``::

    <graph>.gexf                   dynamic GEXF, one per graph (Gephi plays it as a timeline)
    <graph>.json                   the same union graph as node-link JSON
    graphml/<step>/<graph>.graphml each circuit (and, on request, the weight graph) as it is
                                   at each checkpoint
    events.csv                     one row per formed / faded / recovered event
    metrics.csv                    long format: one row per (metric, task, checkpoint)
    summary.json                   the headline numbers of ``RunAnalysis.summary``

These are large (a ``tiny`` run: about 130 MB, mostly the weight graph's GEXF and JSON) and
all derived from the run, so nothing writes them unless asked.

``<graph>`` is ``weight_graph`` or a task. Time is the training step. An element's *spells* are
its maximal runs of presence over the extracted checkpoints; a run from checkpoint i to j spans
``[step_i, step_{j+1} − 1]`` (to ``step_j`` when j is the last), so the graph holds its state until
the next checkpoint and Gephi's timeline has no gaps between snapshots.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import networkx as nx
import numpy as np

from sparsecircuits.analysis import RunAnalysis
from sparsecircuits.checkpoint import write_json
from sparsecircuits.circuits.graphml import graphml_text
from sparsecircuits.circuits.timeline import (
    CHURN,
    GROUPS,
    KINDS,
    REFERENCES,
    WEIGHT_GRAPH,
    CircuitTimeline,
    Elements,
    EventRow,
)
from sparsecircuits.rundir import RunDir, step_name


def _plain(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes GEXF and GraphML can hold: None dropped, containers as JSON text, numpy
    scalars as Python ones."""
    out = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = json.dumps(value) if isinstance(value, list | tuple | dict) else value
    return out


def _intervals(steps: Sequence[int]) -> list[tuple[int, int]]:
    """``[step_i, step_{i+1} − 1]`` for each checkpoint i, ``[step_last, step_last]`` at the end."""
    ends = [next_step - 1 for next_step in steps[1:]]
    return list(zip(steps, [*ends, steps[-1]], strict=True)) if len(steps) else []


def spells(present: Sequence[bool], steps: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, end)`` of every maximal run of presence, in training steps (module docstring)."""
    intervals = _intervals(steps)
    result: list[tuple[int, int]] = []
    for i, here in enumerate(present):
        if not here:
            continue
        if i and present[i - 1]:
            result[-1] = (result[-1][0], intervals[i][1])
        else:
            result.append(intervals[i])
    return result


def _dynamic(
    elements: Elements, row: int, observed: np.ndarray, steps: list[int], key: str
) -> dict[str, list[tuple[float, int, int]]]:
    """``{key: [(value, start, end)]}`` over the observed checkpoints where the element is present
    with a value; empty when it never has one (a GEXF dynamic attribute)."""
    values = [
        (float(elements.value[row, t]), start, end)
        for t, (start, end) in zip(observed, _intervals(steps), strict=True)
        if elements.present[row, t] and not math.isnan(elements.value[row, t])
    ]
    return {key: values} if values else {}


def timeline_graph(timeline: CircuitTimeline, name: str) -> nx.MultiDiGraph:
    """The union over checkpoints of one graph, every node and edge with its ``spells``.

    Edges are keyed by their param and carry ``weight_t`` (nodes ``importance_t``) as a dynamic
    attribute ``[(value, start, end)]``; other attributes as last seen. Graph attributes: the
    extracted checkpoints' steps, cycles, blocks, positions and sources.
    """
    g = timeline.graph(name)
    observed = np.flatnonzero(g.extracted)
    steps = [int(timeline.steps[t]) for t in observed]
    graph = nx.MultiDiGraph(
        name=name,
        mode="dynamic",
        steps=steps,
        cycles=timeline.cycles[observed].tolist(),
        blocks=timeline.blocks[observed].tolist(),
        positions=timeline.positions[observed].tolist(),
        sources=[timeline.sources[t] for t in observed],
    )
    for row, node in enumerate(g.nodes.keys):
        data = _plain(g.nodes.attrs[row]) | _dynamic(g.nodes, row, observed, steps, "importance_t")
        graph.add_node(node, **data, spells=spells(g.nodes.present[row, observed], steps))
    for row, (u, v, param) in enumerate(g.edges.keys):
        data = _plain(g.edges.attrs[row]) | _dynamic(g.edges, row, observed, steps, "weight_t")
        graph.add_edge(
            u, v, key=param, id=f"{u}->{v}@{param}", **data,
            spells=spells(g.edges.present[row, observed], steps),
        )
    return graph


def snapshot_graph(timeline: CircuitTimeline, name: str, t: int) -> nx.MultiDiGraph:
    """One graph as it was at checkpoint ``t``: present nodes (with importance) and edges (with
    weight), its graph attributes and the checkpoint's place in the schedule."""
    g = timeline.graph(name)
    graph = nx.MultiDiGraph()
    graph.graph |= _plain(g.attrs[t]) | {
        "step": int(timeline.steps[t]), "cycle": int(timeline.cycles[t]),
        "block": int(timeline.blocks[t]), "source": timeline.sources[t],
    }
    for row in np.flatnonzero(g.nodes.present[:, t]):
        value = g.nodes.value[row, t]
        extra = {} if math.isnan(value) else {"importance": float(value)}
        graph.add_node(g.nodes.keys[row], **_plain(g.nodes.attrs[row]), **extra)
    for row in np.flatnonzero(g.edges.present[:, t]):
        u, v, param = g.edges.keys[row]
        weight = float(g.edges.value[row, t])
        graph.add_edge(u, v, key=param, **_plain(g.edges.attrs[row]) | {"weight": weight})
    return graph


# --- tables ------------------------------------------------------------------------------------


class MetricRow(NamedTuple):
    """One value of one metric for one task (or graph, or trained source) at one checkpoint."""

    metric: str
    task: str
    step: int
    cycle: int
    block: int
    value: float


def metric_rows(analysis: RunAnalysis) -> list[MetricRow]:
    """Every per-checkpoint number of a run, long format.

    ``loss`` (task = evaluated source) at every evaluated block boundary; per graph and
    extracted checkpoint ``nodes``, ``edges``, numeric graph attributes as ``attr.<name>``,
    ``jaccard.<reference>.<kind>`` and ``noise_floor.<kind>``; ``overlap.edges.<other task>``;
    per block ``churn.<group>.<count>`` and ``churn.logged.<count>`` (task = the trained source).
    """
    m = analysis.behaviour.matrix
    rows = [
        MetricRow("loss", source, int(m.steps[k]), int(m.cycles[k]), int(m.blocks[k]), float(x))
        for j, source in enumerate(m.sources)
        for k, x in enumerate(m.loss[:, j])
    ]
    t = analysis.timeline
    if t is None:
        return rows

    def at(metric: str, task: str, k: int, value: float) -> MetricRow:
        return MetricRow(metric, task, int(t.steps[k]), int(t.cycles[k]), int(t.blocks[k]), value)

    overlap = t.overlap("edges")
    for name in (WEIGHT_GRAPH, *t.tasks):
        g = t.graph(name)
        references = REFERENCES if name != WEIGHT_GRAPH else ("previous", "final")
        curves = {f"jaccard.{r}.{kind}": curve for r in references
                  for kind, curve in t.similarity(name, r).items()}
        curves |= {f"noise_floor.{kind}": g.noise[kind] for kind in KINDS}
        for k in np.flatnonzero(g.extracted):
            rows += [at("nodes", name, k, float(g.nodes.present[:, k].sum())),
                     at("edges", name, k, float(g.edges.present[:, k].sum()))]
            rows += [at(f"attr.{key}", name, k, float(value)) for key, value in g.attrs[k].items()
                     if isinstance(value, int | float | bool)
                     and key not in ("step", "seed", "cycle", "block", "position")]
            rows += [at(metric, name, k, float(curve[k])) for metric, curve in curves.items()]
            if name != WEIGHT_GRAPH:
                i = t.tasks.index(name)
                rows += [at(f"overlap.edges.{other}", name, k, float(overlap[k, i, j]))
                         for j, other in enumerate(t.tasks) if j != i]
    for c in t.churn():
        counts = {**c.counts, "logged": c.logged or (math.nan,) * 3}
        rows += [MetricRow(f"churn.{group}.{count}", c.source, c.step, c.cycle, c.block,
                           float(counts[group][i]))
                 for group in (*GROUPS, "logged") for i, count in enumerate(CHURN)]
    return rows


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# --- the run -----------------------------------------------------------------------------------


def export_run(run: str | Path | RunAnalysis, weight_graph_graphml: bool = False) -> Path:
    """Write every export of a run under ``RunDir.exports`` (module docstring) and return that
    folder. It is written aside and renamed into place, so it is whole or absent.

    GraphML of the whole weight graph at every checkpoint is opt-in: networkx writes it at about
    60k edges a second, and ``weight_graph.json`` and ``weight_graph.gexf`` already hold it.
    """
    analysis = run if isinstance(run, RunAnalysis) else RunAnalysis.load(run)
    final = RunDir(analysis.run_dir).exports
    partial = final.with_name(f".{final.name}-partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    t = analysis.timeline
    if t is not None:
        for name in (WEIGHT_GRAPH, *t.tasks):
            union = timeline_graph(t, name)
            nx.write_gexf(union, partial / f"{name}.gexf", prettyprint=False)
            write_json(partial / f"{name}.json", nx.node_link_data(union, edges="edges"))
            if name == WEIGHT_GRAPH and not weight_graph_graphml:
                continue
            for k in np.flatnonzero(t.graph(name).extracted):
                folder = partial / "graphml" / step_name(int(t.steps[k]))
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{name}.graphml"
                path.write_text(graphml_text(snapshot_graph(t, name, k)))
        _write_csv(partial / "events.csv", EventRow._fields, t.events())
    _write_csv(partial / "metrics.csv", MetricRow._fields, metric_rows(analysis))
    write_json(partial / "summary.json", analysis.summary(), indent=1)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final
