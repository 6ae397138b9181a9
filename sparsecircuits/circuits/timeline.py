"""The timeline of a run: its circuits and losses through the checkpoints of a cyclic schedule.

It reads what the extractor wrote, one folder per checkpoint::

    circuits/<step:08d>/weight_graph.json     every surviving connection (node-link JSON)
    circuits/<step:08d>/<task>.json           the task's circuit, a subgraph of it
    circuits/<step:08d>/<task>.seed<k>.json   the same extraction with another seed

Node ids are positional (``blocks.0.mlp.hook_post:180``), so an id means the same channel at every
checkpoint; an edge is keyed by ``(source, target, param)``. From these it builds, per graph, the
presence of every node and edge at every checkpoint, and from presence the events (formed, faded,
recovered), the churn per block, and Jaccard similarities beside the re-extraction noise floor.
With ``evals.jsonl`` it adds the behavioural metrics of Yang et al. (2024) (``behaviour``), and
``compare`` sets a cyclic run beside its shuffled control. Exports live in ``export``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import networkx as nx
import numpy as np

from sparsecircuits import metrics
from sparsecircuits.metrics import Comparison, LossMatrix

WEIGHT_GRAPH = "weight_graph"
KINDS = ("nodes", "edges", "weighted_edges")
"""Similarity kinds: Jaccard of node ids, of edge keys, and |weight|-weighted Jaccard of edges."""
REFERENCES = ("post", "previous", "final")
GROUPS = ("own", "other", "rest")
CHURN = ("births", "deaths", "revivals")
_SEED_FILE = re.compile(r"^(?P<graph>.+)\.seed(?P<seed>\d+)\.json$")

EdgeKey = tuple[str, str, str]


# --- reading the extractor's files -------------------------------------------------------------


def read_graph(path: str | Path) -> nx.Graph:
    """A node-link JSON graph, written with either ``edges`` or the older ``links`` key."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return nx.node_link_graph(data, edges="edges" if "edges" in data else "links")


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
    name: str, files: Sequence[Path | None], seeds: Sequence[Sequence[Path]]
) -> GraphTimeline:
    """Read one graph's file at every checkpoint (None: not extracted) and its re-extractions."""
    graphs = [read_graph(path) if path else None for path in files]
    # Only where the task is solved: two empty circuits of an unsolved task would count as equal.
    floors = [
        noise_floor([Snapshot.of(g), *(Snapshot.of(read_graph(p)) for p in extra)])
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


def _where(run_dir: Path, step: int, graph_attrs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Cycle, block, position, source and logged churn of a checkpoint: from its meta.json,
    else from the attributes of its graphs."""
    path = run_dir / "checkpoints" / f"{step:08d}" / "meta.json"
    meta = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    fields = {key: value for attrs in graph_attrs for key, value in attrs.items()} | meta
    try:
        where = {key: int(fields[key]) for key in ("cycle", "block", "position")}
        return {**where, "source": str(fields["source"]), "churn": _logged_churn(meta)}
    except KeyError as err:
        raise ValueError(
            f"checkpoint {step}: {err} is neither in {path} nor an attribute of its graphs"
        ) from None


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
    def from_run(cls, run_dir: str | Path) -> CircuitTimeline:
        """Read ``run_dir/circuits/<step>/`` and the checkpoints' meta.json."""
        run_dir = Path(run_dir)
        root = run_dir / "circuits"
        folders = sorted(
            (p for p in root.iterdir() if p.is_dir() and p.name.isdigit()) if root.is_dir() else [],
            key=lambda p: int(p.name),
        )
        if not folders:
            raise FileNotFoundError(f"{root}: no circuit folders; run the extractor first")
        main: list[dict[str, Path]] = []
        seeds: list[dict[str, list[Path]]] = []
        for folder in folders:
            main.append({})
            seeds.append({})
            for path in sorted(folder.glob("*.json")):
                match = _SEED_FILE.match(path.name)
                if match:
                    seeds[-1].setdefault(match["graph"], []).append(path)
                elif not path.name.startswith("."):
                    main[-1][path.stem] = path
        names = dict.fromkeys(name for files in main for name in files)
        graphs = {
            name: _graph_timeline(
                name, [f.get(name) for f in main], [s.get(name, []) for s in seeds]
            )
            for name in names
        }
        weight_graph = graphs.pop(WEIGHT_GRAPH, None) or _graph_timeline(
            WEIGHT_GRAPH, [None] * len(folders), [[]] * len(folders)
        )
        every = (weight_graph, *graphs.values())
        where = [
            _where(run_dir, int(folder.name), [g.attrs[t] for g in every])
            for t, folder in enumerate(folders)
        ]
        return cls(
            run_dir=run_dir,
            steps=np.array([int(folder.name) for folder in folders]),
            cycles=np.array([w["cycle"] for w in where]),
            blocks=np.array([w["block"] for w in where]),
            positions=np.array([w["position"] for w in where]),
            sources=tuple(w["source"] for w in where),
            logged_churn=tuple(w["churn"] for w in where),
            weight_graph=weight_graph,
            circuits=graphs,
        )

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

    def post_exposure_matrix(self, kind: str = "edges") -> LossMatrix:
        """1 − J(circuit, post-exposure circuit) as a loss matrix over block-boundary checkpoints.

        Rows are the last checkpoint of every block, columns every trained source (nan where it
        has no circuit), so ``metrics.source_shift_curves`` windows it exactly as it does losses.
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
        curves = metrics.source_shift_curves(self.post_exposure_matrix(kind), first_cycle)
        # A task never solved after an exposure has no circuit to compare: no curve at all.
        return {task: 1.0 - curve for task, curve in curves.items()
                if task in self.circuits and not np.isnan(curve).all()}

    def recovery_score(
        self, kind: str = "edges", first_cycle: int = 1, n_boot: int = 1000, seed: int = 0
    ) -> tuple[float, float, float]:
        """``(RS, low, high)``: ``metrics.circuit_recovery_score`` of the task-averaged J(τ),
        with a bootstrap interval over tasks; nan when no task has a complete window."""
        curves = self.recovery_curves(kind, first_cycle)
        if not curves:
            return math.nan, math.nan, math.nan
        return metrics.bootstrap_ci(
            np.array(list(curves.values())), statistic=_circuit_rs_of_mean, n_boot=n_boot,
            seed=seed,
        )


def _total(triples: Iterable[tuple[int, int, int]]) -> tuple[int, int, int]:
    births, deaths, revivals = np.array(list(triples), dtype=int).reshape(-1, 3).sum(axis=0)
    return int(births), int(deaths), int(revivals)


def _circuit_rs_of_mean(curves: np.ndarray) -> float:
    return metrics.circuit_recovery_score(np.mean(curves, axis=0))


# --- behaviour ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BehaviourReport:
    """The behavioural metrics of a run, from ``evals.jsonl`` (and ``metrics.jsonl`` for savings).

    ``cycle_starts``: rows of the loss matrix where a new cycle begins (the lines to draw on the
    per-task curves ``matrix.column(source)``). ``offsets``/``shift_curve``: Yang's
    shift-averaged curve c(τ) (``metrics.shift_averaged_curve``); ``recovery``: its RS with a
    bootstrap interval over sources. ``prequential``: per source, the loss before its block.
    ``savings``: per source, per re-exposure, the steps to regain the previous exposure's final
    training-batch loss (``metrics.savings``; None: not regained), only for sources that
    ``metrics.jsonl`` logged inside every exposure.
    """

    matrix: LossMatrix
    first_cycle: int
    cycle_starts: np.ndarray
    offsets: np.ndarray
    shift_curve: np.ndarray
    recovery: tuple[float, float, float]
    per_source_recovery: dict[str, list[tuple[int, float]]]
    prequential: dict[str, float]
    savings: dict[str, list[int | None]]
    notes: tuple[str, ...]


def behaviour(
    run_dir: str | Path, first_cycle: int = 1, n_boot: int = 1000, seed: int = 0
) -> BehaviourReport:
    """The behavioural metrics of ``run_dir`` over cycles ≥ ``first_cycle``."""
    run_dir = Path(run_dir)
    matrix = metrics.read_evals(run_dir / "evals.jsonl")
    notes = []
    try:
        offsets, curve = metrics.shift_averaged_curve(matrix, first_cycle)
        recovery = metrics.recovery_score_ci(matrix, first_cycle, n_boot=n_boot, seed=seed)
    except ValueError as err:
        offsets, curve, recovery = np.arange(0), np.array([]), (math.nan, math.nan, math.nan)
        notes.append(f"recovery score: {err}")
    savings = _savings(run_dir / "metrics.jsonl", matrix)
    if not savings:
        notes.append("savings: not evaluable (metrics.jsonl does not log every exposure)")
    return BehaviourReport(
        matrix=matrix,
        first_cycle=first_cycle,
        cycle_starts=np.flatnonzero(np.diff(matrix.cycles, prepend=matrix.cycles[:1] - 1)),
        offsets=offsets,
        shift_curve=curve,
        recovery=recovery,
        per_source_recovery=metrics.per_source_recovery(matrix, first_cycle),
        prequential=metrics.prequential_loss(matrix, first_cycle),
        savings=savings,
        notes=tuple(notes),
    )


def _savings(path: Path, matrix: LossMatrix) -> dict[str, list[int | None]]:
    """``metrics.savings`` on the logged training-batch loss of every source trained ≥ twice.

    Exposure i of a source is the block of row a: steps ``steps[a−1]+1 .. steps[a]``. The
    training-batch loss is noisier than the fixed evaluation sets, so read savings as a rough
    count of steps.
    """
    if not path.exists():
        return {}
    logged: dict[str, dict[int, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            logged.setdefault(record["source"], {})[int(record["step"])] = record["source_loss"]
    result = {}
    for source, by_step in logged.items():
        rows = metrics.exposures(matrix, source)
        starts = [int(matrix.steps[a - 1]) + 1 if a else 0 for a in rows]
        ends = [int(matrix.steps[a]) for a in rows]
        steps = np.array(sorted(by_step))
        inside = [np.any((steps >= s) & (steps <= e)) for s, e in zip(starts, ends, strict=True)]
        if len(rows) >= 2 and all(inside):
            losses = np.array([by_step[s] for s in steps], dtype=float)
            result[source] = metrics.savings(losses, steps, starts, ends)
    return result


# --- a run, its summary, and two runs side by side -----------------------------------------------


@dataclass(frozen=True, eq=False)
class RunAnalysis:
    """A run's behaviour and, when its circuits have been extracted, its circuit timeline."""

    run_dir: Path
    behaviour: BehaviourReport
    timeline: CircuitTimeline | None

    @classmethod
    def load(cls, run_dir: str | Path, first_cycle: int = 1) -> RunAnalysis:
        run_dir = Path(run_dir)
        circuits = run_dir / "circuits"
        has_circuits = circuits.is_dir() and any(p.name.isdigit() for p in circuits.iterdir())
        return cls(
            run_dir,
            behaviour(run_dir, first_cycle),
            CircuitTimeline.from_run(run_dir) if has_circuits else None,
        )

    def samples(self) -> dict[str, tuple[np.ndarray, Callable[[np.ndarray], float]]]:
        """Every comparable metric as ``(rows, statistic)``: rows are sources, tasks or blocks,
        the unit the bootstrap of ``compare`` resamples."""
        b, first_cycle = self.behaviour, self.behaviour.first_cycle
        shift = metrics.source_shift_curves(b.matrix, first_cycle)
        trained = [s for s in dict.fromkeys(b.matrix.trained) if s in b.matrix.sources]
        out: dict[str, tuple[np.ndarray, Callable[[np.ndarray], float]]] = {
            "loss.final": (np.array([b.matrix.column(s)[-1] for s in trained]), np.mean),
        }
        if shift:
            out["loss.recovery_score"] = (
                np.array(list(shift.values())), metrics.averaged_recovery_score)
        if b.prequential:
            out["loss.prequential"] = (np.array(list(b.prequential.values())), np.mean)
        regained = [s for values in b.savings.values() for s in values if s is not None]
        if regained:
            out["loss.savings_steps"] = (np.array(regained, dtype=float), np.mean)
        if self.timeline is None:
            return out
        curves = self.timeline.recovery_curves("edges", first_cycle)
        if curves:
            rows = np.array(list(curves.values()))
            out["circuit.recovery_score"] = (rows, _circuit_rs_of_mean)
            out["circuit.pre_exposure_jaccard"] = (rows[:, -1], np.mean)
        floors = [np.nanmean(c.noise["edges"]) for c in self.timeline.circuits.values()
                  if not np.all(np.isnan(c.noise["edges"]))]
        if floors:
            out["circuit.noise_floor"] = (np.array(floors), np.mean)
        blocks = [c for c in self.timeline.churn() if c.cycle >= first_cycle]
        if blocks:
            for group, (i, name) in itertools.product(GROUPS, enumerate(CHURN)):
                counts = np.array([c.counts[group][i] for c in blocks], dtype=float)
                out[f"churn.{group}.{name}_per_block"] = (counts, np.mean)
        return out

    def summary(self) -> dict[str, Any]:
        """The headline numbers of the run: a flat ``{name: value}``, values float or
        ``(estimate, low, high)``; ``notes`` lists what could not be computed and why."""
        b = self.behaviour
        out: dict[str, Any] = {
            "run": str(self.run_dir),
            "blocks_evaluated": len(b.matrix.steps),
            "cycles": len(set(b.matrix.cycles[b.matrix.cycles >= 0].tolist())),
        }
        out |= {name: float(statistic(rows)) for name, (rows, statistic) in self.samples().items()}
        out["loss.recovery_score"] = b.recovery  # with its interval
        notes = list(b.notes)
        if self.timeline is None:
            notes.append("no circuits/ folder: circuit metrics need `sparsecircuits extract`")
        else:
            out |= self._circuit_summary(self.timeline, notes)
        out["notes"] = notes
        return out

    def _circuit_summary(self, t: CircuitTimeline, notes: list[str]) -> dict[str, Any]:
        first_cycle = self.behaviour.first_cycle
        out: dict[str, Any] = {
            "checkpoints": len(t.steps),
            "circuit.recovery_score": t.recovery_score("edges", first_cycle),
        }
        events = t.events()
        curves = t.recovery_curves("edges", first_cycle)
        for name in t.tasks:
            c = t.circuits[name]
            solved = [bool(a.get("solved")) for a, e in zip(c.attrs, c.extracted, strict=True) if e]
            out[f"{name}.solved_fraction"] = _mean(solved)
            out[f"{name}.edges_mean"] = float(c.edges.present[:, c.extracted].sum(0).mean())
            out[f"{name}.noise_floor.edges"] = _nanmean(c.noise["edges"])
            if name in curves:
                out[f"{name}.pre_exposure_jaccard.edges"] = float(curves[name][-1])
                out[f"{name}.recovery_score.edges"] = metrics.circuit_recovery_score(curves[name])
            previous = t.similarity(name, "previous")["edges"]
            out[f"{name}.previous_jaccard.edges"] = _nanmean(previous)
            for kind in ("formed", "faded", "recovered"):
                out[f"{name}.edge_events.{kind}"] = sum(
                    e.graph == name and e.element_type == "edge" and e.kind == kind
                    for e in events
                )
            if not any(solved):
                notes.append(f"{name}: unsolved at every checkpoint, no circuit to follow")
            elif np.all(np.isnan(c.noise["edges"])):
                notes.append(f"{name}: no re-extraction ({name}.seed<k>.json) where it is "
                             "solved, noise floor nan (`extract --seeds 3` makes them); read its "
                             "Jaccard changes without one")
        if len(t.tasks) > 1:
            final = t.overlap("edges")[-1]
            out["overlap.edges.final_mean"] = _nanmean(final[~np.eye(len(t.tasks), dtype=bool)])
        return out


def _mean(values: Any) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan


def compare(
    run_a: str | Path | RunAnalysis,
    run_b: str | Path | RunAnalysis,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Comparison]:
    """Every metric both runs have, side by side: ``metrics.compare_runs`` of a − b with a
    bootstrap interval that resamples each run's sources (tasks, blocks) independently."""
    a, b = (r if isinstance(r, RunAnalysis) else RunAnalysis.load(r) for r in (run_a, run_b))
    samples_a, samples_b = a.samples(), b.samples()
    return {
        name: metrics.compare_runs(rows, samples_b[name][0], statistic, n_boot=n_boot, seed=seed)
        for name, (rows, statistic) in samples_a.items()
        if name in samples_b
    }
