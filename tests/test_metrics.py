"""Metrics on constructed inputs whose answers are worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sparsecircuits import metrics

# Round robin over K = 3 sources a, b, c for E = 3 cycles, no initial row: row r trains
# "abc"[r % 3]. After each exposure a source's loss follows post + [0, 1, 0.5] (recovers half its
# forgetting before re-exposure), except a's last window, post + [0, 1, 1] (no recovery).
# Offsets: a 0, b 2, c 1; before a first exposure the loss is 3.
ROUND_ROBIN_LOSS = np.array(
    [
        # a    b    c
        [0.0, 3.0, 3.0],  # r0 a, cycle 0
        [1.0, 2.0, 3.0],  # r1 b
        [0.5, 3.0, 1.0],  # r2 c
        [0.0, 2.5, 2.0],  # r3 a, cycle 1
        [1.0, 2.0, 1.5],  # r4 b
        [0.5, 3.0, 1.0],  # r5 c
        [0.0, 2.5, 2.0],  # r6 a, cycle 2
        [1.0, 2.0, 1.5],  # r7 b
        [1.0, 3.0, 1.0],  # r8 c
    ]
)


def _records(loss: np.ndarray, trained: str, per_cycle: int, sources: str = "abc") -> list[dict]:
    """evals.jsonl records for ``loss`` rows, block r training ``trained[r]``, 10 steps a block."""
    return [
        {
            "step": 10 * row + 9,
            "cycle": row // per_cycle,
            "block": row,
            "position": row % per_cycle,
            "source": trained[row],
            "evals": {name: {"loss": value} for name, value in zip(sources, values, strict=True)},
        }
        for row, values in enumerate(loss)
    ]


@pytest.fixture
def round_robin() -> metrics.LossMatrix:
    return metrics.loss_matrix(_records(ROUND_ROBIN_LOSS, "abc" * 3, per_cycle=3))


def test_loss_matrix_fields(round_robin: metrics.LossMatrix) -> None:
    assert round_robin.sources == ("a", "b", "c")
    assert round_robin.trained == tuple("abcabcabc")
    assert round_robin.steps.tolist() == [9, 19, 29, 39, 49, 59, 69, 79, 89]
    assert round_robin.cycles.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert round_robin.positions.tolist() == [0, 1, 2] * 3
    np.testing.assert_array_equal(round_robin.loss, ROUND_ROBIN_LOSS)
    assert metrics.exposures(round_robin, "b") == [1, 4, 7]
    with pytest.raises(ValueError):
        round_robin.loss[0, 0] = 5.0  # read-only


def test_loss_matrix_sorts_fills_and_keeps_the_last_duplicate() -> None:
    def record(step: int, evals: dict[str, float]) -> dict:
        scores = {name: {"loss": value, "accuracy": 0.5} for name, value in evals.items()}
        return {
            "step": step,
            "cycle": 0,
            "block": step,
            "position": step,
            "source": "q",
            "evals": scores,
        }

    matrix = metrics.loss_matrix(
        [record(2, {"q": 0.2, "doc:3": 2.0}), record(1, {"q": 9.0}), record(1, {"q": 0.1})]
    )
    assert matrix.steps.tolist() == [1, 2]
    assert matrix.sources == ("q", "doc:3")
    np.testing.assert_array_equal(matrix.loss, [[0.1, np.nan], [0.2, 2.0]])


def test_read_evals_round_trip_and_error_names_the_line(tmp_path) -> None:
    path = tmp_path / "evals.jsonl"
    lines = [json.dumps(record) for record in _records(ROUND_ROBIN_LOSS[:2], "ab", per_cycle=3)]
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(metrics.read_evals(path).loss, ROUND_ROBIN_LOSS[:2])

    path.write_text("\n".join([*lines, '{"step": 29, "cycle": 0']) + "\n")
    with pytest.raises(ValueError, match=r"evals\.jsonl:3"):
        metrics.read_evals(path)
    path.write_text("\n".join([lines[0], '{"step": 29}', lines[1]]) + "\n")
    with pytest.raises(ValueError, match=r"evals\.jsonl:2: missing field 'cycle'"):
        metrics.read_evals(path)


def test_shift_averaged_curve_by_hand(round_robin: metrics.LossMatrix) -> None:
    # Windows in cycles >= 1 (3 rows each; those running past row 8 dropped): a@3 [0, 1, .5],
    # a@6 [0, 1, 1], b@4 [0, 1, .5], c@5 [0, 1, .5]. Per source a [0, 1, .75], b and c
    # [0, 1, .5]; mean over sources [0, 1, 7/12], RS = (1 − 7/12) / 1 = 5/12.
    per_source = metrics.source_shift_curves(round_robin)
    np.testing.assert_allclose(per_source["a"], [0, 1, 0.75])
    np.testing.assert_allclose(per_source["c"], [0, 1, 0.5])
    offsets, curve = metrics.shift_averaged_curve(round_robin)
    assert offsets.tolist() == [0, 1, 2]
    np.testing.assert_allclose(curve, [0, 1, 7 / 12])
    assert metrics.recovery_score(curve) == pytest.approx(5 / 12)
    # From cycle 0, a@0, b@1, c@2 join: a [0, 1, 2/3], curve [0, 1, 5/9], RS 4/9.
    _, curve = metrics.shift_averaged_curve(round_robin, first_cycle=0)
    np.testing.assert_allclose(curve, [0, 1, 5 / 9])


def test_shift_curves_align_to_own_exposures_when_positions_vary() -> None:
    # Orders xy, yx, xy: x trains rows 0, 3, 4; y rows 1, 2, 5; K = 2, windows of 2 rows.
    # Kept: x@0 (rows 0-1), x@4 (rows 4-5), y@2 (rows 2-3). Dropped: x@3 and y@1 (re-trained
    # one row later), y@5 (past the end).
    loss = np.array([[0.0, 5.0], [2.0, 1.0], [7.0, 0.0], [0.0, 3.0], [0.0, 6.0], [4.0, 1.0]])
    matrix = metrics.loss_matrix(_records(loss, "xyyxxy", per_cycle=2, sources="xy"))
    per_source = metrics.source_shift_curves(matrix, first_cycle=0)
    np.testing.assert_allclose(per_source["x"], [0, 3])  # mean of [0, 2] and [0, 4]
    np.testing.assert_allclose(per_source["y"], [0, 3])
    assert metrics.per_source_recovery(matrix, first_cycle=0) == {
        "x": [(0, 0.0), (2, 0.0)],
        "y": [(1, 0.0)],
    }


def test_recovery_score_cases() -> None:
    assert metrics.recovery_score([0.0, 1.0, 0.5]) == pytest.approx(0.5)
    assert metrics.recovery_score([0.0, 0.4, 0.9, 1.0]) == 0.0  # monotone forgetting
    assert math.isnan(metrics.recovery_score([0.0, -0.1, -0.2]))  # nothing forgotten
    assert math.isnan(metrics.recovery_score([0.3, 0.3]))
    assert metrics.recovery_score([0.0, 1.0, -1.0]) == pytest.approx(2.0)  # ends below post


def test_per_source_recovery(round_robin: metrics.LossMatrix) -> None:
    assert metrics.per_source_recovery(round_robin) == {
        "a": [(1, 0.5), (2, 0.0)],
        "b": [(1, 0.5)],
        "c": [(1, 0.5)],
    }


def test_prequential_loss(round_robin: metrics.LossMatrix) -> None:
    # Cycles >= 1: a at rows 3, 6 -> L[2, a] = L[5, a] = 0.5; b at 4, 7 -> 2.5, 2.5;
    # c at 5, 8 -> 1.5, 1.5. From cycle 0, a@0 has no row before it; b adds L[0, b] = 3 and
    # c adds L[1, c] = 3.
    assert metrics.prequential_loss(round_robin) == {"a": 0.5, "b": 2.5, "c": 1.5}
    assert metrics.prequential_loss(round_robin, first_cycle=0) == pytest.approx(
        {"a": 0.5, "b": 8 / 3, "c": 2.0}
    )


def test_savings_by_hand() -> None:
    steps = np.arange(40)
    loss = np.full(40, 0.8)
    loss[9] = 0.2  # exposure 0 (steps 0-9) ends at 0.2
    loss[20:30] = [0.5, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05]  # exposure 1 ends at 0.05
    loss[30:36] = [0.09, 0.09, 0.06, 0.06, 0.06, 0.06]  # exposure 2 (32-35) stalls at 0.06
    loss[36:40] = 0.01  # below 0.06 at step 36, before exposure 3 (37-39) starts
    starts, ends = [0, 20, 32, 37], [9, 29, 35, 39]
    # Exposure 1 reaches 0.2 at step 22 (steps 20, 21, 22 -> 3); exposure 2 never reaches 0.05
    # (within tol 0.02 at step 32 -> 1); exposure 3 is regained at step 36 -> 0.
    assert metrics.savings(loss, steps, starts, ends) == [3, None, 0]
    assert metrics.savings(loss, steps, starts, ends, tol=0.02) == [3, 1, 0]


def test_bootstrap_ci_contains_estimate_shrinks_and_is_seeded() -> None:
    noise = np.random.default_rng(1).standard_normal(40)
    estimate, low, high = metrics.bootstrap_ci(5.0 + noise)
    assert low < estimate < high
    assert metrics.bootstrap_ci(5.0 + noise) == (estimate, low, high)
    assert metrics.bootstrap_ci(5.0 + noise, seed=1) != (estimate, low, high)
    # Same seed, same resampled indices: the interval of 5 + noise/10 is exactly 10x narrower.
    _, quiet_low, quiet_high = metrics.bootstrap_ci(5.0 + noise / 10)
    assert quiet_high - quiet_low == pytest.approx((high - low) / 10)


def test_recovery_score_ci(round_robin: metrics.LossMatrix) -> None:
    # Resampling the per-source curves a [0, 1, .75], b, c [0, 1, .5] gives RS in [0.25, 0.5].
    estimate, low, high = metrics.recovery_score_ci(round_robin, n_boot=300)
    assert estimate == pytest.approx(5 / 12)
    assert 0.25 <= low <= estimate <= high <= 0.5
    # Without a's non-recovering last window every source curve is [0, 1, .5]: no spread.
    loss = ROUND_ROBIN_LOSS.copy()
    loss[8, 0] = 0.5
    same = metrics.loss_matrix(_records(loss, "abc" * 3, per_cycle=3))
    assert metrics.recovery_score_ci(same, n_boot=300) == pytest.approx((0.5, 0.5, 0.5))


def test_compare_runs() -> None:
    exact = metrics.compare_runs([1.0, 1.0, 1.0], [0.2, 0.2])
    assert (exact.a, exact.b, exact.diff, exact.low, exact.high) == pytest.approx(
        (1.0, 0.2, 0.8, 0.8, 0.8)
    )
    # Means of resampled [0, 1] lie in [0, 1]; b is constant.
    spread = metrics.compare_runs([0.0, 1.0], [0.0, 0.0], n_boot=300)
    assert (spread.a, spread.b, spread.diff) == (0.5, 0.0, 0.5)
    assert 0.0 <= spread.low < 0.5 < spread.high <= 1.0
    cyclic = np.array([[0, 1, 0.5], [0, 1, 0.5]])
    shuffled = np.array([[0, 1, 1.0], [0, 2, 2.0]])
    rs = metrics.compare_runs(cyclic, shuffled, statistic=metrics.averaged_recovery_score)
    assert (rs.a, rs.b, rs.diff, rs.low, rs.high) == (0.5, 0.0, 0.5, 0.5, 0.5)


def test_jaccard() -> None:
    assert metrics.jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
    assert metrics.jaccard(set(), set()) == 1.0
    assert metrics.jaccard({1}, set()) == 0.0
    # Union a, b, c: min |w| 0 + 1 + 0 = 1, max |w| 1 + 2 + 3 = 6.
    assert metrics.weighted_jaccard({"a": 1.0, "b": -2.0}, {"b": 1.0, "c": 3.0}) == 1 / 6
    assert metrics.weighted_jaccard({"a": 2.0}, {"a": -2.0}) == 1.0
    assert metrics.weighted_jaccard({}, {}) == 1.0


def test_events() -> None:
    present = np.array(
        [
            [0, 1, 1, 0, 0, 1, 1],  # forms at 1, fades at 3, recovers at 5
            [1, 1, 1, 1, 1, 1, 1],  # present from the start: formed at 0
            [0, 0, 0, 0, 0, 0, 0],  # never
            [1, 0, 1, 0, 0, 0, 0],  # formed 0, faded 1, recovered 2, faded 3
        ],
        dtype=bool,
    )
    assert metrics.events(present) == [
        (0, "formed", 1),
        (0, "faded", 3),
        (0, "recovered", 5),
        (1, "formed", 0),
        (3, "formed", 0),
        (3, "faded", 1),
        (3, "recovered", 2),
        (3, "faded", 3),
    ]


def test_churn_counts() -> None:
    prev = np.array([1, 1, 0, 0, 0, 1], dtype=bool)
    now = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    ever = np.array([1, 1, 0, 1, 1, 1], dtype=bool)
    # Element 2 is born, 3 revives, 1 and 5 die; 0 persists, 4 stays absent.
    assert metrics.churn_counts(prev, now, ever) == (1, 2, 1)


def test_circuit_recovery_score() -> None:
    # 1 − J = [0, .6, .3]: RS = (.6 − .3) / .6 = 0.5.
    assert metrics.circuit_recovery_score([1.0, 0.4, 0.7]) == pytest.approx(0.5)
    assert metrics.circuit_recovery_score([1.0, 0.8, 0.5]) == 0.0
    assert math.isnan(metrics.circuit_recovery_score([1.0, 1.0, 1.0]))
