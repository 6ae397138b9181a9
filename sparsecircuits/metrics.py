"""Metrics on loss matrices, presence arrays and sets: pure functions on numpy arrays and tables.

The loss matrix ``L[k, j]`` is the loss on source ``j`` evaluated at the end of block ``k``
(the trainer's ``evals.jsonl``). Its rows are block boundaries, not steps, so "row ``a``" below is
always a block, and the *exposure rows* of a source are the rows whose block trained it.

Recovery scores follow Yang et al. (2024): RS = (max − pre) / (max − post), where *post* is the
loss right after an exposure, *max* the peak before the next exposure and *pre* the loss just
before it. RS = 0: nothing of the forgetting recovered before re-exposure; RS = 1: all of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

Event = tuple[int, str, int]
"""``(element_index, kind, checkpoint_index)`` with kind "formed", "faded" or "recovered"."""


# --- the loss matrix ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LossMatrix:
    """Loss on every evaluated source at every block boundary; rows in step order.

    ``steps``, ``cycles``, ``blocks``, ``positions`` and ``trained`` have one entry per row
    (``trained[k]`` is the source block ``k`` trained); ``loss`` is ``[rows, len(sources)]``,
    nan where a source was not evaluated. The arrays are read-only.
    """

    steps: np.ndarray
    cycles: np.ndarray
    blocks: np.ndarray
    positions: np.ndarray
    trained: tuple[str, ...]
    sources: tuple[str, ...]
    loss: np.ndarray

    def column(self, source: str) -> np.ndarray:
        """The loss on ``source`` at every row."""
        if source not in self.sources:
            raise KeyError(f"no evaluations of source {source!r}; evaluated: {self.sources}")
        return self.loss[:, self.sources.index(source)]


class _Row(NamedTuple):
    step: int
    cycle: int
    block: int
    position: int
    source: str
    losses: dict[str, float]


def _parse(record: dict[str, Any]) -> _Row:
    """One evals.jsonl record as a row; ValueError on a missing or ill-typed field."""
    try:
        return _Row(
            int(record["step"]),
            int(record["cycle"]),
            int(record["block"]),
            int(record["position"]),
            record["source"],
            {name: float(scores["loss"]) for name, scores in record["evals"].items()},
        )
    except KeyError as err:
        raise ValueError(f"missing field {err}") from None
    except (TypeError, AttributeError) as err:
        raise ValueError(f"malformed record: {err}") from None


def _build(rows: Iterable[_Row]) -> LossMatrix:
    by_step = {row.step: row for row in rows}
    ordered = [by_step[step] for step in sorted(by_step)]
    sources = tuple(dict.fromkeys(name for row in ordered for name in row.losses))
    loss = np.array(
        [[row.losses.get(name, np.nan) for name in sources] for row in ordered], dtype=float
    ).reshape(len(ordered), len(sources))

    def column(field: str) -> np.ndarray:
        return np.array([getattr(row, field) for row in ordered], dtype=int)

    matrix = LossMatrix(
        steps=column("step"),
        cycles=column("cycle"),
        blocks=column("block"),
        positions=column("position"),
        trained=tuple(row.source for row in ordered),
        sources=sources,
        loss=loss,
    )
    for array in (matrix.steps, matrix.cycles, matrix.blocks, matrix.positions, matrix.loss):
        array.flags.writeable = False
    return matrix


def loss_matrix(records: Iterable[dict[str, Any]]) -> LossMatrix:
    """The loss matrix of evals.jsonl-style records, in step order.

    When a step is logged twice (a resumed run re-logs a block) the last record wins. Columns are
    every source evaluated anywhere, in order of first appearance.
    """
    return _build(_parse(record) for record in records)


def read_evals(path: str | Path) -> LossMatrix:
    """Read ``evals.jsonl``; a malformed line raises ValueError naming ``path:line``."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(_parse(json.loads(line)))
            except ValueError as err:  # json.JSONDecodeError is a ValueError
                raise ValueError(f"{path}:{number}: {err}") from None
    return _build(rows)


def exposures(matrix: LossMatrix, source: str) -> list[int]:
    """Row indices of the blocks that trained ``source``."""
    return [row for row, trained in enumerate(matrix.trained) if trained == source]


# --- anticipatory recovery on losses ----------------------------------------------------------


def _windows(matrix: LossMatrix, first_cycle: int) -> Iterable[tuple[str, int, np.ndarray]]:
    """Yield ``(source, exposure row a, L[a:a+K, j] − L[a, j])`` for every complete window.

    K is the number of distinct sources trained in cycles ≥ ``first_cycle``. A window starts at
    an exposure row in a cycle ≥ ``first_cycle``; it is dropped if it runs past the last row, or
    if the source is trained again inside it (at τ = 1..K−1, possible when positions vary).
    """
    in_cycles = [t for t, c in zip(matrix.trained, matrix.cycles, strict=True) if c >= first_cycle]
    width = len(set(in_cycles))
    for source in dict.fromkeys(in_cycles):
        column = matrix.column(source)
        rows = exposures(matrix, source)
        for a, next_a in zip(rows, [*rows[1:], len(column)], strict=True):
            if matrix.cycles[a] >= first_cycle and a + width <= next_a:
                yield source, a, column[a : a + width] - column[a]


def source_shift_curves(matrix: LossMatrix, first_cycle: int = 1) -> dict[str, np.ndarray]:
    """Per source j, the mean over its complete windows of c_j(τ) = L[a+τ, j] − L[a, j].

    τ = 0..K−1 runs from an exposure row ``a`` (τ = 0, the post-exposure loss) to the row just
    before a round-robin re-exposure (τ = K−1), K = sources trained per cycle; windows are those
    of ``_windows`` (cycles ≥ ``first_cycle``, complete, not cut by a re-exposure). The
    re-exposure row τ = K is left out: it opens the next window, and in a shuffled run it is
    mostly not a re-exposure, so "pre" is always the last point. Sources with no complete window
    are left out; missing evaluations (nan) propagate.
    """
    windows: dict[str, list[np.ndarray]] = {}
    for source, _, window in _windows(matrix, first_cycle):
        windows.setdefault(source, []).append(window)
    return {source: np.mean(curves, axis=0) for source, curves in windows.items()}


def shift_averaged_curve(matrix: LossMatrix, first_cycle: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Yang's shift-averaged loss: ``(offsets τ = 0..K−1, c(τ))``.

    c(τ) = mean over sources j of c_j(τ), where c_j(τ) is the mean over j's complete windows
    L[a+τ, j] − L[a, j] (``source_shift_curves``): sources weigh equally however many windows
    they kept. Each window is aligned to its own exposure row, so shuffled schedules work too.
    """
    curves = source_shift_curves(matrix, first_cycle)
    if not curves:
        raise ValueError(f"no complete exposure window in cycles >= {first_cycle}")
    curve = np.mean(list(curves.values()), axis=0)
    return np.arange(len(curve)), curve


def recovery_score(curve: np.ndarray | Sequence[float]) -> float:
    """RS = (max − pre) / (max − post) of a curve from one exposure to just before the next.

    post = curve[0], pre = curve[−1], max = max(curve); nan when max == post (nothing forgotten).
    0 for monotone forgetting; above 1 when the loss ends below its post-exposure value.
    """
    values = np.asarray(curve, dtype=float)
    post, pre, peak = values[0], values[-1], values.max()
    if peak == post:
        return float("nan")
    return float((peak - pre) / (peak - post))


def averaged_recovery_score(curves: np.ndarray) -> float:
    """RS of the mean of per-source curves (rows): the statistic the source bootstrap resamples."""
    return recovery_score(np.mean(curves, axis=0))


def per_source_recovery(
    matrix: LossMatrix, first_cycle: int = 1
) -> dict[str, list[tuple[int, float]]]:
    """Per source, ``(cycle, RS)`` of each complete window, in exposure order.

    Noisy: one window is a handful of evaluations, and the denominator max − post is near zero
    whenever a source is barely forgotten, so interference that happens to rise and fall (a
    random walk, present in shuffled runs too) gives large scores. Report the shift-averaged RS,
    with ``recovery_score_ci``, beside the shuffled control; use these for inspection.
    """
    scores: dict[str, list[tuple[int, float]]] = {}
    for source, a, window in _windows(matrix, first_cycle):
        scores.setdefault(source, []).append((int(matrix.cycles[a]), recovery_score(window)))
    return scores


def prequential_loss(matrix: LossMatrix, first_cycle: int = 1) -> dict[str, float]:
    """Per source j, the mean of L[a−1, j] over its exposure rows a ≥ 1 in cycles ≥ first_cycle.

    L[a−1, j] is the loss on j at the end of the block before j's block: evaluated before
    training on it. The overall prequential loss is the mean of the values.
    """
    result = {}
    for source in dict.fromkeys(matrix.trained):
        rows = [
            a - 1 for a in exposures(matrix, source) if a >= 1 and matrix.cycles[a] >= first_cycle
        ]
        if rows:
            result[source] = float(np.mean(matrix.column(source)[rows]))
    return result


def savings(
    losses_by_step: np.ndarray,
    steps: np.ndarray,
    exposure_starts: Sequence[int],
    exposure_ends: Sequence[int],
    tol: float = 0.0,
) -> list[int | None]:
    """Training steps each re-exposure needs to regain the loss the previous exposure ended at.

    Needs evaluations finer than block boundaries (a trainer evaluating every N steps gives savings
    to within N steps): ``losses_by_step[i]`` is one source's loss after training step
    ``steps[i]`` (increasing). Exposure i trains steps ``exposure_starts[i]..exposure_ends[i]``.
    For each re-exposure i ≥ 1, target = the loss at the last eval step ≤ ``exposure_ends[i−1]``;
    the result is s − start_i + 1 for the first eval step s in [start_i − 1, end_i] whose loss is
    ≤ target + tol (0: regained before re-exposure), or None if not regained by end_i.
    """
    losses = np.asarray(losses_by_step, dtype=float)
    steps = np.asarray(steps)
    if np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be strictly increasing")
    result: list[int | None] = []
    for previous_end, start, end in zip(
        exposure_ends[:-1], exposure_starts[1:], exposure_ends[1:], strict=True
    ):
        last = np.searchsorted(steps, previous_end, side="right") - 1
        if last < 0:
            raise ValueError(f"no evaluation at or before step {previous_end}")
        reached = (steps >= start - 1) & (steps <= end) & (losses <= losses[last] + tol)
        hits = steps[reached]
        result.append(int(hits[0] - start + 1) if hits.size else None)
    return result


# --- bootstrap ---------------------------------------------------------------------------------


def bootstrap_ci(
    *samples: np.ndarray | Sequence[float],
    statistic: Callable[..., float] = np.mean,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(statistic(*samples), low, high)``: a percentile bootstrap interval at level 1 − alpha.

    Each replicate resamples the rows (axis 0) of every sample independently, with replacement,
    and calls ``statistic`` on the resampled samples (default: the mean of one sample). Replicates
    that are nan (e.g. RS with nothing forgotten) are dropped; if all are, low = high = nan.
    """
    arrays = [np.asarray(sample) for sample in samples]
    if not arrays or any(len(array) == 0 for array in arrays):
        raise ValueError("bootstrap_ci needs at least one non-empty sample")
    rng = np.random.default_rng(seed)
    replicates = np.array(
        [
            statistic(*(array[rng.integers(0, len(array), len(array))] for array in arrays))
            for _ in range(n_boot)
        ],
        dtype=float,
    )
    replicates = replicates[~np.isnan(replicates)]
    estimate = float(statistic(*arrays))
    if replicates.size == 0:
        return estimate, float("nan"), float("nan")
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return estimate, float(low), float(high)


def recovery_score_ci(
    matrix: LossMatrix,
    first_cycle: int = 1,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(RS, low, high)`` of the shift-averaged curve, bootstrapping over sources.

    Each replicate resamples the per-source curves with replacement and takes the RS of their mean.
    """
    curves = np.array(list(source_shift_curves(matrix, first_cycle).values()))
    return bootstrap_ci(
        curves, statistic=averaged_recovery_score, n_boot=n_boot, alpha=alpha, seed=seed
    )


@dataclass(frozen=True)
class Comparison:
    """A metric on two runs, their difference ``a − b`` and its bootstrap interval."""

    a: float
    b: float
    diff: float
    low: float
    high: float


def compare_runs(
    metric_a: np.ndarray | Sequence[float],
    metric_b: np.ndarray | Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Comparison:
    """Compare ``statistic`` on two runs (e.g. cyclic vs its shuffled control).

    ``metric_a`` and ``metric_b`` hold one row per source (a value, or a curve); the interval of
    statistic(a) − statistic(b) resamples the sources of each run independently. For the
    recovery score pass the rows of ``source_shift_curves`` and ``averaged_recovery_score``.
    """

    def difference(a: np.ndarray, b: np.ndarray) -> float:
        return statistic(a) - statistic(b)

    diff, low, high = bootstrap_ci(
        metric_a, metric_b, statistic=difference, n_boot=n_boot, alpha=alpha, seed=seed
    )
    a, b = float(statistic(np.asarray(metric_a))), float(statistic(np.asarray(metric_b)))
    return Comparison(a=a, b=b, diff=diff, low=low, high=high)


# --- sets, presence and circuits --------------------------------------------------------------


def jaccard(a: set[Any] | frozenset[Any], b: set[Any] | frozenset[Any]) -> float:
    """|a ∩ b| / |a ∪ b|; 1.0 for two empty sets (nothing differs)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def weighted_jaccard(wa: dict[Any, float], wb: dict[Any, float]) -> float:
    """Σ_k min(|wa_k|, |wb_k|) / Σ_k max(|wa_k|, |wb_k|) over the union of keys (missing = 0).

    1.0 when both are empty or all zero, as for ``jaccard``.
    """
    keys = wa.keys() | wb.keys()
    a = np.abs([wa.get(key, 0.0) for key in keys])
    b = np.abs([wb.get(key, 0.0) for key in keys])
    total = np.maximum(a, b).sum()
    return float(np.minimum(a, b).sum() / total) if total else 1.0


def events(present: np.ndarray) -> list[Event]:
    """Presence changes of ``present[element, checkpoint]``, sorted by element then checkpoint.

    "formed": first present (at checkpoint 0 if present there); "faded": present at t−1, absent
    at t; "recovered": absent at t−1, present at t, and present at some checkpoint before t.
    """
    present = np.asarray(present, dtype=bool)
    before = np.zeros_like(present)
    before[:, 1:] = present[:, :-1]
    ever_before = np.logical_or.accumulate(before, axis=1)
    appears = present & ~before
    found = [
        (np.nonzero(appears & ~ever_before), "formed"),
        (np.nonzero(before & ~present), "faded"),
        (np.nonzero(appears & ever_before), "recovered"),
    ]
    result = [
        (int(element), kind, int(checkpoint))
        for (elements, checkpoints), kind in found
        for element, checkpoint in zip(elements, checkpoints, strict=True)
    ]
    return sorted(result, key=lambda event: (event[0], event[2]))


def churn_counts(prev: np.ndarray, now: np.ndarray, ever: np.ndarray) -> tuple[int, int, int]:
    """``(births, deaths, revivals)`` between two presence arrays of the same shape.

    ``ever`` marks elements present at any checkpoint before ``now``. births: absent before,
    present now, never seen; deaths: present before, absent now; revivals: absent before,
    present now, seen earlier.
    """
    prev, now, ever = (np.asarray(x, dtype=bool) for x in (prev, now, ever))
    arrived = now & ~prev
    return int((arrived & ~ever).sum()), int((prev & ~now).sum()), int((arrived & ever).sum())


def circuit_recovery_score(jaccard_curve: np.ndarray | Sequence[float]) -> float:
    """RS of 1 − J, for J the Jaccard to the post-exposure circuit from one exposure to the next.

    A fading circuit lowers J, so 1 − J plays the loss: RS = (J[−1] − min J) / (J[0] − min J),
    the share of the lost overlap regained before re-exposure; nan when J never falls.
    """
    return recovery_score(1.0 - np.asarray(jaccard_curve, dtype=float))
