"""Transfer between sources (sparsecircuits.transfer): the gradient cosine and the pairwise
recovery matrix, on constructed gradients with known cosines and on a micro run whose own
evaluations are the answer a recovery row must reproduce."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import MICRO

from sparsecircuits import checkpoint as ckpt
from sparsecircuits import open_run
from sparsecircuits import transfer as tr
from sparsecircuits.cli import main
from sparsecircuits.config import ConfigError, config_from_dict
from sparsecircuits.schedules import Slot
from sparsecircuits.train import Trainer, batch_loss, load_sources, train
from sparsecircuits.trajectory import headline

ORDER = ["quote", "closer", "set_or_string"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three sources, 6 steps per block, 2 cycles: checkpoints at 5, 11, ..., 35; the two
    newest (29, 35) keep their optimizer state."""
    config = config_from_dict({**MICRO, "schedule": {**MICRO["schedule"], "sources": ORDER}})
    return train(config, tmp_path_factory.mktemp("transfer") / "run", progress=False)


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _evals(run_dir: Path, step: int) -> dict[str, float]:
    for line in (run_dir / "evals.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["step"] == step:
            return {name: v["loss"] for name, v in record["evals"].items()}
    raise KeyError(step)


# -- on constructed matrices and gradients ------------------------------------------------------


def test_cycle_distance_and_offset_by_hand():
    assert tr.cycle_distance(5)[0].tolist() == [0, 1, 2, 2, 1]
    assert tr.cycle_offset(5)[1].tolist() == [4, 0, 1, 2, 3]
    assert (tr.cycle_distance(6) == tr.cycle_distance(6).T).all()


def test_a_matrix_that_falls_with_the_distance_is_read_off_exactly():
    k = 6
    known = np.array([5.0, 3.0, 2.0, 1.0])  # value at cycle distance 0..3
    matrix = known[tr.cycle_distance(k)]
    numbers = tr.cycle_structure(matrix)
    assert numbers["by_distance"] == known.tolist()
    assert numbers["diagonal"] == 5 and numbers["off_diagonal"] == pytest.approx(
        (2 * 3 + 2 * 2 + 1) / 5)
    assert numbers["correlation"] < -0.9
    # the order itself and its 5 other rotations, each both ways round: 12 of the 720 orders
    assert numbers["order_p"] == pytest.approx(12 / 720) and numbers["orders_tested"] == 720
    scrambled = tr.cycle_structure(matrix[np.ix_([0, 3, 1, 4, 2, 5], [0, 3, 1, 4, 2, 5])])
    assert scrambled["order_p"] > 0.1


def test_an_asymmetric_matrix_is_read_by_offset():
    k = 5
    after = np.array([-1.0, -0.4, -0.1, 0.0, 0.2])  # training on i helps the next ones
    numbers = tr.cycle_structure(after[tr.cycle_offset(k)])
    assert numbers["by_offset"] == pytest.approx(after.tolist())
    assert numbers["by_distance"] == pytest.approx([-1.0, (-0.4 + 0.2) / 2, (-0.1 + 0.0) / 2])


def _circle_gradients(k: int, seed: int = 0) -> tuple[list[dict[str, np.ndarray]],
                                                        dict[str, np.ndarray]]:
    """Source ``s``'s gradient on the alive weights is a unit vector at angle 2 pi s / k in a
    random plane; on the dead weights it is independent noise, in a second tensor fully
    alive and in a first tensor half dead."""
    rng = np.random.default_rng(seed)
    plane, _ = np.linalg.qr(rng.normal(size=(30, 2)))
    alive = {"a": np.arange(60) < 30, "b": np.ones(4, dtype=bool)}
    grads = []
    for s in range(k):
        angle = 2 * np.pi * s / k
        a = np.concatenate([plane @ [np.cos(angle), np.sin(angle)], rng.normal(size=30)])
        grads.append({"a": a, "b": np.zeros(4)})
    return grads, alive


def test_gradients_on_a_circle_have_the_cosines_of_their_angles():
    k = 6
    grads, alive = _circle_gradients(k)
    numbers = tr.gradient_cosines(grads, alive, again=[{n: 2 * g[n] for n in g} for g in grads])
    expected = np.cos(2 * np.pi * tr.cycle_offset(k) / k)
    assert np.allclose(numbers["alive"]["cosine"], expected)
    assert numbers["alive"]["by_distance"] == pytest.approx([1, 0.5, -0.5, -1])
    assert numbers["alive"]["correlation"] < -0.9
    assert numbers["alive"]["order_p"] == pytest.approx(12 / 720)
    assert numbers["alive"]["weights"] == 34 and numbers["all"]["weights"] == 64
    assert numbers["alive"]["repeat"] == pytest.approx([1] * k)  # a rescaled copy
    full = np.stack([np.concatenate([g["a"], g["b"]]) for g in grads])
    unit = full / np.linalg.norm(full, axis=1, keepdims=True)
    assert np.allclose(numbers["all"]["cosine"], unit @ unit.T)  # the dead noise dilutes it
    assert np.allclose(numbers["per_tensor"]["a"]["alive"], expected)
    assert np.isnan(numbers["per_tensor"]["b"]["all"]).all()  # a zero gradient has no angle


# -- on a micro run ---------------------------------------------------------------------------


def test_identical_sources_point_the_same_way_and_the_batch_is_the_runs(run_dir: Path):
    run = open_run(run_dir)
    config, step = run.config, 23
    sources = load_sources(config)
    model, _ = ckpt.load_model(run.dir.checkpoint(step))
    grads = tr.source_gradients(model, config, sources, ["quote", "quote", "closer"], step + 1)
    numbers = tr.gradient_cosines(grads, tr.alive_weights(model, config))
    cosine = np.array(numbers["all"]["cosine"])
    assert cosine[0, 1] == pytest.approx(1, abs=1e-6) and cosine[0, 2] < 0.99
    assert np.array(numbers["alive"]["cosine"])[0, 1] == pytest.approx(1, abs=1e-6)
    # the gradient of the source term of the run's own loss on the batch drawn at that step
    model.zero_grad()
    slot = Slot(step + 1, "closer", cycle=-1, block=-1, position=-1, offset=0)
    batch_loss(model, config, sources, slot)["source_loss"].backward()
    for name, p in model.named_parameters():
        assert np.allclose(grads[2][name], p.grad.numpy(), rtol=1e-4, atol=1e-7), name
    # alive: the nonzero entries of the weight-sparse tensors, every entry of the dense ones
    sparse = model.sparse_parameters()
    count = sum(int((p != 0).sum()) if n in sparse else p.numel()
                for n, p in model.named_parameters())
    assert numbers["alive"]["weights"] == count < numbers["all"]["weights"]


def test_gradients_on_a_run(run_dir: Path):
    numbers = tr.gradients(open_run(run_dir), checkpoints=[11, -1], progress=False)
    assert [e["step"] for e in numbers["checkpoints"]] == [11, 35]
    assert numbers["order"] == ORDER and len(numbers["summary"]["alive"]["by_distance"]) == 2
    entry = numbers["checkpoints"][-1]
    assert np.allclose(np.diag(entry["alive"]["cosine"]), 1)
    assert all(-1 <= r <= 1 for r in entry["alive"]["repeat"])
    json.dumps(numbers, allow_nan=True)


def test_a_recovery_row_reproduces_the_runs_next_block(run_dir: Path, tmp_path: Path):
    """From checkpoint 29 (optimizer state kept), training one block on the source the run
    trained next is the run itself: the losses after are the run's evaluations at step 35,
    bitwise. Training on a source lowers its own loss."""
    run = open_run(_copy(run_dir, tmp_path))
    numbers = tr.recovery(run, [29], steps=6, progress=False)
    entry = numbers["checkpoints"][0]
    assert entry["optimizer"].startswith("restored") and entry["cache"] == "new"
    assert entry["before"] == _evals(run_dir, 29)
    trained_next = run.checkpoints[-1].source
    after = json.loads(run.dir.recovery(29, 6).read_text())["rows"][trained_next]["after"]
    assert after == _evals(run_dir, 35)
    matrix = np.array(entry["matrix"])
    assert matrix.shape == (3, 3) and (np.diag(matrix) < 0).all()
    assert entry["by_offset"][0] == pytest.approx(np.diag(matrix).mean())
    assert set(entry["other"]) >= {"corpus", "indent"}  # evaluated, not trained


class Crash(Exception):
    """Stands in for a kill during a row."""


def _counting(monkeypatch: pytest.MonkeyPatch, crash_after: int | None = None) -> list[str]:
    """Count the recovery's training steps (Trainer.step_on); raise Crash after some."""
    calls: list[str] = []
    step_on = Trainer.step_on

    def counted(self, source):
        if crash_after is not None and len(calls) == crash_after:
            raise Crash
        calls.append(source)
        return step_on(self, source)
    monkeypatch.setattr(Trainer, "step_on", counted)
    return calls


def test_recovery_resumes_after_a_kill_and_equals_an_uninterrupted_one(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    whole = tr.recovery(open_run(_copy(run_dir, tmp_path / "whole")), [23], 2, progress=False)
    run = open_run(_copy(run_dir, tmp_path / "killed"))
    with monkeypatch.context() as m:
        _counting(m, crash_after=2 * 2 + 1)  # in the middle of the third row
        with pytest.raises(Crash):
            tr.recovery(run, [23], 2, progress=False)
    assert list(json.loads(run.dir.recovery(23, 2).read_text())["rows"]) == ORDER[:2]
    with monkeypatch.context() as m:
        calls = _counting(m)
        resumed = tr.recovery(run, [23], 2, progress=False)
    assert calls == [ORDER[2]] * 2  # only the missing row
    a, b = whole["checkpoints"][0], resumed["checkpoints"][0]
    assert b["cache"] == "resumed (2 of 3 rows cached)"
    assert a["optimizer"].startswith("fresh")  # checkpoint 23 kept no optimizer state
    assert a["matrix"] == b["matrix"] and a["before"] == b["before"] and a["other"] == b["other"]


def test_the_cache_key_refuses_rows_of_another_m_or_checkpoint(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run = open_run(_copy(run_dir, tmp_path))
    one = tr.recovery(run, [23], 1, progress=False)["checkpoints"][0]
    kept = run.dir.recovery(23, 1).read_bytes()
    with monkeypatch.context() as m:
        calls = _counting(m)
        two = tr.recovery(run, [23], 2, progress=False)["checkpoints"][0]
    assert len(calls) == 3 * 2 and two["cache"] == "new" and two["matrix"] != one["matrix"]
    assert run.dir.recovery(23, 1).read_bytes() == kept
    path = run.dir.recovery(23, 2)
    cached = json.loads(path.read_text())
    cached["key"]["model_sha256"] = "0" * 64  # as if the checkpoint had been trained anew
    path.write_text(json.dumps(cached))
    with monkeypatch.context() as m:
        calls = _counting(m)
        again = tr.recovery(run, [23], 2, progress=False)["checkpoints"][0]
    assert len(calls) == 3 * 2 and again["cache"] == "replaced rows computed under another key"
    assert again["matrix"] == two["matrix"]


def test_recovery_refuses_steps_past_a_decayed_end(run_dir: Path):
    run = open_run(run_dir)
    with pytest.raises(ConfigError, match=r"--steps: 1 steps from checkpoint 35 run past"):
        tr.recovery(run, [-1], 1, progress=False)
    with pytest.raises(ConfigError, match="--steps: must be at least 1"):
        tr.recovery(run, [23], 0, progress=False)


def test_analyze_on_the_command_line_keeps_what_it_did_not_redo(
        run_dir: Path, tmp_path: Path, capsys):
    path = _copy(run_dir, tmp_path)
    main(["analyze", str(path), "--what", "gradients,recovery", "--steps", "1",
          "--checkpoints", "23,29"])
    run = open_run(path)
    numbers = json.loads(run.dir.trajectory.read_text())
    assert [e["step"] for e in numbers["recovery"]["checkpoints"]] == [23, 29]
    assert [e["step"] for e in numbers["gradients"]["checkpoints"]] == [23, 29]
    head = headline(numbers)  # read back from JSON
    assert head["gradients.alive.distance_correlation"] == \
        numbers["gradients"]["summary"]["alive"]["correlation"]
    main(["analyze", str(path), "--what", "similarity"])
    numbers = json.loads(run.dir.trajectory.read_text())
    assert {"similarity", "gradients", "recovery"} <= set(numbers)
    names = {p.name for p in run.dir.figures.iterdir()}
    assert {"gradient_cosine.pdf", "recovery_matrix.png", "similarity.png"} <= names
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", str(path), "--what", "recovery", "--steps", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "sparsecircuits: error: --steps: must be at least 1, got 0"


def test_the_figures_draw_the_matrices_in_cycle_order(run_dir: Path, tmp_path: Path):
    import matplotlib.pyplot as plt

    from sparsecircuits.figures import trajectory_plots as tp

    run = open_run(_copy(run_dir, tmp_path))
    numbers = {"gradients": tr.gradients(run, [23, 29], progress=False),
               "recovery": tr.recovery(run, [23], 1, progress=False)}
    fig = tp.gradient_cosine(run, numbers=numbers)
    matrix_ax, profile_ax = fig.axes[:2]
    assert [t.get_text() for t in matrix_ax.get_yticklabels()] == ORDER
    assert len(matrix_ax.texts) == 3 * 3 - 3  # the diagonal left grey
    assert profile_ax.get_xlabel() == "cycle distance (blocks)"
    assert "same source, other batch" in profile_ax.get_title()
    fig = tp.recovery_matrix(run, numbers=numbers)
    matrix_ax, profile_ax = fig.axes[:2]
    assert len(matrix_ax.texts) == 9 and matrix_ax.get_ylabel() == "trained on"
    image = matrix_ax.images[0]
    assert image.norm.vmin == -image.norm.vmax  # centred at 0
    assert len(profile_ax.patches) == 3
    plt.close("all")
    written = tp.write_trajectory_figures(run, numbers, tmp_path / "figs", formats=("png",))
    assert sorted(p.stem for p in written) == ["gradient_cosine", "recovery_matrix"]
