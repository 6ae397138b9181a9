"""Metrics on loss matrices, presence arrays and sets: pure functions on numpy arrays and tables.

The loss matrix ``L[k, j]`` is the loss on source ``j`` evaluated at the end of block ``k``
(the trainer's ``evals.jsonl``). Its rows are block boundaries, not steps, so "row ``a``" below is
always a block, and the *exposure rows* of a source are the rows whose block trained it.

Recovery scores follow Yang et al. (2024): RS = (max − pre) / (max − post), where *post* is the
loss right after an exposure, *max* the peak before the next exposure and *pre* the loss just
before it. RS = 0: nothing of the forgetting recovered before re-exposure; RS = 1: all of it.

Two estimators live here. The first (``shift_averaged_curve``, ``recovery_score``,
``recovery_score_ci``) is the one the timeline reports today: it keeps only the exposure windows
that no re-exposure cuts (under a shuffled schedule about half of them, those with long gaps)
and takes the max of the curve as the peak, so RS ≥ 0 always and noise alone reads as a small
positive score with an interval bounded by 0. The second is what a claim should use:

- ``exposure_windows`` / ``offset_averaged_curve``: every exposure opens a window that runs to
  the next exposure of the same source (or the end of the run); c(τ) averages, at each offset
  τ, the windows that reach τ without a re-exposure (a life-table, or Kaplan-Meier, estimate of
  the forgetting curve: no window is thrown away, none is counted past its re-exposure).
- ``signed_recovery_score``: RS with the numerator's peak at a fixed offset chosen in advance
  (the middle of the window unless told), so it goes negative when the loss keeps rising, and
  its numerator has expectation ≤ 0 when nothing anticipates the re-exposure.
  ``signed_recovery_ci`` gives it a two-sided bootstrap interval over sources.
- ``signed_circuit_recovery_score``: the same on 1 − Jaccard to the post-exposure circuit.
- ``pre_exposure_loss``: the absolute loss just before each re-exposure.
- ``savings_note``: whether ``metrics.jsonl``'s logging resolves savings at all.
- ``seed_interval``: a Student-t interval of one metric over training seeds.
"""

from __future__ import annotations

import json
import math
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
    Only complete windows count, a biased subset under a shuffled schedule: prefer
    ``offset_averaged_curve``.
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
    Never below 0 (max ≥ pre), so noise alone scores above 0: prefer
    ``signed_recovery_score``.
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


# --- every exposure, signed scores ----------------------------------------------------------


class ExposureWindow(NamedTuple):
    """One exposure of ``source`` at loss-matrix row ``row`` and what followed it.

    ``curve[τ] = L[row+τ, source] − L[row, source]`` for τ = 0 .. up to K−1, stopped before
    the next exposure of the same source (``gap`` rows later; None: none follows) and at the last
    row of the matrix."""

    source: str
    row: int
    cycle: int
    gap: int | None
    curve: np.ndarray


def _width(matrix: LossMatrix, first_cycle: int) -> tuple[int, list[str]]:
    """K, the distinct evaluated sources trained in cycles ≥ ``first_cycle``, and those sources
    in order of first training."""
    trained = [t for t, c in zip(matrix.trained, matrix.cycles, strict=True)
               if c >= first_cycle and t in matrix.sources]
    sources = list(dict.fromkeys(trained))
    return len(sources), sources


def exposure_windows(matrix: LossMatrix, first_cycle: int = 1) -> list[ExposureWindow]:
    """A window for every exposure in cycles ≥ ``first_cycle`` (sources without evaluations,
    such as "mixed" blocks, are skipped), in row order per source.

    Unlike ``_windows``, a window cut by a re-exposure or by the end of the run is kept, up to
    the cut: under a shuffled schedule that keeps every exposure instead of the half whose next
    exposure happens to be at least K rows away."""
    width, sources = _width(matrix, first_cycle)
    windows = []
    for source in sources:
        column = matrix.column(source)
        rows = exposures(matrix, source)
        for a, next_a in zip(rows, [*rows[1:], None], strict=True):
            if matrix.cycles[a] < first_cycle:
                continue
            end = min(a + width, len(column) if next_a is None else next_a)
            gap = None if next_a is None else next_a - a
            windows.append(ExposureWindow(source, a, int(matrix.cycles[a]), gap,
                                          column[a:end] - column[a]))
    return windows


def source_offset_curves(
    matrix: LossMatrix, first_cycle: int = 1
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per source, ``(c_j, n_j)``: at every offset τ = 0..K−1, the mean of ``curve[τ]`` over
    the source's ``exposure_windows`` that reach τ, and how many do (c_j is nan where none does).

    At τ the average runs over the windows with no re-exposure in the first τ rows: each window
    counts at every offset it was observed at, none past its re-exposure. In a round-robin run
    every window but those the run's end cuts reaches K−1, and c_j equals
    ``source_shift_curves``' curve, up to those cut windows. Missing evaluations (nan) are
    skipped at their offset."""
    width, _ = _width(matrix, first_cycle)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for window in exposure_windows(matrix, first_cycle):
        seen = ~np.isnan(window.curve)
        total = sums.setdefault(window.source, np.zeros(width))
        count = counts.setdefault(window.source, np.zeros(width, dtype=int))
        total[: len(seen)][seen] += window.curve[seen]
        count[: len(seen)] += seen
    with np.errstate(invalid="ignore", divide="ignore"):
        return {source: (np.where(counts[source] > 0, sums[source] / counts[source], np.nan),
                         counts[source]) for source in sums}


def offset_averaged_curve(
    matrix: LossMatrix, first_cycle: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets τ = 0..K−1, c(τ))``: the mean over sources of ``source_offset_curves`` (every
    source weighs equally, at each offset over the sources observed there).

    The every-exposure counterpart of ``shift_averaged_curve``; a shuffled control's c(τ) is
    the forgetting curve without anticipation, measured on all of its exposures."""
    curves = source_offset_curves(matrix, first_cycle)
    if not curves:
        raise ValueError(f"no exposure window in cycles >= {first_cycle}")
    return np.arange(len(next(iter(curves.values()))[0])), nanmean_rows(
        np.array([curve for curve, _ in curves.values()]))


def nanmean_rows(rows: np.ndarray) -> np.ndarray:
    """Column means ignoring nan; nan where a column has no value (without a warning)."""
    rows = np.asarray(rows, dtype=float)
    seen = ~np.isnan(rows)
    count = seen.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(seen, rows, 0.0).sum(axis=0) / count, np.nan)


def signed_recovery_score(curve: np.ndarray | Sequence[float], peak: int | None = None) -> float:
    """RS = (c[peak] − c[−1]) / (max c − c[0]): Yang et al.'s score with the peak's *value* taken
    at a fixed offset, by default the middle of the window, ``len(curve) // 2`` (their curves
    stop rising about halfway); the denominator is theirs, the whole forgetting seen.

    Positive when the loss falls from the peak offset to just before re-exposure (1: back to the
    post-exposure loss), 0 when it stays level, negative when it keeps rising (down to −1 when
    the loss rises monotonically from post to pre). For a curve whose maximum sits at ``peak``
    it equals ``recovery_score``. Fixing the numerator's offset in advance is what makes the
    score honest: with no anticipation the expected curve does not fall after the peak offset,
    so the numerator's expectation is ≤ 0 and noise spreads the score around 0 or below; the
    max-based numerator max − pre is ≥ 0 by construction. Pick ``peak`` before looking (from the
    design or a pilot run): a peak later than the true one understates recovery, an earlier one
    mixes forgetting into it. (A denominator taken at the peak offset, c[peak] − c[0], explodes
    when little is forgotten by then: −37 on a real run whose curve first dipped below c[0].)
    nan when the window has no interior offset (K < 3), when c[0], c[peak] or c[−1] is nan, or
    when max c ≤ c[0] (nothing forgotten).
    """
    values = np.asarray(curve, dtype=float)
    peak = len(values) // 2 if peak is None else peak
    if not 0 < peak < len(values) - 1:
        return float("nan")
    post, top, pre = values[0], values[peak], values[-1]
    if np.isnan([post, top, pre]).any():
        return float("nan")
    highest = float(np.nanmax(values))
    if not highest > post:
        return float("nan")
    return float((top - pre) / (highest - post))


def averaged_signed_recovery_score(curves: np.ndarray, peak: int | None = None) -> float:
    """``signed_recovery_score`` of the mean of per-source curves (rows, nan skipped per offset):
    the statistic ``signed_recovery_ci`` resamples."""
    return signed_recovery_score(nanmean_rows(curves), peak)


def signed_recovery_ci(
    matrix: LossMatrix,
    first_cycle: int = 1,
    peak: int | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(RS, low, high)``: ``signed_recovery_score`` of ``offset_averaged_curve`` with a
    two-sided percentile bootstrap interval at level 1 − alpha over sources (each replicate
    resamples the per-source curves of ``source_offset_curves``). Either bound may be negative.

    Over sources, so it says how much the score depends on which tasks were trained, not how it
    varies between training seeds: for that, compute the score per seed and use
    ``seed_interval``. Compare against a shuffled control (``compare_runs`` with
    ``averaged_signed_recovery_score``), never against 0 alone."""
    curves = np.array([c for c, _ in source_offset_curves(matrix, first_cycle).values()])
    if not len(curves):
        raise ValueError(f"no exposure window in cycles >= {first_cycle}")

    def statistic(rows: np.ndarray) -> float:
        return averaged_signed_recovery_score(rows, peak)

    return bootstrap_ci(curves, statistic=statistic, n_boot=n_boot, alpha=alpha, seed=seed)


def pre_exposure_loss(matrix: LossMatrix, first_cycle: int = 1) -> dict[str, float]:
    """Per source j, the mean absolute loss L[a−1, j] just before each *re*-exposure a of j in
    cycles ≥ ``first_cycle`` (a previous exposure of j exists); sources never re-exposed there
    are left out, nan evaluations skipped.

    The level that the recovery score's "pre" is relative to: a score can be high while the loss
    before re-exposure stays far above where it was after the last exposure, and two arms can
    have equal scores at different levels. It equals ``prequential_loss`` when every exposure it
    counts is a re-exposure (``first_cycle`` ≥ 1 after a first cycle of every source);
    ``prequential_loss`` also counts first exposures."""
    result = {}
    for source in _width(matrix, 0)[1]:
        rows = exposures(matrix, source)
        before = [a - 1 for a in rows[1:] if matrix.cycles[a] >= first_cycle]
        values = matrix.column(source)[before]
        values = values[~np.isnan(values)]
        if len(values):
            result[source] = float(values.mean())
    return result


def savings_note(log_every: int, steps_per_block: int, min_points: int = 4) -> str | None:
    """None when logging every ``log_every`` steps resolves ``savings`` in blocks of
    ``steps_per_block`` steps; else a note to print instead of the numbers.

    ``savings`` compares a re-exposure's logged losses with the last logged loss of the previous
    exposure. With fewer than ``min_points`` logged steps per block, that "last" loss is up to
    ``log_every − 1`` steps before the block's end, often early in it, and the first logged step
    of the re-exposure usually beats it: the result is 1 (or 0) by construction, not a
    measurement. Resolution is ``log_every`` steps at best."""
    if log_every < 1 or steps_per_block < 1:
        raise ValueError("log_every and steps_per_block must be positive")
    points = steps_per_block // log_every
    if points >= min_points:
        return None
    needed = max(1, steps_per_block // min_points)
    return (f"savings: not resolved: metrics.jsonl logs every {log_every} steps, {points} "
            f"per {steps_per_block}-step block (needs >= {min_points}; run.log_every <= "
            f"{needed})")


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    if df % 2:
        if df == 1:
            return 2 * theta / math.pi
        for k in range(1, (df - 3) // 2 + 1):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    for k in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with integer ``df`` ≥ 1, by bisection on
    the exact distribution function (no scipy here)."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    target, low, high = 2 * p - 1, 0.0, 1.0
    while _t_two_sided(high, df) < target:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_two_sided(mid, df) < target else (low, mid)
    return (low + high) / 2


def seed_interval(
    values: np.ndarray | Sequence[float], alpha: float = 0.05
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of one metric over training seeds of one arm: the Student-t
    interval mean ± t(1 − alpha/2, n − 1) · sd / sqrt(n), at level 1 − alpha.

    Seeds are the unit a claim generalises over, and there are few of them (3-10): a percentile
    bootstrap over 3 values can only return their range, while the t interval is exact for
    normal values and conservative enough for near-normal ones. nan values (a seed whose score
    is undefined) are dropped; with fewer than 2 seeds left, low = high = nan."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    if not len(array):
        return float("nan"), float("nan"), float("nan")
    mean = float(array.mean())
    if len(array) < 2:
        return mean, float("nan"), float("nan")
    half = t_quantile(1 - alpha / 2, len(array) - 1) * float(array.std(ddof=1)) / math.sqrt(
        len(array))
    return mean, mean - half, mean + half


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
    """A metric on two runs, their difference ``a − b`` and its interval: a bootstrap over the
    runs' sources (``compare_runs``), or a t interval over seeds for two arms of a sweep
    (``sweep.compare_arms``)."""

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


def signed_circuit_recovery_score(
    jaccard_curve: np.ndarray | Sequence[float], peak: int | None = None
) -> float:
    """``signed_recovery_score`` of 1 − J, J the Jaccard to the post-exposure circuit from one
    exposure to just before the next: (J[−1] − J[peak]) / (J[0] − min J), negative when the
    circuit keeps losing overlap after the peak offset; nan when J never falls."""
    return signed_recovery_score(1.0 - np.asarray(jaccard_curve, dtype=float), peak)
