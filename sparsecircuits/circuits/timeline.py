"""The circuit timeline of a run: its weight graph and task circuits through the checkpoints.

At every checkpoint with extracted circuits it takes the weight graph (every surviving
connection, a function of the checkpoint's weights) and each task's circuit with its seed
re-extractions (:mod:`~sparsecircuits.circuits.circuit`). Node ids are positional
(``blocks.0.mlp.hook_post:180``), so an id means the same channel at every checkpoint; an edge
is keyed by ``(source, target, param)``. From these it builds, per graph, the presence of every
node and edge at every checkpoint, and from presence the events (formed, faded, recovered),
the churn per block, and Jaccard similarities beside the re-extraction noise floor.
The losses (Yang et al.'s behavioural metrics) live in :mod:`sparsecircuits.behaviour`, the
summary of a run and the comparison of two in :mod:`sparsecircuits.analysis`, the exports in
:mod:`~sparsecircuits.circuits.export`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import networkx as nx
import numpy as np

from sparsecircuits import metrics
from sparsecircuits.checkpoint import CheckpointError, read_meta
from sparsecircuits.circuits.circuit import read_circuit
from sparsecircuits.circuits.graph import weight_graph as build_weight_graph
from sparsecircuits.metrics import LossMatrix
from sparsecircuits.rundir import RunDir

WEIGHT_GRAPH = "weight_graph"
"""The name of the whole weight graph among the timeline's graphs (the others are tasks)."""
KINDS = ("nodes", "edges", "weighted_edges")
"""Similarity kinds: Jaccard of node ids, of edge keys, and |weight|-weighted Jaccard of edges."""
REFERENCES = ("post", "previous", "final")
GROUPS = ("own", "other", "rest")
CHURN = ("births", "deaths", "revivals")

EdgeKey = tuple[str, str, str]


def _node_data(graph: nx.Graph) -> dict[str, dict[str, Any]]:
    return {str(node): data for node, data in graph.nodes(data=True)}


def _edge_data(graph: nx.Graph) -> dict[EdgeKey, dict[str, Any]]:
    return {(str(u), str(v), str(d.get("param", ""))): d for u, v, d in graph.edges(data=True)}


@dataclass(frozen=True)
class Snapshot:
    """One extracted graph as sets: node ids, edge keys, and the weight of every edge."""

    nodes: frozenset[str]
    edges: frozenset[EdgeKey]
    weights: dict[EdgeKey, float]

    @classmethod
    def of(cls, graph: nx.Graph) -> Snapshot:
        edges = _edge_data(graph)
        weights = {key: float(data.get("weight", math.nan)) for key, data in edges.items()}
        return cls(frozenset(_node_data(graph)), frozenset(edges), weights)


def similarity(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """Per kind: J(nodes), J(edges) and weighted J(edges) = Σ min(|w_a|, |w_b|) / Σ max(...)."""
    return {
        "nodes": metrics.jaccard(a.nodes, b.nodes),
        "edges": metrics.jaccard(a.edges, b.edges),
        "weighted_edges": metrics.weighted_jaccard(a.weights, b.weights),
    }


def noise_floor(extractions: Sequence[Snapshot]) -> dict[str, float]:
    """Per kind, the mean similarity over all pairs of extractions of one graph at one checkpoint
    (the extractor's and its seed re-extractions); nan with fewer than two. Callers skip
    checkpoints where the task is unsolved."""
    pairs = [similarity(a, b) for a, b in itertools.combinations(extractions, 2)]
    return {kind: float(np.mean([p[kind] for p in pairs])) if pairs else math.nan for kind in KINDS}


# --- presence ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Elements:
    """Nodes or edges of one graph over the checkpoints.

    ``keys`` is the union over checkpoints in order of first appearance; ``present`` and
    ``value`` are ``[len(keys), checkpoints]``. ``value`` holds the edge weight (the node
    importance), nan where absent or not recorded. ``attrs`` are each element's other attributes
    as last seen ("sign" is left out: it follows from the weight).
    """

    keys: tuple[Hashable, ...]
    present: np.ndarray
    value: np.ndarray
    attrs: tuple[dict[str, Any], ...]

    @classmethod
    def collect(cls, snapshots: Sequence[dict[Any, dict[str, Any]]], value_key: str) -> Elements:
        """Stack per-checkpoint ``{key: attributes}`` maps (empty where not extracted)."""
        attrs: dict[Any, dict[str, Any]] = {}
        for snapshot in snapshots:
            for key, data in snapshot.items():
                attrs[key] = {k: v for k, v in data.items() if k not in (value_key, "sign")}
        row = {key: i for i, key in enumerate(attrs)}
        present = np.zeros((len(attrs), len(snapshots)), dtype=bool)
        value = np.full(present.shape, math.nan)
        for t, snapshot in enumerate(snapshots):
            for key, data in snapshot.items():
                present[row[key], t] = True
                found = data.get(value_key)
                value[row[key], t] = math.nan if found is None else float(found)
        return cls(tuple(attrs), present, value, tuple(attrs.values()))


@dataclass(frozen=True, eq=False)
class GraphTimeline:
    """One graph (the weight graph or a task's circuit) at every checkpoint of a run.

    ``extracted[t]`` says whether a file existed at checkpoint t: where it did not, presence is
    False and every similarity nan. ``attrs[t]`` are the graph attributes (task, solved, losses,
    ...). ``noise[kind][t]`` is the noise floor from seed re-extractions, nan where there are none.
    """

    name: str
    nodes: Elements
    edges: Elements
    extracted: np.ndarray
    attrs: tuple[dict[str, Any], ...]
    noise: dict[str, np.ndarray]

    @cached_property
    def snapshots(self) -> tuple[Snapshot | None, ...]:
        """The graph at each checkpoint as sets, None where not extracted."""
        result: list[Snapshot | None] = []
        for t, extracted in enumerate(self.extracted):
            if not extracted:
                result.append(None)
                continue
            edges = np.flatnonzero(self.edges.present[:, t])
            result.append(
                Snapshot(
                    frozenset(self.nodes.keys[i] for i in np.flatnonzero(self.nodes.present[:, t])),
                    frozenset(self.edges.keys[i] for i in edges),
                    {self.edges.keys[i]: float(self.edges.value[i, t]) for i in edges},
                )
            )
        return tuple(result)


def _graph_timeline(
    name: str, graphs: Sequence[nx.Graph | None], seeds: Sequence[Sequence[nx.Graph]]
) -> GraphTimeline:
    """One graph at every checkpoint (None: not extracted) and its re-extractions there."""
    # Only where the task is solved: two empty circuits of an unsolved task would count as equal.
    floors = [
        noise_floor([Snapshot.of(g), *(Snapshot.of(e) for e in extra)])
        if g is not None and extra and g.graph.get("solved", True)
        else dict.fromkeys(KINDS, math.nan)
        for g, extra in zip(graphs, seeds, strict=True)
    ]
    return GraphTimeline(
        name=name,
        nodes=Elements.collect([_node_data(g) if g else {} for g in graphs], "importance"),
        edges=Elements.collect([_edge_data(g) if g else {} for g in graphs], "weight"),
        extracted=np.array([g is not None for g in graphs], dtype=bool),
        attrs=tuple(dict(g.graph) if g is not None else {} for g in graphs),
        noise={kind: np.array([floor[kind] for floor in floors]) for kind in KINDS},
    )


# --- the timeline ------------------------------------------------------------------------------


class EventRow(NamedTuple):
    """One presence change of one node or edge (``param`` is "" for a node)."""

    graph: str
    element_type: str
    element: str
    param: str
    kind: str
    checkpoint: int
    step: int
    cycle: int
    block: int


class BlockChurn(NamedTuple):
    """Births, deaths and revivals of weight-graph edges between checkpoints, summed over a block.

    ``counts[group]`` is ``(births, deaths, revivals)`` for group "own" (edges in the circuit of
    the task this block trained, at the checkpoint before or after), "other" (in another task's
    circuit, not own) and "rest". ``logged`` is the trainer's own count from meta.json (every
    step, so it also holds changes that undo themselves inside the block); None if absent.
    """

    block: int
    cycle: int
    step: int
    source: str
    counts: dict[str, tuple[int, int, int]]
    logged: tuple[int, int, int] | None


class Where(NamedTuple):
    """A checkpoint's place in the schedule (from its meta.json) and the trainer's churn count
    over its block (None where not logged)."""

    cycle: int
    block: int
    position: int
    source: str
    churn: tuple[int, int, int] | None = None

    @classmethod
    def of_checkpoint(cls, run: RunDir, step: int) -> Where:
        meta = read_meta(run.checkpoint(step))
        try:
            return cls(int(meta["cycle"]), int(meta["block"]), int(meta["position"]),
                       str(meta["source"]), _logged_churn(meta))
        except KeyError as err:
            raise CheckpointError(f"{run.checkpoint(step)}: meta.json lacks {err}") from None


def _logged_churn(meta: dict[str, Any]) -> tuple[int, int, int] | None:
    """The trainer's births, deaths and revivals over the block, summed over tensors."""
    if "churn" not in meta:
        return None
    return _total(tuple(int(c.get(key, 0)) for key in CHURN) for c in meta["churn"].values())


@dataclass(frozen=True, eq=False)
class CircuitTimeline:
    """The weight graph and every task's circuit at every extracted checkpoint of a run.

    Checkpoints are the step folders under ``circuits/``, in step order; ``cycles``, ``blocks``,
    ``positions`` and ``sources`` (the source the checkpoint's block trained) come from the
    checkpoint's meta.json (read without checking the weight files' hashes), else from the graph
    attributes.
    """

    run_dir: Path
    steps: np.ndarray
    cycles: np.ndarray
    blocks: np.ndarray
    positions: np.ndarray
    sources: tuple[str, ...]
    logged_churn: tuple[tuple[int, int, int] | None, ...]
    weight_graph: GraphTimeline
    circuits: dict[str, GraphTimeline]

    @classmethod
    def build(
        cls,
        run_dir: str | Path,
        steps: Sequence[int],
        where: Sequence[Where],
        weight_graphs: Sequence[nx.Graph | None],
        circuits: dict[str, Sequence[Sequence[nx.Graph]]],
    ) -> CircuitTimeline:
        """A timeline from graphs in memory: per checkpoint its place in the schedule, its
        weight graph (None: not available) and per task its extractions, seed 0 first (an
        empty list: not extracted there)."""
        graphs = {
            name: _graph_timeline(name, [e[0] if e else None for e in per_step],
                                  [e[1:] for e in per_step])
            for name, per_step in circuits.items()
        }
        return cls(
            run_dir=Path(run_dir),
            steps=np.array(steps, dtype=int),
            cycles=np.array([w.cycle for w in where], dtype=int),
            blocks=np.array([w.block for w in where], dtype=int),
            positions=np.array([w.position for w in where], dtype=int),
            sources=tuple(w.source for w in where),
            logged_churn=tuple(w.churn for w in where),
            weight_graph=_graph_timeline(WEIGHT_GRAPH, weight_graphs, [[]] * len(steps)),
            circuits=graphs,
        )

    @classmethod
    def from_run(
        cls, run_dir: str | Path, weight_graph: Callable[[int], nx.DiGraph] | None = None
    ) -> CircuitTimeline:
        """Every checkpoint of a run with extracted circuits. ``weight_graph(step)`` gives a
        checkpoint's weight graph (default: built from its weights; ``Run`` passes its cache)."""
        run = RunDir(run_dir)
        steps = run.circuit_steps()
        if not steps:
            raise CheckpointError(f"{run.circuits}: no extracted circuits; run "
                                  f"`sparsecircuits extract {run.root}` first")
        graph_of = weight_graph or (lambda step: build_weight_graph(run.checkpoint(step)))
        weight_graphs, found = [], {}
        for t, step in enumerate(steps):
            graph = graph_of(step)
            weight_graphs.append(graph)
            for (task, seed), path in sorted(run.circuit_files(step).items()):
                per_step = found.setdefault(task, [[] for _ in steps])
                if seed == 0 or per_step[t]:  # a re-extraction counts beside its seed 0
                    per_step[t].append(read_circuit(path, graph).graph)
        return cls.build(run.root, steps, [Where.of_checkpoint(run, s) for s in steps],
                         weight_graphs, found)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.circuits)

    def graph(self, name: str) -> GraphTimeline:
        """The weight graph (``"weight_graph"``) or a task's circuit."""
        return self.weight_graph if name == WEIGHT_GRAPH else self.circuits[name]

    # -- events and churn -----------------------------------------------------------------

    def events(self) -> list[EventRow]:
        """Formed, faded and recovered events of every node and edge of every graph.

        ``metrics.events`` on the presence array restricted to the checkpoints where the graph
        was extracted, so a missing file is no fade.
        """
        rows = []
        for g in (self.weight_graph, *self.circuits.values()):
            observed = np.flatnonzero(g.extracted)
            for element_type, elements in (("node", g.nodes), ("edge", g.edges)):
                for index, kind, column in metrics.events(elements.present[:, observed]):
                    key = elements.keys[index]
                    element, param = (key, "") if element_type == "node" else (
                        f"{key[0]} -> {key[1]}", key[2])
                    t = int(observed[column])
                    rows.append(EventRow(
                        g.name, element_type, element, param, kind, t, int(self.steps[t]),
                        int(self.cycles[t]), int(self.blocks[t]),
                    ))
        return rows

    def membership(self, task: str) -> np.ndarray:
        """``[weight-graph edges, checkpoints]``: the edge is in ``task``'s circuit there."""
        row = {key: i for i, key in enumerate(self.weight_graph.edges.keys)}
        member = np.zeros_like(self.weight_graph.edges.present)
        circuit = self.circuits[task].edges
        for key, present in zip(circuit.keys, circuit.present, strict=True):
            if key in row:
                member[row[key]] = present
        return member

    def churn(self) -> list[BlockChurn]:
        """Weight-graph edge churn per block, split into own circuit, other circuits, rest.

        Between consecutive extracted checkpoints p → t (``metrics.churn_counts``): births are
        edges absent at p, present at t and never seen before; deaths present at p, absent at t;
        revivals absent at p, present at t, seen before. A transition belongs to t's block, and
        an edge to a circuit if it is in it at p or at t (a dying edge has left it at t).
        """
        present = self.weight_graph.edges.present
        members = {task: self.membership(task) for task in self.tasks}
        observed = np.flatnonzero(self.weight_graph.extracted)
        counts: dict[int, list[dict[str, tuple[int, int, int]]]] = {}
        last: dict[int, int] = {}  # block -> its last checkpoint
        for i, (p, t) in enumerate(itertools.pairwise(observed)):
            own_task = self.sources[t] if self.cycles[t] >= 0 else None
            own = np.zeros(len(present), dtype=bool)
            other = np.zeros(len(present), dtype=bool)
            for task, member in members.items():
                in_circuit = member[:, p] | member[:, t]
                if task == own_task:
                    own |= in_circuit
                else:
                    other |= in_circuit
            other &= ~own
            ever = present[:, observed[: i + 1]].any(axis=1)
            block = int(self.blocks[t])
            counts.setdefault(block, []).append({
                group: metrics.churn_counts(present[mask, p], present[mask, t], ever[mask])
                for group, mask in zip(GROUPS, (own, other, ~own & ~other), strict=True)
            })
            last[block] = t
        return [
            BlockChurn(
                block, int(self.cycles[t]), int(self.steps[t]), self.sources[t],
                {g: _total(c[g] for c in counts[block]) for g in GROUPS}, self.logged_churn[t],
            )
            for block, t in last.items()
        ]

    # -- similarity -----------------------------------------------------------------------

    def reference(self, name: str, reference: str) -> np.ndarray:
        """Per checkpoint t, the index of the checkpoint ``name`` is compared with, −1 for none.

        "post": the latest s ≤ t whose block trained the task (in a cycle ≥ 0), the circuit right
        after its last exposure; "previous": the previous extracted checkpoint; "final": the last
        extracted one.
        """
        extracted = self.graph(name).extracted
        observed = np.flatnonzero(extracted)
        if reference == "post":
            trained = np.array([s == name for s in self.sources]) & (self.cycles >= 0)
            latest = np.where(trained, np.arange(len(trained)), -1)
            return np.maximum.accumulate(latest)
        if reference == "previous":
            previous = np.full(len(extracted), -1)
            previous[observed[1:]] = observed[:-1]
            return previous
        if reference == "final":
            return np.full(len(extracted), observed[-1] if observed.size else -1)
        raise ValueError(f"unknown reference {reference!r}; choose from {REFERENCES}")

    def similarity(self, name: str, reference: str) -> dict[str, np.ndarray]:
        """Per kind, the similarity of each checkpoint's graph with its ``reference`` graph.

        nan where either graph was not extracted, there is no reference, or the reference is an
        unsolved task's (empty) circuit: there is nothing to be similar to.
        """
        graph = self.graph(name)
        snapshots = graph.snapshots
        curves = {kind: np.full(len(snapshots), math.nan) for kind in KINDS}
        for t, r in enumerate(self.reference(name, reference)):
            if r < 0 or graph.attrs[r].get("solved") is False:
                continue
            if snapshots[t] is not None and snapshots[r] is not None:
                for kind, value in similarity(snapshots[t], snapshots[r]).items():
                    curves[kind][t] = value
        return curves

    def overlap(self, kind: str = "edges") -> np.ndarray:
        """``[checkpoints, tasks, tasks]``: similarity between task circuits at each checkpoint."""
        tasks = self.tasks
        result = np.full((len(self.steps), len(tasks), len(tasks)), math.nan)
        for t in range(len(self.steps)):
            for i, j in itertools.product(range(len(tasks)), repeat=2):
                a, b = self.circuits[tasks[i]].snapshots[t], self.circuits[tasks[j]].snapshots[t]
                if a is not None and b is not None:
                    result[t, i, j] = similarity(a, b)[kind]
        return result

    def ballooned(self, task: str, factor: float = 3.0) -> np.ndarray:
        """Per checkpoint: the task's circuit is solved but more than ``factor`` times the
        median size of its solved circuits (a barely-solved task near the target loss can
        return most of the model). Such circuits are marked, not averaged in."""
        g = self.circuits[task]
        sizes = g.nodes.present.sum(0)
        solved = np.array([bool(a.get("solved")) for a in g.attrs]) & g.extracted
        if not solved.any():
            return np.zeros(len(sizes), dtype=bool)
        return solved & (sizes > factor * np.median(sizes[solved]))

    def survival(self, task: str, balloon_factor: float = 3.0) -> dict[str, np.ndarray]:
        """How much of the task's post-exposure circuit is still in the weights, at every
        checkpoint, solved or not: ``edges``, the fraction of the circuit's weight edges (at
        the checkpoint that ended the task's latest exposure) alive in the weight graph now;
        ``mass``, the same weighted by the circuit's |w| at that checkpoint. nan before the
        first exposure, where that circuit is unsolved or ballooned (:meth:`ballooned` with
        ``balloon_factor``), or where the weight
        graph is missing. (``sparsecircuits.run.Run.survival`` adds the loss of the model
        restricted to that frozen circuit.)"""
        member = self.membership(task)
        present = self.weight_graph.edges.present
        weights = np.abs(np.nan_to_num(self.weight_graph.edges.value))
        kinds = np.array([a.get("kind") not in ("residual", "qk")
                          for a in self.weight_graph.edges.attrs], dtype=bool)
        post = self.reference(task, "post")
        usable = ~self.ballooned(task, balloon_factor)
        out = {"edges": np.full(len(post), math.nan), "mass": np.full(len(post), math.nan)}
        for t, r in enumerate(post):
            if r < 0 or not usable[r] or not self.weight_graph.extracted[t]:
                continue
            circuit = member[:, r] & kinds
            if not circuit.any():
                continue
            alive = circuit & present[:, t]
            out["edges"][t] = alive.sum() / circuit.sum()
            out["mass"][t] = weights[alive, r].sum() / weights[circuit, r].sum()
        return out

    def post_exposure_matrix(self, kind: str = "edges") -> LossMatrix:
        """1 − J(circuit, post-exposure circuit) as a loss matrix over block-boundary checkpoints.

        Rows are the last checkpoint of every block, columns every trained source (nan where it
        has no circuit), so ``metrics.source_offset_curves`` windows it exactly as it does losses.
        """
        last = np.append(self.blocks[1:] != self.blocks[:-1], True)
        rows = np.flatnonzero(last)
        sources = tuple(dict.fromkeys([*(self.sources[r] for r in rows), *self.tasks]))
        loss = np.full((len(rows), len(sources)), math.nan)
        for j, source in enumerate(sources):
            if source in self.circuits:
                loss[:, j] = 1.0 - self.similarity(source, "post")[kind][rows]
        return LossMatrix(
            self.steps[rows], self.cycles[rows], self.blocks[rows], self.positions[rows],
            tuple(self.sources[r] for r in rows), sources, loss,
        )

    def recovery_curves(self, kind: str = "edges", first_cycle: int = 1) -> dict[str, np.ndarray]:
        """Per task, its mean Jaccard-to-post-exposure curve J_j(τ), τ = 0..K−1 (from exposure to
        just before the next), over complete windows in cycles ≥ ``first_cycle``; tasks with no
        solved post-exposure circuit are left out."""
        # the loss window is (1 − J[a+τ]) − (1 − J[a]), and J[a] = 1 (a compared with itself)
        windows = metrics.source_offset_curves(self.post_exposure_matrix(kind), first_cycle)
        curves = {task: curve for task, (curve, _) in windows.items()}
        # A task never solved after an exposure has no circuit to compare: no curve at all.
        return {task: 1.0 - curve for task, curve in curves.items()
                if task in self.circuits and not np.isnan(curve).all()}

    def recovery_score(
        self, kind: str = "edges", first_cycle: int = 1, n_boot: int = 1000, seed: int = 0
    ) -> tuple[float, float, float]:
        """``(RS, low, high)``: ``metrics.signed_circuit_recovery_score`` of the task-averaged J(τ),
        with a bootstrap interval over tasks; nan when no task has a complete window."""
        curves = self.recovery_curves(kind, first_cycle)
        if not curves:
            return math.nan, math.nan, math.nan
        return metrics.bootstrap_ci(
            np.array(list(curves.values())), statistic=circuit_rs_of_mean, n_boot=n_boot,
            seed=seed,
        )


def _total(triples: Iterable[tuple[int, int, int]]) -> tuple[int, int, int]:
    births, deaths, revivals = np.array(list(triples), dtype=int).reshape(-1, 3).sum(axis=0)
    return int(births), int(deaths), int(revivals)


def circuit_rs_of_mean(curves: np.ndarray) -> float:
    """The signed circuit recovery score of the mean of per-task J(τ) curves (offsets no window
    reaches skipped; a bootstrap statistic)."""
    return metrics.signed_circuit_recovery_score(metrics.nanmean_rows(curves))
