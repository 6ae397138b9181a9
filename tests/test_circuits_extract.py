"""extract_run on a run folder of hand-built checkpoints: layout, reading back, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest
from test_circuits_planted import (
    ID,
    PLANTED,
    PLANTED_NODES,
    one_thread,
    planted_model,
    planted_task,
)

from sparsecircuits.checkpoint import save_checkpoint
from sparsecircuits.circuits.extract import extract_run, read_circuits, read_weight_graph
from sparsecircuits.config import Config, ConfigError

__all__ = ["one_thread", "planted_task"]  # fixtures used here

CIRCUIT_ATTRS = {"task", "step", "seed", "target_loss", "solved", "loss_full", "loss_circuit",
                 "loss_ablated", "loss_random", "n_nodes", "n_edges", "ablation", "reference"}


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
    root = extract_run(run_dir, [planted_task], seeds=2, progress=False, threads=1,
                       weight_graph_graphml=True)
    for step in ("00000000", "00000010"):
        names = {p.name for p in (root / step).iterdir()}
        assert names == {"weight_graph.graphml", "weight_graph.json", f"{PLANTED}.json",
                         f"{PLANTED}.graphml", f"{PLANTED}.mask.safetensors",
                         f"{PLANTED}.seed1.json", f"{PLANTED}.seed1.graphml",
                         f"{PLANTED}.seed1.mask.safetensors"}
    circuits = read_circuits(run_dir)
    assert list(circuits) == [0, 10]
    circuit = circuits[10][PLANTED]
    assert set(circuit.graph) >= CIRCUIT_ATTRS
    assert (circuit.graph["step"], circuit.graph["seed"], circuit.graph["solved"]) == (10, 0, True)
    assert set(circuit.nodes) >= PLANTED_NODES
    assert all(isinstance(d["importance"], float) for _, d in circuit.nodes(data=True))
    assert all({"weight", "param", "kind"} <= set(d) for _, _, d in circuit.edges(data=True))
    assert read_circuits(run_dir, seed=1)[10][PLANTED].graph["seed"] == 1
    graph = read_weight_graph(run_dir, 10)
    assert graph.graph["step"] == 10
    unembed = graph.edges["ln_final.hook_normalized:1", f"logits:{ID['A']}"]
    assert unembed["weight"] == pytest.approx(3.6)
    from_graphml = nx.read_graphml(root / "00000010" / "weight_graph.graphml")
    assert from_graphml.number_of_edges() == graph.number_of_edges()
    assert nx.read_graphml(root / "00000010" / f"{PLANTED}.graphml").graph["solved"]


def test_extract_run_skips_done_work_and_resumes(run_dir: Path, planted_task: str) -> None:
    root = extract_run(run_dir, [planted_task], progress=False, threads=1)
    assert not (root / "00000000" / "weight_graph.graphml").exists()  # opt-in
    done = root / "00000000" / f"{PLANTED}.json"
    before = done.stat().st_mtime_ns
    (root / "00000010" / f"{PLANTED}.json").unlink()  # as if killed before the last write
    extract_run(run_dir, [planted_task], progress=False, threads=1)
    assert done.stat().st_mtime_ns == before
    assert read_circuits(run_dir)[10][PLANTED].graph["solved"]
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
