"""A trained and extracted micro run for the viewer's tests, one per session, and a copy of it
with planted oscillating weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import MICRO


@pytest.fixture(scope="session")
def viewer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro config trained (about 10 s) and extracted with a loose target loss, so every
    task has a (small) solved circuit at every checkpoint; analysed (``analysis/
    trajectory.json``, about 2 s), so the viewer has its time panel."""
    from sparsecircuits import open_run
    from sparsecircuits.checkpoint import write_json
    from sparsecircuits.circuits.extract import extract_run
    from sparsecircuits.circuits.prune import PruneConfig
    from sparsecircuits.config import config_from_dict, validate
    from sparsecircuits.train import train
    from sparsecircuits.trajectory import analyze

    config = config_from_dict(MICRO)
    validate(config)
    run_dir = train(config, tmp_path_factory.mktemp("viewer") / "run", progress=False)
    extract_run(run_dir, progress=False, threads=1, config=PruneConfig(target_loss=0.75))
    run = open_run(run_dir)
    run.dir.trajectory.parent.mkdir(exist_ok=True)
    write_json(run.dir.trajectory, analyze(run))
    return Path(run_dir)


PLANTED_TENSORS = ("W_E", "blocks.0.attn.o.W", "blocks.0.mlp.fc_in.W", "blocks.0.mlp.fc_in.b")
"""An embedding, two linear matrices (stored ``[target, source]``) and a bias (not in the
weight graph)."""


@pytest.fixture(scope="session")
def planted_run(viewer_run: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, list[list]]:
    """A copy of the viewer run whose ``analysis/trajectory.json`` lists planted oscillating
    weights (two alive entries of each of :data:`PLANTED_TENSORS`, strongest first), and the
    list. The micro run has too few checkpoints for any weight to pass the oscillation test."""
    from sparsecircuits import open_run
    from sparsecircuits.checkpoint import write_json
    from sparsecircuits.trajectory import run_weights

    root = tmp_path_factory.mktemp("planted") / "run"
    shutil.copytree(viewer_run, root, ignore=shutil.ignore_patterns("viewer"))
    run = open_run(root)
    x, _, spans = run_weights(run)
    planted: list[list] = []
    for name, start, stop in spans:
        if name in PLANTED_TENSORS:
            alive = np.flatnonzero((x[:, start:stop] != 0).any(axis=0))
            planted += [[name, int(i), 0.9 - 0.1 * len(planted)] for i in alive[-2:]]
    numbers = json.loads(run.dir.trajectory.read_text())
    numbers["oscillation"]["oscillating_weights"] = planted
    write_json(run.dir.trajectory, numbers)
    return root, planted
