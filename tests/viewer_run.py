"""A trained and extracted micro run for the viewer's tests, one per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MICRO


@pytest.fixture(scope="session")
def viewer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro config trained (about 10 s) and extracted with a loose target loss, so every
    task has a (small) solved circuit at every checkpoint."""
    from sparsecircuits.circuits.extract import extract_run
    from sparsecircuits.circuits.prune import PruneConfig
    from sparsecircuits.config import config_from_dict, validate
    from sparsecircuits.train import train

    config = config_from_dict(MICRO)
    validate(config)
    run_dir = train(config, tmp_path_factory.mktemp("viewer") / "run", progress=False)
    extract_run(run_dir, progress=False, threads=1, config=PruneConfig(target_loss=0.75))
    return Path(run_dir)

