"""Circuits of a trained ``tiny`` run: every solved task's circuit is faithful, seeds agree.

Slow: trains the ``tiny`` preset (minutes on two cores), or reuses the run folder named by the
environment variable ``SPARSECIRCUITS_TINY_RUN``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from sparsecircuits import open_run
from sparsecircuits.circuits.extract import extract_run
from sparsecircuits.circuits.prune import node_ids
from sparsecircuits.config import load_config
from sparsecircuits.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "SPARSECIRCUITS_TINY_RUN" in os.environ:
        return Path(os.environ["SPARSECIRCUITS_TINY_RUN"])
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    return train(load_config("tiny", ["run.threads=2"]), run_dir, progress=False)


def test_tiny_run_circuits(tiny_run: Path) -> None:
    extract_run(tiny_run, seeds=2, progress=False)
    run = open_run(tiny_run)
    model = run.model(-1)
    jaccards = []
    for step in run.steps:
        for task in run.tasks:
            circuit = run.circuit(task, step)
            a = circuit.attrs
            if not a["solved"]:
                continue
            print(f"{step} {task}: {a['n_nodes']} nodes, {a['n_edges']} edges; loss full "
                  f"{a['loss_full']:.3f} circuit {a['loss_circuit']:.3f} ablated "
                  f"{a['loss_ablated']:.3f} random {a['loss_random']:.3f}")
            assert a["loss_circuit"] <= a["target_loss"]
            assert a["loss_ablated"] > a["loss_circuit"]
            if a["n_nodes"] < len(node_ids(model)) / 2:  # a random half-model can solve it
                assert a["loss_random"] > a["loss_circuit"]
            other = run.circuit(task, step, seed=1)
            if other.solved:
                nodes = [set(circuit.nodes), set(other.nodes)]
                jaccards.append(len(nodes[0] & nodes[1]) / len(nodes[0] | nodes[1]))
    assert jaccards, "no task solved at any checkpoint"
    mean = sum(jaccards) / len(jaccards)
    print(f"noise floor: mean node Jaccard between seeds {mean:.2f} over {len(jaccards)} circuits")
    assert mean > 0.4
    assert not any(itertools.chain.from_iterable(
        (tiny_run / "circuits").glob(pattern) for pattern in ("*/*.tmp", "*/.*.tmp")))
