"""A stand-in for ``sparsecircuits.open_run`` until the ``Run`` facade lands (private).

The viewer's public API takes a ``Run``; paths are accepted and opened here. Only the members
the viewer uses exist: ``path``, ``config``, ``steps``, ``tasks``, ``timeline()``,
``loss_matrix()``, ``model(step)``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from sparsecircuits.checkpoint import list_checkpoints, load_model, read_run_config
from sparsecircuits.circuits.timeline import CircuitTimeline
from sparsecircuits.metrics import LossMatrix, read_evals


class _PathRun:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @cached_property
    def config(self) -> Any:
        return read_run_config(self.path)

    @property
    def steps(self) -> list[int]:
        return [int(p.name) for p in list_checkpoints(self.path)]

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.timeline().tasks

    def timeline(self) -> CircuitTimeline:
        if "_timeline" not in self.__dict__:
            self.__dict__["_timeline"] = CircuitTimeline.from_run(self.path)
        return self.__dict__["_timeline"]

    def loss_matrix(self) -> LossMatrix | None:
        path = self.path / "evals.jsonl"
        return read_evals(path) if path.exists() else None

    def model(self, step: int) -> Any:
        for ckpt in list_checkpoints(self.path):
            if int(ckpt.name) == int(step):
                return load_model(ckpt)[0]
        raise KeyError(f"{self.path}: no checkpoint at step {step}")


def as_run(run: Any) -> Any:
    """A ``Run`` as it is; a path opened as one."""
    if isinstance(run, str | Path):
        try:
            from sparsecircuits import open_run  # the facade, once it has landed
        except ImportError:
            return _PathRun(run)
        return open_run(run)
    return run
