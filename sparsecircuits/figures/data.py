"""What the figures need of a run, from whatever the caller has: a run folder, a ``Run``
(:func:`sparsecircuits.open_run`), a ``RunAnalysis``, or the data objects themselves
(``CircuitTimeline``, ``BehaviourReport``, ``LossMatrix``).

The figures never open a file inside a run folder: a folder is opened with ``open_run`` and read
through ``Run.behaviour()`` and ``Run.timeline()``; what is missing is recorded with its reason,
for the panel to say.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from sparsecircuits import metrics
from sparsecircuits.analysis import RunAnalysis
from sparsecircuits.behaviour import BehaviourReport
from sparsecircuits.checkpoint import CheckpointError
from sparsecircuits.circuits.timeline import CircuitTimeline
from sparsecircuits.metrics import LossMatrix

NO_CIRCUITS = "no circuits: run `sparsecircuits extract` first"
NO_TIME = "no time analyses: run `sparsecircuits analyze` first"


@dataclass(frozen=True, eq=False)
class RunData:
    """A run's timeline, behaviour and loss matrix, and (from a run folder or ``Run``) the run
    with the numbers of its time analyses, each None where absent; ``missing`` says why, per
    item (``"timeline"``, ``"behaviour"``, ``"time"``)."""

    name: str
    timeline: CircuitTimeline | None = None
    behaviour: BehaviourReport | None = None
    matrix: LossMatrix | None = None
    missing: dict[str, str] = field(default_factory=dict)
    run: Any = None
    time: dict[str, Any] | None = None

    def why(self, item: str) -> str:
        return self.missing.get(item, f"no {item} given")


def _from_run(run: Any) -> RunData:
    """A ``Run`` (duck-typed: it has ``timeline()`` and ``behaviour()``)."""
    missing: dict[str, str] = {}
    report = timeline = None
    try:
        report = run.behaviour()
    except FileNotFoundError:
        missing["behaviour"] = "no loss matrix: the run has not reached a block boundary"
    except (CheckpointError, ValueError) as err:
        missing["behaviour"] = f"no loss matrix: {err}"
    folder = getattr(run, "dir", None)
    if folder is not None and not folder.circuit_steps():
        missing["timeline"] = NO_CIRCUITS
    else:
        try:
            timeline = run.timeline()
        except (CheckpointError, FileNotFoundError) as err:
            missing["timeline"] = f"no circuit timeline: {err}"
    if isinstance(report, RunAnalysis):
        report = report.behaviour
    time = run.time_analyses() if callable(getattr(run, "time_analyses", None)) else None
    if time is None:
        missing["time"] = NO_TIME
    name = Path(getattr(run, "path", "run")).name
    return RunData(name, timeline, report, report.matrix if report else None, missing, run, time)


def run_data(run: Any) -> RunData:
    """Resolve ``run`` (a folder, a ``Run``, a ``RunAnalysis``, a ``CircuitTimeline``, a
    ``BehaviourReport``, a ``LossMatrix`` or a ``RunData``) into the figures' inputs."""
    if isinstance(run, RunData):
        return run
    if isinstance(run, str | Path):
        from sparsecircuits.run import open_run

        return _from_run(open_run(run))
    if isinstance(run, RunAnalysis):
        missing = {} if run.timeline else {"timeline": NO_CIRCUITS}
        return RunData(run.run_dir.name, run.timeline, run.behaviour, run.behaviour.matrix,
                       missing)
    if isinstance(run, CircuitTimeline):
        return RunData(run.run_dir.name, timeline=run,
                       missing={"behaviour": "no loss matrix given (only a circuit timeline)"})
    if isinstance(run, BehaviourReport):
        return RunData("run", behaviour=run, matrix=run.matrix,
                       missing={"timeline": "no circuit timeline given"})
    if isinstance(run, LossMatrix):
        return RunData("run", matrix=run, missing={
            "timeline": "no circuit timeline given",
            "behaviour": "only a loss matrix given"})
    if callable(getattr(run, "timeline", None)) and callable(getattr(run, "behaviour", None)):
        return _from_run(run)
    raise TypeError(f"cannot draw figures of a {type(run).__name__}: pass a run folder, a Run, "
                    "a RunAnalysis, a CircuitTimeline, a BehaviourReport or a LossMatrix")


# --- derived data ------------------------------------------------------------------------------


def circuit_graph(timeline: CircuitTimeline, name: str, t: int) -> nx.DiGraph | None:
    """The graph ``name`` (a task or ``"weight_graph"``) at checkpoint index ``t``, rebuilt from
    the timeline (nodes, edges with weights and attributes, graph attributes); None where it was
    not extracted."""
    g = timeline.graph(name)
    if not g.extracted[t]:
        return None
    graph = nx.DiGraph(**g.attrs[t])
    for i in np.flatnonzero(g.nodes.present[:, t]):
        graph.add_node(g.nodes.keys[i], **g.nodes.attrs[i])
    for i in np.flatnonzero(g.edges.present[:, t]):
        u, v, param = g.edges.keys[i]
        weight = float(g.edges.value[i, t])
        graph.add_edge(u, v, **{**g.edges.attrs[i], "param": param, "weight": weight,
                                "sign": 1 if weight > 0 else -1})
    return graph


def exposure_ends(timeline: CircuitTimeline, task: str) -> list[int]:
    """Checkpoint indices that end a block which trained ``task`` (cycles ≥ 0)."""
    last = np.append(timeline.blocks[1:] != timeline.blocks[:-1], True)
    return [t for t in range(len(timeline.steps))
            if last[t] and timeline.sources[t] == task and timeline.cycles[t] >= 0]


def solved(timeline: CircuitTimeline, task: str) -> np.ndarray:
    """Per checkpoint: the task's circuit was extracted and solves the task."""
    c = timeline.circuits[task]
    return np.array([bool(e) and a.get("solved", True) is not False
                     for e, a in zip(c.extracted, c.attrs, strict=True)], dtype=bool)


def shift_band(matrix: LossMatrix, first_cycle: int, n_boot: int = 1000, seed: int = 0,
               alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(τ, c(τ), low, high, sources)``: the recovery curve averaged over every exposure of
    every source (``metrics.offset_averaged_curve``, the curve ``BehaviourReport`` scores) and a
    pointwise percentile bootstrap interval over sources (the unit its interval resamples).
    Empty arrays when no source has an exposure window."""
    curves = metrics.source_offset_curves(matrix, first_cycle)
    if not curves:
        empty = np.array([])
        return empty, empty, empty, empty, 0
    rows = np.array([curve for curve, _ in curves.values()])
    mean = metrics.nanmean_rows(rows)
    rng = np.random.default_rng(seed)
    draws = np.array([metrics.nanmean_rows(rows[rng.integers(0, len(rows), len(rows))])
                      for _ in range(n_boot)])
    with warnings.catch_warnings():  # an offset no window reaches is nan in every draw
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    return np.arange(len(mean)), mean, low, high, len(rows)


def finite(values: Any) -> bool:
    """Any finite number in ``values``."""
    array = np.asarray(values, dtype=float)
    return bool(array.size) and bool(np.isfinite(array).any())


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"
