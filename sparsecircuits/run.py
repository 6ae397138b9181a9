"""``open_run(path)``: one run folder as a Python object, for notebooks, the CLI, the viewer and
the figures.

Everything is read lazily and cached on the object: the config, the checkpoints' places in the
schedule, models, weight graphs (built from the checkpoint's weights, never stored), circuits
(one file each), the loss matrix, the logged metrics, the circuit timeline and the analysis.
A step is an ``int`` training step, a negative index into the checkpoints (``-1``: the newest)
or a checkpoint folder name (``"00000649"``)::

    run = open_run("runs/demo")
    run.checkpoints[-1]            # CheckpointInfo(step=649, cycle=2, block=17, ...)
    model = run.model(-1)
    circuit = run.circuit("quote", -1)
    run.loss_matrix().column("quote")

A run that changes on disk (training or extraction still going) is read again by a new
``open_run``.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from sparsecircuits.analysis import RunAnalysis
from sparsecircuits.behaviour import BehaviourReport, behaviour
from sparsecircuits.checkpoint import CheckpointError, load_model, read_meta, read_run_config
from sparsecircuits.circuits.ablate import ablate, evaluate
from sparsecircuits.circuits.circuit import Circuit, read_circuit
from sparsecircuits.circuits.graph import weight_graph
from sparsecircuits.circuits.timeline import CircuitTimeline
from sparsecircuits.config import Config
from sparsecircuits.data.tasks import TASKS
from sparsecircuits.metrics import LossMatrix, read_evals
from sparsecircuits.model import SparseGPT
from sparsecircuits.rundir import STEP_NAME, RunDir, step_name
from sparsecircuits.schedules import build_schedule

Step = int | str


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a checkpoint sits in the schedule: the block it ends, that block's cycle, the
    source it trained and its position in the cycle (cycle -1: the warm-up)."""

    step: int
    cycle: int
    block: int
    source: str
    position: int


@dataclass(frozen=True)
class Metrics:
    """``metrics.jsonl`` as columns: ``columns[name]`` is a numpy array with one entry per
    logged step (nan where a line lacks the field); ``steps`` is ``columns["step"]``."""

    columns: dict[str, np.ndarray]

    @property
    def steps(self) -> np.ndarray:
        return self.columns["step"]

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.columns[name]
        except KeyError:
            raise KeyError(f"no metric {name!r}; logged: {', '.join(self.columns)}") from None

    def __len__(self) -> int:
        return len(self.steps)


class Run:
    """One run folder (module doc). Use :func:`open_run`."""

    def __init__(self, path: str | Path) -> None:
        self.dir = RunDir(path)
        if not self.dir.root.is_dir():
            raise CheckpointError(f"{self.dir.root}: no such run folder")
        if not self.dir.config.exists():
            raise CheckpointError(f"{self.dir.config}: missing; is {self.dir.root} a run folder "
                                  "(the --out of `sparsecircuits train`)?")
        self._models: OrderedDict[int, SparseGPT] = OrderedDict()
        self._graphs: OrderedDict[int, nx.DiGraph] = OrderedDict()

    @property
    def path(self) -> Path:
        return self.dir.root

    def __repr__(self) -> str:
        steps = self.steps
        span = f"steps {steps[0]}..{steps[-1]}" if steps else "no checkpoints"
        tasks = ", ".join(self.tasks)
        return f"<Run {self.path}: {len(steps)} checkpoints ({span}), tasks {tasks}>"

    # -- what the run is -------------------------------------------------------------------

    @cached_property
    def config(self) -> Config:
        """The resolved config the run was trained with."""
        return read_run_config(self.path)

    @cached_property
    def steps(self) -> list[int]:
        """Steps of the run's checkpoints, oldest first."""
        return self.dir.checkpoint_steps()

    @cached_property
    def checkpoints(self) -> list[CheckpointInfo]:
        """Every checkpoint's place in the schedule, oldest first."""
        infos = []
        for step in self.steps:
            meta = read_meta(self.dir.checkpoint(step))
            infos.append(CheckpointInfo(step, int(meta["cycle"]), int(meta["block"]),
                                        str(meta["source"]), int(meta["position"])))
        return infos

    @cached_property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the schedule trains (the ones extraction follows), else every task."""
        trained = tuple(s for s in self.config.schedule.sources if s in TASKS)
        return trained or tuple(TASKS)

    def step(self, step: Step = -1) -> int:
        """The training step a step argument names (module doc)."""
        steps = self.steps
        if not steps:
            raise CheckpointError(f"{self.dir.checkpoints}: no checkpoint in this run yet")
        if isinstance(step, str):
            if not STEP_NAME.fullmatch(step):
                raise CheckpointError(f"{self.path}: {step!r} is no checkpoint folder name "
                                      f"(eight digits, e.g. {step_name(steps[-1])})")
            step = int(step)
        elif isinstance(step, int | np.integer) and step < 0:
            if -step > len(steps):
                raise CheckpointError(f"{self.path}: index {step} but the run has "
                                      f"{len(steps)} checkpoints")
            return steps[step]
        if step not in steps:
            near = min(steps, key=lambda s: abs(s - step))
            raise CheckpointError(f"{self.path}: no checkpoint at step {step} (nearest: {near}; "
                                  f"checkpoints: {_span(steps)})")
        return int(step)

    def select(self, checkpoints: str | Sequence[Step] | None = None, default: str = "all"
               ) -> list[int]:
        """The steps ``checkpoints`` names, oldest first: ``"all"``, ``"newest"``,
        ``"last-cycle"`` (the checkpoints of the latest blocks, as many blocks as a cycle has),
        or a list of steps (module doc); None names ``default``. What ``--checkpoints`` takes."""
        self.step(-1)  # a run without checkpoints says so
        checkpoints = default if checkpoints is None else checkpoints
        if checkpoints == "all":
            return list(self.steps)
        if checkpoints == "newest":
            return [self.steps[-1]]
        if checkpoints == "last-cycle":
            blocks = build_schedule(self.config.schedule).blocks()
            period = max(Counter(b.cycle for b in blocks if b.cycle >= 0).values(), default=1)
            newest = self.checkpoints[-1].block
            return [c.step for c in self.checkpoints if c.block > newest - period]
        if isinstance(checkpoints, str) or not checkpoints:
            raise ValueError(f"--checkpoints: {checkpoints!r}; give all, newest, last-cycle or "
                             "steps")
        return sorted({self.step(s) for s in checkpoints})

    # -- per checkpoint --------------------------------------------------------------------

    def model(self, step: Step = -1) -> SparseGPT:
        """The model at a checkpoint, in eval mode (the last few are cached: do not modify
        their weights outside an ``ablate`` block)."""
        step = self.step(step)
        if step not in self._models:
            self._models[step] = load_model(self.dir.checkpoint(step))[0]
            _trim(self._models, 4)
        self._models.move_to_end(step)
        return self._models[step]

    def weight_graph(self, step: Step = -1) -> nx.DiGraph:
        """Every surviving connection at a checkpoint (:mod:`sparsecircuits.circuits.graph`),
        built from its weights and cached."""
        step = self.step(step)
        if step not in self._graphs:
            graph = weight_graph(self.model(step))
            graph.graph["step"] = step
            self._graphs[step] = graph
            _trim(self._graphs, 64)
        self._graphs.move_to_end(step)
        return self._graphs[step]

    def circuit(self, task: str, step: Step = -1, seed: int = 0) -> Circuit:
        """``task``'s circuit at a checkpoint, as extracted with ``seed``. An unsolved task
        gives a circuit that says so (``circuit.solved`` False) and carries the whole model's
        loss."""
        step = self.step(step)
        path = self.dir.circuit_file(step, task, seed)
        if not path.exists():
            have = sorted({t for t, _ in self.dir.circuit_files(step)})
            hint = (f"extracted there: {', '.join(have)}" if have
                    else f"run `sparsecircuits extract {self.path}`")
            if task not in TASKS:
                hint = f"tasks: {', '.join(TASKS)}"
            raise CheckpointError(f"{path}: no circuit of {task!r} (seed {seed}) at step "
                                  f"{step}; {hint}")
        return read_circuit(path, self.weight_graph(step))

    # -- the whole run ---------------------------------------------------------------------

    @cached_property
    def _loss_matrix(self) -> LossMatrix:
        if not self.dir.evals.exists():
            raise CheckpointError(f"{self.dir.evals}: missing; the run has not reached its "
                                  "first block boundary")
        return read_evals(self.dir.evals)

    def loss_matrix(self) -> LossMatrix:
        """Every task and source's loss at every block boundary."""
        return self._loss_matrix

    @cached_property
    def _metrics(self) -> Metrics:
        records = [json.loads(line) for line in
                   self.dir.metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
        names = dict.fromkeys(k for r in records for k, v in r.items() if _is_number(v))
        return Metrics({name: np.array([r.get(name, np.nan) for r in records], dtype=float)
                        for name in names})

    def metrics(self) -> Metrics:
        """The logged training metrics (loss, learning rate, density, ...) as columns."""
        return self._metrics

    @cached_property
    def _timeline(self) -> CircuitTimeline:
        return CircuitTimeline.from_run(self.path, weight_graph=self.weight_graph)

    def timeline(self) -> CircuitTimeline:
        """The weight graph and every task's circuit through the checkpoints."""
        return self._timeline

    def survival(self, task: str) -> dict[str, np.ndarray]:
        """Per checkpoint, how much of ``task``'s post-exposure circuit (the circuit at the end
        of its latest exposure) survives: ``edges`` and ``mass`` from
        :meth:`CircuitTimeline.survival`, and ``loss``, the task's loss of the model at this
        checkpoint with everything but that frozen circuit ablated as it was extracted (nan
        where there is no usable post-exposure circuit). A graded fade, defined at every
        checkpoint whether the task is solved there or not."""
        timeline = self.timeline()
        out = timeline.survival(task)
        post = timeline.reference(task, "post")
        out["loss"] = np.full(len(post), np.nan)
        for t, r in enumerate(post):
            if np.isnan(out["edges"][t]):
                continue
            frozen = self.circuit(task, int(timeline.steps[r]))
            model = self.model(int(timeline.steps[t]))
            with ablate(model, keep=frozen):
                out["loss"][t] = evaluate(model, task)[0]
        return out

    def time_analyses(self) -> dict[str, Any] | None:
        """The numbers ``sparsecircuits analyze`` wrote (:mod:`sparsecircuits.trajectory`; nan
        stored as None), or None where it has not run."""
        path = self.dir.trajectory
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def behaviour(self, first_cycle: int = 1) -> BehaviourReport:
        """The loss-side metrics of the run (recovery, prequential loss, savings)."""
        return behaviour(self.path, first_cycle)

    def analysis(self, first_cycle: int = 1) -> RunAnalysis:
        """Behaviour and circuit timeline together: ``summary()``, ``samples()``."""
        timeline = self.timeline() if self.dir.circuit_steps() else None
        return RunAnalysis.load(self.path, first_cycle, timeline=timeline)


def open_run(path: str | Path) -> Run:
    """The run in folder ``path`` (module doc)."""
    return Run(path)


def _trim(cache: OrderedDict[int, Any], size: int) -> None:
    while len(cache) > size:
        cache.popitem(last=False)


def _span(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 6 else (
        f"{', '.join(map(str, steps[:3]))}, ..., {', '.join(map(str, steps[-2:]))}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
