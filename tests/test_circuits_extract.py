"""extract_run on a run folder of hand-built checkpoints: layout, reading back through the
run object, reproducing the stored losses by ablation, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_circuits_planted import (
    ID,
    PLANTED,
    PLANTED_NODES,
    one_thread,
    planted_model,
    planted_task,
)

from sparsecircuits import open_run
from sparsecircuits.checkpoint import CheckpointError, save_checkpoint
from sparsecircuits.circuits.ablate import ablate, evaluate
from sparsecircuits.circuits.extract import extract_run
from sparsecircuits.config import Config, ConfigError

__all__ = ["one_thread", "planted_task"]  # fixtures used here

CIRCUIT_ATTRS = {"task", "step", "seed", "target_loss", "solved", "loss_full", "loss_circuit",
                 "loss_ablated", "loss_random", "n_nodes", "n_edges", "method", "reference",
                 "per_position", "n_eval"}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder with the planted model at steps 0 and 10 (the second slightly rescaled)."""
    model = planted_model()
    config = Config(model=model.cfg)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    for step, scale in ((0, 1.0), (10, 1.2)):
        weights = {name: p.detach() * (scale if name == "unembed.W" else 1.0)
                   for name, p in model.named_parameters()}
        save_checkpoint(tmp_path, step, weights, {}, None, {"source": PLANTED})
    return tmp_path


def test_extract_run_layout_and_reading(run_dir: Path, planted_task: str) -> None:
    root = extract_run(run_dir, [planted_task], seeds=2, progress=False, threads=1)
    for step in ("00000000", "00000010"):
        names = {p.name for p in (root / step).iterdir()}
        assert names == {f"{PLANTED}.json", f"{PLANTED}.mask.safetensors",
                         f"{PLANTED}.seed1.json", f"{PLANTED}.seed1.mask.safetensors"}
    run = open_run(run_dir)
    assert run.steps == [0, 10] and run.dir.circuit_steps() == [0, 10]
    circuit = run.circuit(PLANTED, 10)
    assert circuit is not None and set(circuit.attrs) >= CIRCUIT_ATTRS
    assert (circuit.step, circuit.seed, circuit.solved) == (10, 0, True)
    assert circuit.attrs["reference"] == PLANTED and circuit.attrs["n_eval"] == 64
    assert set(circuit.nodes) >= PLANTED_NODES
    assert all(isinstance(v, float) for v in circuit.importance.values())
    graph = run.weight_graph("00000010")
    # the circuit is exactly the weight subgraph on its nodes
    assert set(circuit.graph.edges) == set(graph.subgraph(circuit.nodes).edges)
    assert all({"weight", "param", "kind"} <= set(d) for _, _, d in circuit.graph.edges(data=True))
    assert run.circuit(PLANTED, 10, seed=1).seed == 1
    assert graph.graph["step"] == 10
    unembed = graph.edges["ln_final.hook_normalized:1", f"logits:{ID['A']}"]
    assert unembed["weight"] == pytest.approx(3.6)
    with pytest.raises(CheckpointError, match=r"no checkpoint at step 5 \(nearest: 0"):
        run.circuit(PLANTED, 5)


def test_ablating_a_stored_circuit_reproduces_its_losses(run_dir: Path, planted_task: str) -> None:
    extract_run(run_dir, [planted_task], progress=False, threads=1)
    run = open_run(run_dir)
    model, circuit = run.model(10), run.circuit(PLANTED, 10)
    assert evaluate(model, PLANTED)[0] == pytest.approx(circuit.attrs["loss_full"], abs=1e-6)
    with ablate(model, keep=circuit):  # sufficiency: everything but the circuit mean-ablated
        assert evaluate(model, PLANTED)[0] == pytest.approx(circuit.attrs["loss_circuit"],
                                                             abs=1e-5)
    with ablate(model, circuit):  # necessity: the circuit itself mean-ablated
        assert evaluate(model, PLANTED)[0] == pytest.approx(circuit.attrs["loss_ablated"],
                                                             abs=1e-5)


def test_extract_run_skips_done_work_and_resumes(run_dir: Path, planted_task: str) -> None:
    root = extract_run(run_dir, [planted_task], progress=False, threads=1)
    done = root / "00000000" / f"{PLANTED}.json"
    before = done.stat().st_mtime_ns
    (root / "00000010" / f"{PLANTED}.json").unlink()  # as if killed before the last write
    extract_run(run_dir, [planted_task], progress=False, threads=1)
    assert done.stat().st_mtime_ns == before
    assert open_run(run_dir).circuit(PLANTED, 10).solved
    assert not list(root.rglob("*.tmp"))


@pytest.mark.parametrize(("args", "message"), [
    ({"seeds": 0}, "--seeds: must be at least 1, got 0"),
    ({"threads": 0}, "--threads: must be at least 1, got 0"),
    ({"tasks": ["nope"]}, "--tasks: unknown task"),
])
def test_extract_run_refuses_bad_arguments_before_writing(run_dir: Path, args: dict,
                                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        extract_run(run_dir, progress=False, **args)
    assert not (run_dir / "circuits").exists()


def test_the_readme_python_block_runs_as_written(tmp_path: Path, planted_task: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """README's "In Python" block, executed on a run of the planted model (a run trained here
    in seconds would solve no task)."""
    run_dir = tmp_path / "runs" / "demo"
    model = planted_model()
    config = Config(model=model.cfg)
    config.schedule.sources = [PLANTED]
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    evals = []
    for block, step in enumerate((0, 10)):
        where = {"step": step, "cycle": 0, "block": block, "position": block, "source": PLANTED}
        save_checkpoint(run_dir, step, dict(model.named_parameters()), {}, None, where)
        evals.append(json.dumps({**where, "evals": {PLANTED: {"loss": 0.1}}}) + "\n")
    (run_dir / "evals.jsonl").write_text("".join(evals))
    extract_run(run_dir, progress=False, threads=1)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("## In Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
