"""The recency probes (sparsecircuits.recency) on constructed activations with a known answer,
and once on a micro run."""

from __future__ import annotations

import json

import matplotlib as mpl

mpl.use("Agg")

import numpy as np
import pytest

from sparsecircuits import recency as rc
from sparsecircuits import trajectory as tj

SOURCES, CHECKPOINTS, EXAMPLES, WIDTH = 6, 6, 40, 32


def _round_robin() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The recency table of the last cycle of a round robin over six sources, and each
    example's checkpoint and source."""
    names = [f"s{j}" for j in range(SOURCES)]
    table = rc.recency_table(names * 2, list(range(SOURCES, 2 * SOURCES)), names)
    checkpoint = np.repeat(np.arange(CHECKPOINTS), SOURCES * EXAMPLES)
    source = np.tile(np.repeat(np.arange(SOURCES), EXAMPLES), CHECKPOINTS)
    return table, checkpoint, source


def _activations(recency: float = 0.0, norm: float = 0.0, seed: int = 0) -> tuple[np.ndarray,
                                                                                   ...]:
    """Constructed activations: a strong identity per source (and a drift per checkpoint,
    and a mean shared by all), noise, ``recency`` times the example's recency along one
    direction, the whole row scaled by ``1 + norm`` x recency."""
    table, checkpoint, source = _round_robin()
    r = table[checkpoint, source]
    rng = np.random.default_rng(seed)
    identity = 5 * rng.normal(size=(SOURCES, WIDTH))
    drift = 2 * rng.normal(size=(CHECKPOINTS, WIDTH))
    direction = rng.normal(size=WIDTH)
    direction /= np.linalg.norm(direction)
    x = identity[source] + drift[checkpoint] + 10 + rng.normal(size=(len(r), WIDTH))
    x = (x + recency * r[:, None] * direction) * (1 + norm * r)[:, None]
    return x, table, checkpoint, source


def test_recency_table_counts_blocks_since_the_last_own_block():
    blocks = ["mixed", "a", "b", "c", "a", "b"]
    table = rc.recency_table(blocks, [5, 0, 1, 2, 3, 4], ["a", "b", "c"])
    nan = np.nan
    expected = [[1, 0, 2], [nan, nan, nan], [0, nan, nan], [1, 0, nan], [2, 1, 0], [0, 2, 1]]
    np.testing.assert_array_equal(table, expected)


def test_ranks_spearman_and_scores_by_hand():
    np.testing.assert_array_equal(rc.ranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
    assert rc.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1)
    assert rc.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert np.isnan(rc.spearman([1, 1, 1], [1, 2, 3]))
    y = np.array([0, 0, 1, 1, 2, 2], dtype=float)
    perfect = rc.scores(y + 0.1, y)
    assert perfect["rounded_accuracy"] == 1 and perfect["early_late_auc"] == 1
    assert perfect["r2"] == pytest.approx(1 - 0.06 / 4)
    assert rc.scores(-y, y)["early_late_auc"] == 0
    assert rc.scores(np.zeros(6), y)["early_late_auc"] == 0.5  # a constant: chance


def test_permuted_tables_move_whole_checkpoints_and_keep_missing_cells():
    table = rc.recency_table(["a", "b", "c"] * 3, list(range(9)), ["a", "b", "c"])
    for permuted in rc.permuted_tables(table, 20, seed=1):
        assert np.array_equal(np.isnan(permuted), np.isnan(table))
        full = np.isfinite(table).all(axis=1)
        rows = {tuple(row) for row in table[full]}
        assert all(tuple(row) in rows for row in permuted[full])
        assert np.array_equal(permuted[~full], table[~full], equal_nan=True)  # each alone


def test_a_planted_recency_direction_is_decoded_and_shuffled_labels_are_not():
    x, table, checkpoint, source = _activations(recency=0.5, norm=0.05)
    result = rc.probe(x, table, checkpoint, source, permutations=50)
    assert result["spearman"] > 0.9 and result["early_late_auc"] > 0.9 and result["r2"] > 0.8
    assert result["null"]["spearman"]["p"] == pytest.approx(1 / 51)  # beats every shuffle
    assert result["spearman"] > result["null"]["spearman"]["interval"][1]
    # the same activations, the labels shuffled across the checkpoints (one draw of the null,
    # nearly uncorrelated with the truth)
    shuffled = rc.permuted_tables(table, 1, seed=4)[0]
    assert abs(rc.spearman(shuffled.ravel(), table.ravel())) < 0.05
    other = rc.probe(x, shuffled, checkpoint, source, permutations=50)
    assert abs(other["spearman"]) < 0.2 and other["null"]["spearman"]["p"] > 0.05
    assert other["early_late_auc"] < 0.6


def test_a_signal_carried_only_by_the_norm_is_caught_by_the_norm_control():
    x, table, checkpoint, source = _activations(norm=0.1)
    norm = np.linalg.norm(x, axis=1)
    by_norm = rc.probe(norm[:, None], table, checkpoint, source, permutations=20)
    assert by_norm["spearman"] > 0.9  # the control decodes it: the norm explains the signal
    by_direction = rc.probe(x / norm[:, None], table, checkpoint, source, permutations=20)
    assert abs(by_direction["spearman"]) < 0.3  # nothing left without the norm


def test_source_identity_alone_does_not_decode_recency():
    x, table, checkpoint, source = _activations()
    result = rc.probe(x, table, checkpoint, source, permutations=20)
    assert abs(result["spearman"]) < 0.2
    assert result["r2"] < 0.05 and result["early_late_auc"] < 0.6
    # the confound is real in this data: at one checkpoint, a probe trained and tested on
    # held-out examples of the same sources "decodes" recency from identity alone
    one = checkpoint == 0
    half = np.arange(one.sum()) % 2 == 0
    xs, ys = np.c_[x[one], np.ones(one.sum())], table[0, source[one]]
    w, *_ = np.linalg.lstsq(xs[half], ys[half], rcond=None)
    assert rc.spearman(xs[~half] @ w, ys[~half]) > 0.9


def test_centroids_in_training_order():
    x, table, checkpoint, source = _activations(recency=2.0)
    cells = rc.cell_means(x, checkpoint, source, table.shape)
    ordered = rc.centroid_order(rc.source_centred(cells), table, 50)
    assert ordered["rho_mean"] == pytest.approx(-1) and ordered["null"]["p"] < 0.05
    assert ordered["null"]["mean"] > -0.8  # the axis's two ends are in order by construction
    identity = rc.cell_means(_activations()[0], checkpoint, source, table.shape)
    for cells in (identity, rc.source_centred(identity)):
        assert rc.centroid_order(cells, table, 50)["null"]["p"] > 0.05
    # by hand: the earliest along e1, the latest along e2, one between (not unit length)
    cx, cy = rc.centroid_projection(np.array([[3.0, 0, 0], [1, 1, 0], [0, 2, 0]]),
                                    np.array([2, 1, 0]))
    np.testing.assert_allclose(cx, [-1 / np.sqrt(2), 0, 1 / np.sqrt(2)], atol=1e-12)
    assert cy[0] == pytest.approx(cy[2]) and abs(cy[1]) > 0.1


# -- on a micro run ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory: pytest.TempPathFactory):
    """Two tasks and a document after a short warm-up, two cycles: seven checkpoints."""
    import conftest

    from sparsecircuits.config import config_from_dict, validate
    from sparsecircuits.train import train

    config = config_from_dict({
        **conftest.MICRO, "data": {**conftest.MICRO["data"], "documents": 1},
        "schedule": {**conftest.MICRO["schedule"], "sources": ["quote", "closer", "doc:0"],
                     "warmup_steps": 4}})
    validate(config)
    return train(config, tmp_path_factory.mktemp("recency") / "run", progress=False)


def test_on_a_micro_run_the_numbers_the_figure_and_the_cli(micro_run, capsys):
    import matplotlib.pyplot as plt

    from sparsecircuits.cli import main
    from sparsecircuits.figures import trajectory_plots as tp
    from sparsecircuits.run import open_run

    run = open_run(micro_run)
    numbers = rc.recency(run, checkpoints="all", permutations=10)
    nan = None
    assert numbers["recency"] == [[nan, nan, nan], [0, nan, nan], [1, 0, nan], [2, 1, 0],
                                  [0, 2, 1], [1, 0, 2], [2, 1, 0]]
    assert len(numbers["left_out"]) == 6 and "quote at step 3" in numbers["left_out"]
    assert numbers["sites"] == ["blocks.0.hook_resid_post"]
    windows = run.config.data.document_windows  # a document's examples: its fixed windows
    assert numbers["examples"] == {"quote": 16, "closer": 16, "doc:0": windows}
    assert numbers["rows"] == 16 * (6 + 5) + windows * 4  # the cells with a recency
    probe = numbers["probes"]["blocks.0.hook_resid_post"]["activations"]
    assert set(probe) == {*rc.METRICS, "null"} and -1 <= probe["spearman"] <= 1
    json.dumps(numbers, allow_nan=True)
    head = tj.headline({"recency": numbers})
    assert head["recency.activations.spearman"] == probe["spearman"]
    assert set(head) >= {"recency.norm.spearman", "recency.loss.spearman",
                         "recency.centroids.rho_mean"}
    assert run.select(default="last-cycle") == run.steps[-3:]  # the last cycle: three blocks

    fig = tp.recency_probes(run, numbers={"recency": numbers})
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "centroids, raw" in titles and "centroids, centred" in titles
    plt.close(fig)
    one = rc.recency(run, checkpoints=[-1])  # one checkpoint: identity is recency
    assert "pool more checkpoints" in one["note"] and "probes" not in one
    fig = tp.recency_probes(run, numbers={"recency": one})
    assert "pool more checkpoints" in " ".join(t.get_text() for t in fig.axes[0].texts)
    plt.close(fig)
    assert "nothing to probe" in rc.recency(run, checkpoints=[3, 9])["note"]  # warm-up, 1 task

    main(["analyze", str(micro_run), "--what", "recency", "--sites",
          "blocks.0.hook_resid_mid,blocks.0.mlp.hook_post"])
    written = json.loads(run.dir.trajectory.read_text())["recency"]
    assert written["sites"] == ["blocks.0.hook_resid_mid", "blocks.0.mlp.hook_post"]
    assert (run.dir.figures / "recency.png").exists()
    capsys.readouterr()
    for bad, named in ((["--sites", "blocks.0.hook_nothing"], "--sites: no hook point"),
                       (["--sites", "blocks.0.attn.hook_pattern"], "attention pattern"),
                       (["--checkpoints", "first"], "--checkpoints:"),
                       (["--checkpoints", "12345"], "no checkpoint at step 12345")):
        with pytest.raises(SystemExit) as exit_:
            main(["analyze", str(micro_run), "--what", "recency", *bad])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert named in err and len(err.splitlines()) == 1
