"""The behaviour of a run: its losses through a cyclic schedule (Yang et al. 2024).

From the loss matrix (``evals.jsonl``: every task and source at every block boundary) and the
logged training loss (``metrics.jsonl``): the offset-averaged recovery curve over every exposure
and its signed score, the loss just before each re-exposure, the prequential loss, and savings
on re-exposure where the logging resolves them. Pure functions of the run's
files; the circuit side lives in :mod:`sparsecircuits.circuits.timeline`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparsecircuits import metrics
from sparsecircuits.checkpoint import read_run_config
from sparsecircuits.metrics import LossMatrix
from sparsecircuits.rundir import RunDir


@dataclass(frozen=True, eq=False)
class BehaviourReport:
    """The behavioural metrics of a run, from ``evals.jsonl`` (and ``metrics.jsonl`` for savings).

    ``cycle_starts``: rows of the loss matrix where a new cycle begins (the lines to draw on the
    per-task curves ``matrix.column(source)``). ``offsets``/``shift_curve``: the recovery curve
    c(τ) averaged over every exposure of every source (``metrics.offset_averaged_curve``: a
    shuffled control's windows count as a cyclic run's do); ``recovery``: its signed score
    (``metrics.signed_recovery_score``, negative when the loss keeps rising) with a two-sided
    bootstrap interval over sources. ``pre_exposure``: per source, the absolute loss just before
    its re-exposures. ``prequential``: per source, the loss before its block.
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
    pre_exposure: dict[str, float]
    per_source_recovery: dict[str, list[tuple[int, float]]]
    prequential: dict[str, float]
    savings: dict[str, list[int | None]]
    notes: tuple[str, ...]


def behaviour(
    run_dir: str | Path, first_cycle: int = 1, n_boot: int = 1000, seed: int = 0
) -> BehaviourReport:
    """The behavioural metrics of ``run_dir`` over cycles ≥ ``first_cycle``."""
    run = RunDir(run_dir)
    matrix = metrics.read_evals(run.evals)
    notes = []
    try:
        offsets, curve = metrics.offset_averaged_curve(matrix, first_cycle)
        recovery = metrics.signed_recovery_ci(matrix, first_cycle, n_boot=n_boot, seed=seed)
    except ValueError as err:
        offsets, curve, recovery = np.arange(0), np.array([]), (math.nan, math.nan, math.nan)
        notes.append(f"recovery score: {err}")
    config = read_run_config(run.root) if run.config.exists() else None
    coarse = config and metrics.savings_note(config.run.log_every,
                                             config.schedule.steps_per_block)
    savings = {} if coarse else _savings(run.metrics, matrix)
    if coarse:
        notes.append(coarse)
    elif not savings:
        notes.append("savings: not evaluable (metrics.jsonl does not log every exposure)")
    return BehaviourReport(
        matrix=matrix,
        first_cycle=first_cycle,
        cycle_starts=np.flatnonzero(np.diff(matrix.cycles, prepend=matrix.cycles[:1] - 1)),
        offsets=offsets,
        shift_curve=curve,
        recovery=recovery,
        pre_exposure=metrics.pre_exposure_loss(matrix, first_cycle),
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
