"""Task circuits for every checkpoint of a run, written into the run folder.

For each checkpoint, in step order, and each seed, every task's circuit
(:func:`~sparsecircuits.circuits.prune.find_circuits`) is written to
``RunDir.circuit_file(step, task, seed)`` (:mod:`~sparsecircuits.circuits.circuit` has the
format) and, for a solved task, its trained mask logits to ``RunDir.mask_file``: the warm start
of the next checkpoint. The weight graph is not written: it is a function of the checkpoint
(``Run.weight_graph``). Every file is written atomically and a circuit's JSON last, so a killed
extraction resumes where it stopped: whatever has its JSON is done.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from sparsecircuits.checkpoint import (
    CheckpointError,
    load_model,
    load_tensors,
    read_run_config,
    run_lock,
    save_tensors,
)
from sparsecircuits.circuits.circuit import Circuit, write_circuit
from sparsecircuits.circuits.graph import weight_graph
from sparsecircuits.circuits.prune import PruneConfig, find_circuits
from sparsecircuits.config import Config, ConfigError
from sparsecircuits.data.tasks import TASKS
from sparsecircuits.progress import progress_bar
from sparsecircuits.rundir import RunDir


def _write_circuit(circuit: Circuit, run: RunDir, seed: int, step: int) -> None:
    circuit.graph.graph["step"] = step
    if circuit.logits is not None:
        save_tensors({"logits": circuit.logits}, run.mask_file(step, circuit.task, seed))
    write_circuit(circuit, run.circuit_file(step, circuit.task, seed))


def extract_run(
    run_dir: str | Path,
    tasks: Iterable[str] | None = None,
    seeds: int = 1,
    progress: bool | None = None,
    *,
    config: PruneConfig | None = None,
    threads: int | None = None,
) -> Path:
    """Extract every checkpoint of a run in step order (see module doc); return the circuits
    folder. ``tasks`` defaults to the tasks the run's schedule trains; ``seeds`` > 1
    re-extracts with seeds 1..seeds-1. A task solved at the previous checkpoint starts from
    that checkpoint's mask logits (of the same seed), any other starts cold: logits older than
    one checkpoint were measured to mislead more than help. ``threads`` (default: the run's
    ``run.threads``, else torch's) is how many tasks are extracted at once, one torch thread
    each (:func:`~sparsecircuits.circuits.prune.find_circuits`). Done work is skipped."""
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: must be at least 1, got {threads}")
    run = RunDir(run_dir)
    run_config = read_run_config(run.root)
    threads = threads or run_config.run.threads
    tasks = _tasks(run_config, tasks, seeds)
    steps = run.checkpoint_steps()
    if not steps:
        raise CheckpointError(f"{run.checkpoints}: no checkpoint to extract yet; train the run "
                              f"(sparsecircuits train ... --out {run.root} --resume) first")
    with run_lock(run.root):
        warm: list[dict[str, Tensor]] = [{} for _ in range(seeds)]
        for step in progress_bar(steps, desc="circuits", unit="ckpt", show=progress):
            run.circuit_folder(step).mkdir(parents=True, exist_ok=True)
            model = graph = None
            for seed in range(seeds):
                todo = [t for t in tasks if not run.circuit_file(step, t, seed).exists()]
                if todo:
                    if model is None:
                        model = load_model(run.checkpoint(step))[0]
                        graph = weight_graph(model)
                        graph.graph["step"] = step
                    find_circuits(model, todo, graph, seed=seed, warm=warm[seed], config=config,
                                  workers=threads or torch.get_num_threads(),
                                  on_found=partial(_write_circuit, run=run, seed=seed, step=step))
                masks = {task: run.mask_file(step, task, seed) for task in tasks}
                warm[seed] = {task: load_tensors(path)["logits"]
                              for task, path in masks.items() if path.exists()}
    return run.circuits


def missing_circuits(run_dir: str | Path, tasks: Iterable[str] | None = None,
                     seeds: int = 1) -> tuple[int, int]:
    """``(missing, total)``: how many of the circuit files ``extract_run(run_dir, tasks, seeds)``
    writes for the run's checkpoints so far are not there yet (0 missing: extracted)."""
    run = RunDir(run_dir)
    tasks = _tasks(read_run_config(run.root), tasks, seeds)
    wanted = [run.circuit_file(step, task, seed) for step in run.checkpoint_steps()
              for seed in range(seeds) for task in tasks]
    return sum(not path.exists() for path in wanted), len(wanted)


def _tasks(run_config: Config, tasks: Iterable[str] | None, seeds: int) -> list[str]:
    """The tasks to extract: ``tasks``, else those the schedule trains, else every task."""
    if seeds < 1:
        raise ConfigError(f"--seeds: must be at least 1, got {seeds}")
    trained = [source for source in run_config.schedule.sources if source in TASKS]
    tasks = list(tasks or trained or TASKS)
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise ConfigError(f"--tasks: unknown task(s) {', '.join(unknown)} "
                         f"(tasks: {', '.join(TASKS)})")
    return tasks
