"""The trajectory analyses (sparsecircuits.trajectory) on constructed data with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparsecircuits import trajectory as tj


def _schedule(cycles: int, period: int) -> tuple[np.ndarray, np.ndarray]:
    cyc = np.repeat(np.arange(cycles), period)
    pos = np.tile(np.arange(period), cycles)
    return cyc, pos


def _embed(plane: np.ndarray, dims: int, noise: float, seed: int = 0) -> np.ndarray:
    """Points of a 2-d path placed in a random plane of ``dims`` dimensions, plus noise."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dims, 2)))
    return plane @ basis.T + noise * rng.normal(size=(len(plane), dims))


def test_circle_is_a_closed_loop_in_its_first_two_components():
    period, cycles = 6, 4
    cyc, pos = _schedule(cycles, period)
    angle = 2 * np.pi * pos / period
    points = _embed(np.stack([np.cos(angle), np.sin(angle)], axis=1), 50, 0.02)
    numbers = tj.trajectory_numbers(points, cyc, pos)
    assert numbers["explained_first2"] > 0.9
    assert numbers["closure"] < 0.1
    assert numbers["closure_pc12"] < 0.05
    coords = np.array(numbers["coords"])[:, :2]
    radius = np.linalg.norm(coords, axis=1)
    assert np.allclose(radius, radius.mean(), rtol=0.1)  # a circle, not a line


def test_a_straight_walk_does_not_close():
    period, cycles = 6, 4
    cyc, pos = _schedule(cycles, period)
    t = np.arange(len(cyc), dtype=float)
    points = _embed(np.stack([t, np.zeros_like(t)], axis=1), 50, 0.02)
    numbers = tj.trajectory_numbers(points, cyc, pos)
    assert numbers["explained"][0] > 0.95
    assert numbers["closure"] == pytest.approx(1.0, abs=0.1)


def test_a_spiral_that_drifts_is_in_between():
    period, cycles = 6, 4
    cyc, pos = _schedule(cycles, period)
    t = np.arange(len(cyc), dtype=float)
    angle = 2 * np.pi * t / period
    plane = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    points = np.concatenate([_embed(plane, 50, 0.0), 0.2 * t[:, None]], axis=1)
    closure = tj.loop_closure(points, cyc, pos)
    assert 0.1 < closure < 0.5


def test_pca_of_a_still_path_is_zero():
    numbers = tj.pca_path(np.ones((5, 4)))
    assert np.allclose(numbers["explained"], 0) and np.allclose(numbers["coords"], 0)


def _periodic_run(period: int, cycles: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Checkpoints whose steps repeat each cycle (one direction per position, plus noise), and
    masks where each position has its own set of alive weights beside a common core."""
    rng = np.random.default_rng(seed)
    dims = 200
    directions = rng.normal(size=(period, dims))
    steps = np.stack([directions[t % period] + 0.3 * rng.normal(size=dims)
                      for t in range(period * cycles)])
    points = np.concatenate([np.zeros((1, dims)), np.cumsum(steps, axis=0)])
    own = rng.random((period, dims)) < 0.3
    alive = np.stack([own[t % period] | (np.arange(dims) < 40) for t in range(len(points))])
    return points, alive


@pytest.mark.parametrize("period", [3, 4, 6])
def test_similarity_shows_the_block_pattern_and_its_period(period):
    points, alive = _periodic_run(period, cycles=4)
    mats = tj.similarity_matrices(points, alive)
    prev = mats["from_previous"]
    same = [prev[i, i + period] for i in range(len(prev) - period)]
    other = [prev[i, i + 1] for i in range(len(prev) - 1)]
    assert np.mean(same) > 0.8 > 0.2 > np.mean(np.abs(other))
    for name in ("from_previous", "jaccard"):
        assert tj.detect_period(mats[name]) == period, name
    assert mats["jaccard"].shape == (len(points), len(points))
    assert np.allclose(np.diag(mats["jaccard"]), 1)


def test_no_period_in_noise():
    rng = np.random.default_rng(3)
    points = np.cumsum(rng.normal(size=(25, 200)), axis=0)
    found = tj.detect_period(tj.similarity_matrices(points)["from_previous"])
    # a random walk may show a small chance peak; it must not be a strong block pattern
    if found is not None:
        prev = tj.similarity_matrices(points)["from_previous"]
        assert tj.lag_profile(prev)[found] < 0.3


def test_jaccard_and_cosine_by_hand():
    alive = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    jac = tj.jaccard_matrix(alive)
    assert jac[0, 1] == pytest.approx(1 / 3) and jac[0, 2] == 0 and jac[2, 2] == 1
    cos = tj.cosine_matrix(np.array([[1.0, 0], [1, 1], [0, 2]]))
    assert cos[0, 1] == pytest.approx(2**-0.5) and cos[0, 2] == pytest.approx(0)


def test_leaves_and_returns_count_by_hand():
    alive = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 1, 1], [1, 0, 1]], dtype=bool)
    leaves, returns = tj.leaves_and_returns(alive)
    assert leaves.tolist() == [2, 1, 0]
    assert returns.tolist() == [2, 0, 0]  # weight 1 is born once: not a return


def test_period_power_of_a_square_wave_and_a_constant():
    t = np.arange(24)
    square = ((t % 6) < 3).astype(float)
    power = tj.period_power(np.stack([square, np.ones(24)], axis=1), 6)
    assert power[0] == pytest.approx(8 / 9) and power[1] == 0  # a sampled square wave


def test_a_weight_that_flips_with_the_period_is_found_and_a_random_one_is_not():
    period, cycles = 6, 4
    t = np.arange(period * cycles)
    rng = np.random.default_rng(1)
    flipping = (t % period) < 3
    shifted = ((t + 2) % period) < 2  # another phase and duty cycle
    randoms = rng.random((len(t), 50)) < 0.5
    alive = np.column_stack([flipping, shifted, randoms, np.ones(len(t), bool)])
    result = tj.mask_oscillation(alive, period, permutations=400, alpha=0.01, seed=0)
    assert result["oscillating"][0] and result["oscillating"][1]
    assert result["oscillating"][2:-1].sum() <= 2  # at alpha 1 %: about 0.5 of 50 by chance
    assert not result["oscillating"][-1]  # always alive: never flips
    assert result["flipping"] == 52


def test_a_weight_that_flips_with_another_period_is_not_found():
    t = np.arange(24)
    alive = np.column_stack([(t % 4) < 2, (t % 6) < 3])
    result = tj.mask_oscillation(alive, 6, permutations=400, alpha=0.01)
    assert result["oscillating"].tolist() == [False, True]


def test_spectrum_peaks_at_the_cycle_frequency():
    t = np.arange(24)
    freqs, power = tj.spectrum(np.column_stack([(t % 6) < 3, ((t + 1) % 6) < 3]))
    assert freqs[np.argmax(power)] == pytest.approx(1 / 6)


def test_analyze_rejects_an_unknown_analysis():
    with pytest.raises(ValueError, match="--what"):
        tj.analyze(None, what=("nonsense",))  # type: ignore[arg-type]


class _StubRun:
    """What the run-level functions read of a ``Run``: steps, checkpoints, model(step), path.
    Two cycles of period 3 after a warm-up; one weight of a sparse tensor flips each cycle."""

    def __init__(self, period: int = 3, cycles: int = 3) -> None:
        import torch

        from sparsecircuits.run import CheckpointInfo
        from sparsecircuits.rundir import RunDir

        self.path = Path("stub")
        self.dir = RunDir(self.path)  # no circuits there
        self.checkpoints = [CheckpointInfo(0, -1, 0, "mixed", -1)] + [
            CheckpointInfo(10 * (i + 1), i // period, i + 1, f"s{i % period}", i % period)
            for i in range(period * cycles)]
        self.steps = [c.step for c in self.checkpoints]
        self._models = {}
        rng = np.random.default_rng(0)
        for t, info in enumerate(self.checkpoints):
            layer = torch.nn.Linear(4, 3)
            with torch.no_grad():
                w = rng.normal(size=(3, 4)) + 0.1 * t
                w[:, 0] = 0  # never alive
                if info.position == 0:
                    w[0, 1] = 0  # dies at position 0 of each cycle
                layer.weight.copy_(torch.tensor(w))
                layer.bias.copy_(torch.tensor(rng.normal(size=3)))
            self._models[info.step] = layer

    def model(self, step):
        return self._models[step]


def test_on_a_run_the_numbers_and_the_figures(tmp_path):
    run = _StubRun()
    x, sparse, spans = tj.run_weights(run)
    assert x.shape == (10, 15) and [s[0] for s in spans] == ["weight", "bias"]
    assert sparse.tolist() == [True] * 12 + [False] * 3  # the bias never has a zero
    assert tj.schedule_of(run)["period"] == 3
    weights_only = ("trajectory", "similarity", "oscillation")  # the stub has no config
    numbers = tj.analyze(run, weights_only, per_tensor=True)
    assert set(numbers["trajectory"]["tensors"]) == {"weight", "bias"}
    assert numbers["similarity"]["schedule_period"] == 3
    assert len(numbers["similarity"]["matrices"]["jaccard"]) == 10
    assert numbers["oscillation"]["weights"] == 12 and numbers["oscillation"]["flipping"] == 1
    assert numbers["oscillation"]["in_circuits"].startswith("no circuits extracted")
    json.dumps(numbers, allow_nan=True)  # JSON-ready
    head = tj.headline(numbers)
    assert head["oscillation.oscillating"] == numbers["oscillation"]["oscillating"]
    assert set(head) >= {"trajectory.weights.closure", "similarity.jaccard.period_found",
                         "similarity.step_cosine.same_minus_different"}
    assert "oscillation.in_circuits.enrichment" not in head  # no circuits: no number

    from sparsecircuits.figures import trajectory_plots as tp

    written = tp.write_trajectory_figures(run, numbers, tmp_path, formats=("png",))
    assert sorted(p.stem for p in written) == ["oscillation", "similarity",
                                               "trajectory_masks", "trajectory_weights"]
    assert all(p.stat().st_size > 1000 for p in written)
    ax = tp.pca_path(run, "masks", numbers=numbers)
    assert ax.get_xlabel().startswith("PC1") and "cycle 1" in [t.get_text() for t in ax.texts]


def test_same_source_steps_align_wherever_they_fall():
    rng = np.random.default_rng(2)
    sources = list("abcabc") + list("cabbca")  # periodic, then shuffled
    directions = {s: rng.normal(size=100) for s in "abc"}
    steps = np.stack([directions[s] + 0.5 * rng.normal(size=100) for s in sources])
    contrast = tj.same_source_contrast(tj.cosine_matrix(steps), sources)
    assert contrast["same"] > 0.6 and abs(contrast["different"]) < 0.15
    assert contrast["pairs_same"] + contrast["pairs_different"] == 12 * 11 // 2 - 11  # not adjacent


def test_circuit_share_and_membership_by_hand():
    edges = [("a:0", "b:0"), ("a:0", "b:1"), ("a:1", "b:1")]
    alive = np.array([[1, 1, 0], [1, 0, 1]], dtype=bool)
    # checkpoint 0: circuit {a:0, b:1} holds edge 1 (alive); checkpoint 1: {a:1, b:1} holds
    # edge 2 (alive); edge 0 never has both ends in a circuit
    hit = tj.in_circuits(edges, alive, [{"a:0", "b:1"}, {"a:1", "b:1", "c:9"}])
    assert hit.tolist() == [False, True, True]
    assert not tj.in_circuits(edges, alive, [{"a:0", "b:1"}, set()])[2]  # alive only at t=1
    share = tj.circuit_share({"osc": np.array([0, 1, 1], dtype=bool),
                              "all": np.ones(3, dtype=bool)}, hit)
    assert share["groups"]["osc"] == {"weights": 2, "in_circuits": 1.0}
    assert share["groups"]["all"]["in_circuits"] == pytest.approx(2 / 3)
    assert share["enrichment"] == pytest.approx(1.5)


def test_weight_columns_map_to_the_weight_graph_and_its_circuits(tmp_path, micro_config):
    """Oracle: the weight graph and the circuits' graphs, built by sparsecircuits.circuits."""
    from sparsecircuits.circuits.extract import extract_run
    from sparsecircuits.circuits.graph import WEIGHT_KINDS
    from sparsecircuits.circuits.prune import PruneConfig
    from sparsecircuits.run import open_run
    from sparsecircuits.train import train

    run_dir = train(micro_config(), tmp_path / "run", progress=False)
    extract_run(run_dir, progress=False, threads=1, config=PruneConfig(target_loss=0.7))
    run = open_run(run_dir)
    x, sparse, spans = tj.run_weights(run)
    columns = np.flatnonzero(sparse & (x[-1] != 0))
    edges = tj.weight_edges(run, spans, columns)
    graph = run.weight_graph(-1)
    weight_edges = {(a, b) for a, b, k in graph.edges(data="kind") if k in WEIGHT_KINDS}
    found = {e: float(x[-1, c]) for e, c in zip(edges, columns, strict=True) if e is not None}
    assert set(found) == weight_edges
    assert all(found[e] == pytest.approx(graph.edges[e]["weight"]) for e in found)

    column_of = {e: c for e, c in zip(edges, columns, strict=True) if e is not None}
    pairs = list(column_of)
    alive = x[:, [column_of[e] for e in pairs]] != 0
    solved = 0
    for task, sets in tj.circuit_nodes(run, run.steps).items():
        hit = tj.in_circuits(pairs, alive, sets)
        expected = set()
        for t, step in enumerate(run.steps):
            circuit = run.circuit(task, step)
            solved += circuit.solved
            expected |= {(a, b) for a, b, k in circuit.graph.edges(data="kind")
                         if k in WEIGHT_KINDS and (a, b) in column_of
                         and x[t, column_of[(a, b)]] != 0}
        assert {e for e, h in zip(pairs, hit, strict=True) if h} == expected
    assert solved  # the check saw circuits

    # each task's checkpoint x checkpoint circuit Jaccard, against the circuits' edge sets
    from sparsecircuits.metrics import jaccard

    matrices = tj.circuit_matrices(run)
    assert set(matrices) == set(run.tasks)
    for task, m in matrices.items():
        circuits = [run.circuit(task, step) for step in run.steps]
        last = len(run.steps) - 1
        for i, j in [(0, last), (last // 2, last), (last, last)]:
            if circuits[i].solved and circuits[j].solved:
                expected = jaccard(set(circuits[i].graph.edges), set(circuits[j].graph.edges))
                assert m[i, j] == pytest.approx(expected)
            else:
                assert np.isnan(m[i, j])


def test_period_contrast_peaks_at_the_period_and_not_elsewhere():
    points, _ = _periodic_run(4, cycles=4)
    profile = tj.lag_profile(tj.similarity_matrices(points)["from_previous"])
    assert tj.period_contrast(profile, 4) > 0.5
    assert tj.period_contrast(profile, 3) < 0
    assert np.isnan(tj.period_contrast(profile, len(profile) - 1))


def test_circuit_jaccard_leaves_unsolved_checkpoints_out():
    member = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=bool)
    m = tj.circuit_jaccard(member, np.array([True, False, True]))
    assert m[0, 2] == pytest.approx(1 / 3) and m[0, 0] == 1
    assert np.isnan(m[1]).all() and np.isnan(m[:, 1]).all()  # not the 1 of two empty sets
    mean = tj.mean_matrix([m, np.full((3, 3), 0.5)])
    assert mean[0, 2] == pytest.approx((1 / 3 + 0.5) / 2) and mean[1, 1] == 0.5
    assert np.isnan(tj.mean_matrix([m])[1, 1])


def test_oscillation_lists_the_oscillating_weights_by_tensor_and_index():
    run = _StubRun(period=3, cycles=6)  # enough cycles for one flipping weight to pass
    numbers = tj.oscillation(run)
    alive = np.array([1.0 if c.position else 0.0 for c in run.checkpoints[1:]])[:, None]
    power = tj.period_power(alive, 3)[0]
    assert numbers["oscillating"] == 1
    (listed,) = numbers["oscillating_weights"]
    assert listed[:2] == ["weight", 1]  # weight[0, 1] of the [3, 4] matrix, flattened
    assert listed[2] == pytest.approx(power)
