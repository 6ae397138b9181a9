"""A real (micro) run through the command line, then read back through ``open_run``: the
layout the trainer and the extractor write is the layout every reader reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import MICRO

from sparsecircuits import open_run
from sparsecircuits.checkpoint import CheckpointError
from sparsecircuits.cli import main
from sparsecircuits.rundir import TREE, RunDir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    config = root / "micro.json"
    config.write_text(json.dumps(MICRO))
    run = root / "run"
    main(["train", str(config), "--out", str(run)])
    main(["extract", str(run), "--seeds", "2", "--threads", "1"])
    return run


def test_timeline_and_export_read_what_extract_wrote(run_dir: Path, capsys) -> None:
    main(["timeline", str(run_dir), "--control", str(run_dir)])
    out = capsys.readouterr().out
    summary = json.loads(RunDir(run_dir).summary.read_text())
    assert summary["checkpoints"] == len(open_run(run_dir).steps) > 1
    assert "quote.solved_fraction" in out and "control:" in out
    main(["export", str(run_dir)])
    exports = RunDir(run_dir).exports
    assert {p.name for p in exports.iterdir()} >= {"weight_graph.gexf", "quote.gexf",
                                                   "events.csv", "metrics.csv", "summary.json"}


def test_the_run_object_reads_every_part_of_the_run(run_dir: Path) -> None:
    run = open_run(run_dir)
    assert run.tasks == ("quote", "closer")
    assert run.steps == [info.step for info in run.checkpoints]
    first = run.checkpoints[0]
    assert (first.step, first.block, first.source) == (5, 0, "quote")
    assert run.step(-1) == run.steps[-1] == run.step(f"{run.steps[-1]:08d}")
    matrix = run.loss_matrix()
    assert matrix.steps.tolist() == run.steps and set(matrix.sources) >= {"quote", "closer"}
    metrics = run.metrics()
    assert len(metrics) == run.steps[-1] + 1 and np.isfinite(metrics["loss"]).all()
    timeline = run.timeline()
    assert timeline.steps.tolist() == run.steps and timeline.tasks == ("closer", "quote")
    for t, step in enumerate(run.steps):
        graph = run.weight_graph(step)
        weights = sum(1 for *_, d in graph.edges(data=True) if d["kind"] not in
                      ("residual", "qk"))
        alive = timeline.weight_graph.edges.present[:, t]
        kinds = [a["kind"] for a in timeline.weight_graph.edges.attrs]
        assert weights == sum(1 for k, here in zip(kinds, alive, strict=True)
                              if here and k not in ("residual", "qk"))
        for task in run.tasks:
            circuit = run.circuit(task, step)
            row = timeline.circuits[task]
            assert row.nodes.present[:, t].sum() == len(circuit)
            assert circuit.solved == bool(row.attrs[t]["solved"])
            if not circuit.solved:
                assert "unsolved" in repr(circuit) and circuit.attrs["loss_full"] > 0
    assert run.analysis().summary()["checkpoints"] == len(run.steps)


def test_errors_name_the_run_and_what_is_missing(run_dir: Path, tmp_path: Path) -> None:
    run = open_run(run_dir)
    with pytest.raises(CheckpointError, match="no checkpoint at step 7"):
        run.model(7)
    with pytest.raises(CheckpointError, match="index -99 but the run has"):
        run.model(-99)
    with pytest.raises(CheckpointError, match="is no checkpoint folder name"):
        run.model("649")
    with pytest.raises(CheckpointError, match="no circuit of 'bracket_depth'"):
        run.circuit("bracket_depth")
    with pytest.raises(CheckpointError, match=r"config.json: missing; is .* a run folder"):
        open_run(tmp_path)
    with pytest.raises(CheckpointError, match="no such run folder"):
        open_run(tmp_path / "nope")


def test_the_run_tree_is_what_the_readme_says() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## A run folder", 1)[1].split("\n## ", 1)[0]
    missing = [entry for entry in TREE if entry not in section]
    assert not missing, f"README's 'A run folder' lacks {missing}"

