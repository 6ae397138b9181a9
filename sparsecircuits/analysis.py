"""A run's headline numbers, and a run beside its control.

:class:`RunAnalysis` joins a run's behaviour (:mod:`sparsecircuits.behaviour`) and its circuit
timeline (:mod:`sparsecircuits.circuits.timeline`): ``samples`` are every comparable metric as
rows a bootstrap resamples, ``summary`` the flat table ``sparsecircuits timeline`` prints, and
:func:`compare` sets a cyclic run beside its shuffled control with an interval on each
difference.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from sparsecircuits import metrics
from sparsecircuits.behaviour import BehaviourReport, behaviour
from sparsecircuits.circuits.timeline import (
    CHURN,
    GROUPS,
    CircuitTimeline,
    circuit_rs_of_mean,
)
from sparsecircuits.metrics import Comparison
from sparsecircuits.rundir import RunDir


@dataclass(frozen=True, eq=False)
class RunAnalysis:
    """A run's behaviour and, when its circuits have been extracted, its circuit timeline."""

    run_dir: Path
    behaviour: BehaviourReport
    timeline: CircuitTimeline | None

    @classmethod
    def load(cls, run_dir: str | Path, first_cycle: int = 1,
             timeline: CircuitTimeline | None = None) -> RunAnalysis:
        """The analysis of a run folder; its circuit timeline is read unless given (and None
        when nothing has been extracted)."""
        run = RunDir(run_dir)
        if timeline is None and run.circuit_steps():
            timeline = CircuitTimeline.from_run(run.root)
        return cls(run.root, behaviour(run.root, first_cycle), timeline)

    def samples(self) -> dict[str, tuple[np.ndarray, Callable[[np.ndarray], float]]]:
        """Every comparable metric as ``(rows, statistic)``: rows are sources, tasks or blocks,
        the unit the bootstrap of ``compare`` resamples."""
        b, first_cycle = self.behaviour, self.behaviour.first_cycle
        shift = {source: curve for source, (curve, _) in
                 metrics.source_offset_curves(b.matrix, first_cycle).items()}
        trained = [s for s in dict.fromkeys(b.matrix.trained) if s in b.matrix.sources]
        out: dict[str, tuple[np.ndarray, Callable[[np.ndarray], float]]] = {
            "loss.final": (np.array([b.matrix.column(s)[-1] for s in trained]), np.mean),
        }
        if shift:
            out["loss.recovery_score"] = (
                np.array(list(shift.values())), metrics.averaged_signed_recovery_score)
        if b.pre_exposure:
            out["loss.pre_exposure"] = (np.array(list(b.pre_exposure.values())), np.mean)
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
            out["circuit.recovery_score"] = (rows, circuit_rs_of_mean)
            out["circuit.pre_exposure_jaccard"] = (rows[:, -1], np.nanmean)
        survival = {task: _pre_exposure(self.timeline, task, first_cycle)
                    for task in self.timeline.tasks}
        survival = {task: value for task, value in survival.items() if not math.isnan(value)}
        if survival:
            out["circuit.survival_pre_exposure"] = (np.array(list(survival.values())), np.mean)
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
        ``(estimate, low, high)``; ``notes`` lists what could not be computed and why.
        Computed once per analysis; each call returns its own copy."""
        return {key: list(v) if isinstance(v, list) else v for key, v in self._summary.items()}

    @cached_property
    def _summary(self) -> dict[str, Any]:
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
            out[f"{name}.survival_pre_exposure.edges"] = _pre_exposure(t, name, first_cycle)
            out[f"{name}.ballooned_checkpoints"] = int(t.ballooned(name).sum())
            if name in curves:
                out[f"{name}.pre_exposure_jaccard.edges"] = float(curves[name][-1])
                out[f"{name}.recovery_score.edges"] = metrics.signed_circuit_recovery_score(
                    curves[name])
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


def _pre_exposure(timeline: CircuitTimeline, task: str, first_cycle: int) -> float:
    """Mean fraction of the task's post-exposure circuit edges still alive at the checkpoints
    just before its re-exposures (cycles >= ``first_cycle``); nan when there are none."""
    edges = timeline.survival(task)["edges"]
    before = [t for t in range(len(edges) - 1)
              if timeline.sources[t + 1] == task and timeline.cycles[t + 1] >= first_cycle
              and timeline.sources[t] != task]
    values = edges[before] if before else np.array([])
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        estimate, low, high = value
        return f"{estimate:.3f}  [{low:.3f}, {high:.3f}]"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def report(run: RunAnalysis, control: RunAnalysis | None = None) -> str:
    """The summary of a run as text; with ``control`` (its shuffled twin), every comparable
    metric beside the control's, with the difference run − control and its 95% interval."""
    summary = run.summary()
    notes = summary.pop("notes")
    lines = [f"{name:<44} {_format(value)}" for name, value in summary.items()]
    if control is not None:
        lines += ["", f"{'control: ' + str(control.run_dir):<44} {'run':>8} {'control':>8} "
                      f"{'diff':>8}  95% interval"]
        lines += [f"{name:<44} {c.a:8.3f} {c.b:8.3f} {c.diff:8.3f}  [{c.low:.3f}, {c.high:.3f}]"
                  for name, c in compare(run, control).items()]
    if notes:
        lines += ["", *(f"note: {note}" for note in notes)]
    return "\n".join(lines)
