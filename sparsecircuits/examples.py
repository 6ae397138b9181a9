"""The run a notebook starts from: the demo's run when it is there, else a small one made here.

The notebooks take a run folder as a parameter. :func:`example_run` opens it if it holds
extracted circuits; otherwise it trains the ``example`` settings below into a fallback folder
(once: later notebooks reuse it) and extracts it, so every notebook runs top to bottom on a
fresh machine in a few minutes.
"""

from __future__ import annotations

from pathlib import Path

from sparsecircuits.circuits.extract import extract_run
from sparsecircuits.config import config_from_dict, load_config
from sparsecircuits.run import Run, open_run
from sparsecircuits.rundir import RunDir
from sparsecircuits.train import train

EXAMPLE_PRESET = "tiny"
EXAMPLE_OVERRIDES = (
    'schedule.sources=["quote", "set_or_string", "closer"]',
    "schedule.steps_per_block=20",
    "schedule.cycles=2",
    "schedule.warmup_steps=150",
)
"""The ``tiny`` model on three tasks, a short warm-up and two short cycles: about a minute of
training on 2 idle cores (150 s with the cores shared); quote and closer are solved, forgotten
and solved again, set_or_string is not learned at this length (measured once, one thread)."""


def _complete(path: Path) -> bool:
    run = RunDir(path)
    steps = run.checkpoint_steps()
    return bool(steps) and run.circuit_steps() == steps


def shuffled_twin(run: Run, *, progress: bool | None = None) -> Run:
    """The shuffled control of ``run``: its config with ``schedule.kind = "shuffled"``, in
    ``<run>_shuffled`` (the demo's control lives there too), trained and extracted first if it
    is not complete yet."""
    path = run.path.with_name(f"{run.path.name}_shuffled")
    if not _complete(path):
        config = config_from_dict({"schedule": {"kind": "shuffled"}}, run.config)
        train(config, path, resume=RunDir(path).config.exists(), progress=progress)
        extract_run(path, progress=progress)
    return open_run(path)


def example_run(path: str | Path = "runs/demo", fallback: str | Path = "runs/example",
                *, progress: bool | None = None) -> Run:
    """``path`` if it is a run with circuits at every checkpoint, else ``fallback``, trained
    and extracted first if it is not complete yet (resuming what a killed notebook left)."""
    for candidate in (Path(path), Path(fallback)):
        if _complete(candidate):
            return open_run(candidate)
    fallback = Path(fallback)
    train(load_config(EXAMPLE_PRESET, list(EXAMPLE_OVERRIDES)), fallback,
          resume=RunDir(fallback).config.exists(), progress=progress)  # a no-op when complete
    extract_run(fallback, progress=progress)
    return open_run(fallback)
