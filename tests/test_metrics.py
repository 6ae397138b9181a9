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


# --- every exposure, signed scores, pre-exposure loss, savings resolution, seeds -----------------

# A shuffled schedule over K = 3 sources, 6 cycles: the order of each cycle.
SHUFFLED_ORDERS = ["abc", "bca", "cab", "acb", "cba", "bac"]
FORGET = [0.0, 1.0, 1.5, 1.75, 1.875, 1.9375]
"""Loss τ rows after a source's latest exposure (τ = 0: the exposure's own row)."""


def _shuffled_matrix(dip: float = 0.0) -> metrics.LossMatrix:
    """Loss of source j at row r: FORGET[r − last exposure of j], 3 before any; minus ``dip`` on
    the row just before a re-exposure (anticipation: the loss falls just before j returns)."""
    trained = "".join(SHUFFLED_ORDERS)
    loss = np.full((len(trained), 3), 3.0)
    for j, source in enumerate("abc"):
        rows = [r for r, t in enumerate(trained) if t == source]
        for r in range(len(trained)):
            before = [a for a in rows if a <= r]
            if before:
                loss[r, j] = FORGET[r - before[-1]]
            if r + 1 in rows[1:]:
                loss[r, j] -= dip
    return metrics.loss_matrix(_records(loss, trained, per_cycle=3))


def _oracle_offset_curve(matrix: metrics.LossMatrix, first_cycle: int) -> np.ndarray:
    """Per offset τ < K, the mean over sources of the mean of L[a+τ] − L[a] over every exposure
    a (cycle ≥ first_cycle) with no exposure of the same source in rows a+1..a+τ: written as a
    plain loop over rows, independently of ``exposure_windows``."""
    width = 3
    per_source = []
    for j, source in enumerate(matrix.sources):
        sums, counts = np.zeros(width), np.zeros(width)
        for a, trained in enumerate(matrix.trained):
            if trained != source or matrix.cycles[a] < first_cycle:
                continue
            for tau in range(width):
                row = a + tau
                if row >= len(matrix.trained) or (tau and matrix.trained[row] == source):
                    break
                sums[tau] += matrix.loss[row, j] - matrix.loss[a, j]
                counts[tau] += 1
        per_source.append(sums / counts)
    return np.mean(per_source, axis=0)


def test_every_exposure_counts_in_a_shuffled_schedule() -> None:
    # Pure forgetting as a function of the rows since exposure: every window, cut or not, is
    # FORGET[:len] - 0, so c(τ) = [0, 1, 1.5] exactly, from all 15 exposures of cycles 1-5.
    # Rows train "abc bca cab acb cba bac"; the old estimator keeps only windows whose next
    # exposure is >= 3 rows away and that end before the last row: 6 of the 15.
    matrix = _shuffled_matrix()
    windows = metrics.exposure_windows(matrix)
    assert len(windows) == 15
    assert sum(1 for _ in metrics._windows(matrix, 1)) == 6
    _, curve = metrics.offset_averaged_curve(matrix)
    np.testing.assert_allclose(curve, [0, 1, 1.5])
    # a's exposures in cycles >= 1: rows 5, 7, 9, 14, 16 (gaps 2, 2, 5, 2, none): 5 windows
    # reach τ = 1, only a@9 reaches τ = 2 (a@16 is cut by the end after τ = 1).
    _, counts = metrics.source_offset_curves(matrix)["a"]
    assert counts.tolist() == [5, 5, 1]
    assert [w.gap for w in windows if w.source == "a"] == [2, 2, 5, 2, None]
    # No anticipation, the loss still rising at τ = 2: the signed score is negative,
    # (1 − 1.5) / (1.5 − 0) = −1/3, while the max-based score reads 0 (its floor).
    assert metrics.signed_recovery_score(curve) == pytest.approx(-1 / 3)
    assert metrics.recovery_score(curve) == 0.0


def test_offset_curve_matches_the_oracle_when_gaps_matter() -> None:
    # A dip of 0.5 just before each re-exposure: windows of gap 2 dip at τ = 1, of gap 3 at
    # τ = 2. Dropping the windows a re-exposure cuts (the old estimator) drops the gap-2 dips.
    # τ = 1: gap-2 windows among those reaching 1 are b 2 of 5, c 2 of 4, a 3 of 5, so
    # c(1) = 1 − 0.5 (2/5 + 2/4 + 3/5) / 3 = 0.75; τ = 2: only b@8 has gap 3, among b's 3
    # windows reaching 2, so c(2) = 1.5 − 0.5 (1/3) / 3 = 13/9.
    matrix = _shuffled_matrix(dip=0.5)
    _, curve = metrics.offset_averaged_curve(matrix)
    np.testing.assert_allclose(curve, [0, 0.75, 13 / 9])
    np.testing.assert_allclose(curve, _oracle_offset_curve(matrix, first_cycle=1))
    _, old = metrics.shift_averaged_curve(matrix)
    assert curve[1] < old[1] == 1.0  # the old curve never saw a gap-2 dip
    _, from_zero = metrics.offset_averaged_curve(matrix, first_cycle=0)
    np.testing.assert_allclose(from_zero, _oracle_offset_curve(matrix, first_cycle=0))


def test_offset_curves_in_round_robin_use_the_windows_the_end_cuts(
    round_robin: metrics.LossMatrix,
) -> None:
    # Cycles >= 1: a@3 [0, 1, .5], a@6 [0, 1, 1]; b@4 [0, 1, .5], b@7 [0, 1] (cut by the end);
    # c@5 [0, 1, .5], c@8 [0]. Per source a [0, 1, .75], b and c [0, 1, .5], as before.
    curves = metrics.source_offset_curves(round_robin)
    np.testing.assert_allclose(curves["a"][0], [0, 1, 0.75])
    assert [curves[s][1].tolist() for s in "abc"] == [[2, 2, 2], [2, 2, 1], [2, 1, 1]]
    _, curve = metrics.offset_averaged_curve(round_robin)
    np.testing.assert_allclose(curve, [0, 1, 7 / 12])
    assert metrics.signed_recovery_ci(round_robin, n_boot=200)[0] == pytest.approx(5 / 12)


def test_signed_recovery_score_cases() -> None:
    assert metrics.signed_recovery_score([0.0, 1.0, 0.5]) == pytest.approx(0.5)
    assert metrics.signed_recovery_score([0.0, 1.0, 2.0]) == pytest.approx(-0.5)  # −1 / 2
    assert metrics.signed_recovery_score([0.0, 1.0, 1.0]) == 0.0
    # The default peak is the middle offset, len // 2 = 2 of 5 here: (1 − .5) / (2 − 0). At
    # the true peak it is the max-based score: (2 − .5) / 2.
    assert metrics.signed_recovery_score([0, 0.5, 1.0, 2.0, 0.5]) == pytest.approx(0.25)
    assert metrics.signed_recovery_score([0, 0.5, 1.0, 2.0, 0.5], peak=3) == pytest.approx(0.75)
    assert metrics.recovery_score([0, 0.5, 1.0, 2.0, 0.5]) == pytest.approx(0.75)
    # A small rise by the peak offset does not blow the score up (the denominator is max − post).
    assert metrics.signed_recovery_score([0, -0.07, 0.002, 0.04, 0.07]) == pytest.approx(
        (0.002 - 0.07) / 0.07)
    assert math.isnan(metrics.signed_recovery_score([0.0, 1.0]))  # no interior offset
    assert math.isnan(metrics.signed_recovery_score([0.0, 1.0, 0.5], peak=2))
    assert math.isnan(metrics.signed_recovery_score([0.0, -0.1, -0.2]))  # nothing forgotten
    assert math.isnan(metrics.signed_recovery_score([0.0, np.nan, 0.5]))
    assert metrics.signed_recovery_score([0.0, 1.0, 0.5, np.nan, 0.5], peak=1) == pytest.approx(0.5)


def _round_robin_noise(plateau: float, seed: int) -> metrics.LossMatrix:
    """K = 5 sources, 8 cycles of round robin; after an exposure the loss follows
    [0, 1, 1 + plateau, 1 + 2 plateau, ...] plus N(0, 0.2) noise per evaluation."""
    k, cycles = 5, 8
    rng = np.random.default_rng(seed)
    loss = np.zeros((k * cycles, k))
    for r in range(k * cycles):
        for j in range(k):
            tau = (r - j) % k
            loss[r, j] = (0.0 if tau == 0 else 1.0 + plateau * (tau - 1)) + 0.2 * rng.normal()
    sources = "abcde"
    return metrics.loss_matrix(_records(loss, sources * cycles, per_cycle=k, sources=sources))


def test_no_anticipation_gives_a_two_sided_interval_around_zero() -> None:
    # A flat plateau after forgetting, plus noise: nothing recovers. Over 10 noise seeds the
    # max-based score is never below 0 and neither is its interval's low end (0.038 on average);
    # the signed score takes both signs (0.015 on average) and its interval straddles 0 (26 of 30
    # at seeds 10-39: a bootstrap over 5 sources undercovers its nominal 95%).
    old, signed = [], []
    for seed in range(10):
        matrix = _round_robin_noise(plateau=0.0, seed=seed)
        old.append(metrics.recovery_score_ci(matrix, n_boot=200))
        signed.append(metrics.signed_recovery_ci(matrix, n_boot=200))
    assert all(rs >= 0.0 and low >= 0.0 for rs, low, _ in old)
    assert min(rs for rs, _, _ in signed) < 0.0 < max(rs for rs, _, _ in signed)
    assert abs(np.mean([rs for rs, _, _ in signed])) < 0.05
    assert sum(low < 0.0 < high for _, low, high in signed) >= 8  # 10 of 10 at these seeds
    # Forgetting that keeps rising: the score and its whole interval are negative.
    rising = _round_robin_noise(plateau=0.5, seed=3)
    rs, low, high = metrics.signed_recovery_ci(rising, n_boot=400)
    assert low <= rs <= high < 0.0
    assert rs == pytest.approx(-0.4, abs=0.15)  # (1.5 − 2.5) / (2.5 − 0) without noise


def test_pre_exposure_loss(round_robin: metrics.LossMatrix) -> None:
    # Re-exposures in cycles >= 1: a at rows 3, 6 -> L[2, a] = L[5, a] = 0.5; b at 4, 7 ->
    # 2.5; c at 5, 8 -> 1.5. From cycle 0 nothing changes: the first exposures have no
    # previous one (prequential_loss counts them: b 8/3, c 2).
    assert metrics.pre_exposure_loss(round_robin) == {"a": 0.5, "b": 2.5, "c": 1.5}
    assert metrics.pre_exposure_loss(round_robin, first_cycle=0) == {"a": 0.5, "b": 2.5, "c": 1.5}
    # Shuffled, pure forgetting: a re-exposed at rows 5, 7, 9, 14, 16, after gaps 5, 2, 2, 5,
    # 2: FORGET[4], FORGET[1], FORGET[1], FORGET[4], FORGET[1] -> (2 * 1.875 + 3) / 5 = 1.35.
    assert metrics.pre_exposure_loss(_shuffled_matrix())["a"] == pytest.approx(1.35)


def test_savings_note_flags_coarse_logging() -> None:
    # A source trained at steps 0-9, 30-39 and 60-69 that remembers nothing: every exposure
    # starts at loss 1 and falls by 0.1 a step. Logged every step, each re-exposure needs the
    # whole block (10 steps) to regain 0.1; logged every 10 steps, the "previous end" is the
    # block's first step and the re-exposure's first logged step matches it: 1, by construction.
    steps = np.arange(90)
    loss = np.where((steps // 30) * 30 + 10 > steps, 1.0 - 0.1 * (steps % 30), 1.0)
    starts, ends = [0, 30, 60], [9, 39, 69]
    assert metrics.savings(loss, steps, starts, ends) == [10, 10]
    coarse = steps[::10]
    assert metrics.savings(loss[coarse], coarse, starts, ends) == [1, 1]
    note = metrics.savings_note(log_every=10, steps_per_block=10)
    assert note is not None and "not resolved" in note and "run.log_every <= 2" in note
    assert metrics.savings_note(log_every=1, steps_per_block=10) is None
    assert metrics.savings_note(log_every=2, steps_per_block=8) is None
    assert metrics.savings_note(log_every=3, steps_per_block=8) is not None


def test_t_quantile_matches_the_tables() -> None:
    for df, value in [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                      (30, 2.0423)]:
        assert metrics.t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)
    assert metrics.t_quantile(0.95, 5) == pytest.approx(2.0150, abs=1e-4)


def test_seed_interval() -> None:
    # Mean 2, sd 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321 = 2.4841.
    mean, low, high = metrics.seed_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert (low, high) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-4)
    assert metrics.seed_interval([1.0, np.nan, 2.0, 3.0]) == pytest.approx((mean, low, high))
    single = metrics.seed_interval([0.4])
    assert single[0] == 0.4 and math.isnan(single[1]) and math.isnan(single[2])
    assert metrics.seed_interval([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2, 0.2))


def test_signed_circuit_recovery_score() -> None:
    # 1 − J = [0, .6, .3]: (.6 − .3) / .6 = 0.5, as the max-based score; J still falling at the
    # end, 1 − J = [0, .2, .5]: (.2 − .5) / .5 = −0.6 where the max-based score reads 0.
    assert metrics.signed_circuit_recovery_score([1.0, 0.4, 0.7]) == pytest.approx(0.5)
    assert metrics.signed_circuit_recovery_score([1.0, 0.8, 0.5]) == pytest.approx(-0.6)
    assert metrics.circuit_recovery_score([1.0, 0.8, 0.5]) == 0.0
    assert math.isnan(metrics.signed_circuit_recovery_score([1.0, 1.0, 1.0]))
