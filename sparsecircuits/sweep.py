"""Sweeps: a grid of runs over one base config, each trained and extracted as a job on this
machine or on a Slurm cluster (through submitit), and an index that notebooks read.

    sparsecircuits sweep tiny --grid run.seed=0,1,2 --grid schedule.kind=round_robin,shuffled \\
        --out sweeps/kind [--executor local|slurm] [--parallel N]

The grid's product is the runs. A run is named by its grid overrides, sorted by key, each
``key=value``, joined by commas: ``run.seed=1,schedule.kind=shuffled``. A list value joins its
items with ``+`` (``schedule.sources=quote+closer``); any other character outside letters,
digits and ``._+-=,`` becomes ``_``; a name over :data:`MAX_NAME` characters is cut and ends in
a hash of its overrides. Each run is one job: train it (resuming what is there), then extract
its circuits. A run whose newest checkpoint is the schedule's last step is trained; one with
every circuit file ``extract_run`` writes is extracted; a sweep run again submits only what is
not done, and an interrupted run resumes. The sweep folder::

    sweep.json     the index: base config, --set overrides, grid, and every run's name,
                   overrides, folder, state, job and log (rewritten atomically as jobs end)
    runs/<name>/   one run folder per grid point (sparsecircuits.rundir)
    logs/          each job's submitit files: <job>_0_log.out and .err (its output), the
                   pickled call and its result

A run's state: ``todo`` (no job yet), ``submitted`` (its job is queued or running), ``done``,
``failed`` (its last job ended without finishing it; ``error`` says why, ``log`` where to look).

In Python, :func:`open_sweep` reads the index; :meth:`Sweep.arms` groups runs that differ only
in their seeds and :func:`compare_arms` sets two arms side by side with intervals over seeds::

    sweep = open_sweep("sweeps/kind")
    arms = sweep.arms(by="schedule.kind")
    compare_arms(arms["round_robin"], arms["shuffled"])["loss.recovery_score"]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sparsecircuits.analysis import RunAnalysis
from sparsecircuits.checkpoint import read_run_config, read_saved_config, write_json
from sparsecircuits.circuits.extract import extract_run, missing_circuits
from sparsecircuits.config import Config, ConfigError, load_config, parse_override
from sparsecircuits.metrics import Comparison, seed_interval
from sparsecircuits.progress import progress_bar
from sparsecircuits.run import Run, open_run
from sparsecircuits.rundir import RunDir
from sparsecircuits.schedules import build_schedule
from sparsecircuits.train import TrainingError, check_sources, train

INDEX, RUNS, LOGS = "sweep.json", "runs", "logs"
MAX_NAME = 200
"""Longest run name kept whole (a file name may have 255 bytes)."""
TIME_LIMIT = 24 * 60
"""A job's default time limit in minutes; a job that reaches it is requeued and resumes."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]+")


@dataclass(frozen=True)
class SweepDir:
    """The paths of a sweep folder (module doc)."""

    root: Path

    @property
    def index(self) -> Path:
        return self.root / INDEX

    @property
    def logs(self) -> Path:
        return self.root / LOGS

    def run(self, name: str) -> Path:
        return self.root / RUNS / name


# --------------------------------------------------------------------------------------------
# The grid


def parse_grid(entries: Sequence[str]) -> dict[str, list[Any]]:
    """``["run.seed=0,1", "schedule.kind=round_robin,shuffled"]`` -> ``{"run.seed": [0, 1],
    "schedule.kind": ["round_robin", "shuffled"]}``. Values split at commas outside brackets
    and quotes, each read as ``--set`` reads it (JSON, else a string). A malformed entry raises
    :class:`ConfigError` naming it."""
    grid: dict[str, list[Any]] = {}
    for entry in entries:
        key, sep, text = entry.partition("=")
        key = key.strip()
        if key in grid:
            raise ConfigError(f"--grid {entry}: {key} is already a --grid key; give its values "
                              "in one entry")
        items = _split(text)
        if not sep or not all(items) or len(key.split(".")) != 2 or not all(key.split(".")):
            raise ConfigError(f"--grid {entry}: expected section.field=value1,value2,...")
        values: list[Any] = []
        for item in items:
            value = _override(f"{key}={item}")[1]
            if value in values:
                raise ConfigError(f"--grid {entry}: {item} is given twice")
            values.append(value)
        grid[key] = values
    return grid


def _override(text: str) -> tuple[str, Any]:
    """``"run.seed=1"`` -> ``("run.seed", 1)``, read as ``--set`` reads it."""
    ((section, fields),) = parse_override(text).items()
    ((name, value),) = fields.items()
    return f"{section}.{name}", value


def _split(text: str) -> list[str]:
    """``'a,[b,c],"d,e"'`` -> ``['a', '[b,c]', '"d,e"']``: commas inside brackets or quotes
    do not split."""
    items, depth, quote, escaped, start = [], 0, "", False, 0
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif quote and char == "\\":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return [item.strip() for item in [*items, text[start:]]]


def run_name(overrides: dict[str, Any]) -> str:
    """The folder name of the run with these grid overrides (module doc)."""
    name = _UNSAFE.sub("_", ",".join(f"{key}={_text(value)}"
                                      for key, value in sorted(overrides.items())))
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()
        name = f"{name[:MAX_NAME - 13]}-{digest[:12]}"
    return name


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "+".join(map(_text, value))
    return json.dumps(value, separators=(",", ":"))


def _set(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


class PlannedRun(NamedTuple):
    """A run of the grid, its config resolved and checked."""

    name: str
    overrides: dict[str, Any]
    config: Config


def plan(config: str, grid: dict[str, list[Any]], out: str | Path, sets: Sequence[str] = (),
         threads: int = 1) -> list[PlannedRun]:
    """Every run of the grid with its config, checked before anything is written: the base
    config and ``sets`` (their own errors), each grid value (errors name ``--grid key=value``),
    each run's schedule and sources (errors name the run), and a run folder already there
    against its saved config. ``run.threads`` is ``threads`` unless set or in the grid; a run
    folder already there keeps the thread count it started with."""
    load_config(config, sets)
    given = {_override(text)[0] for text in sets}
    if not grid:
        raise ConfigError("--grid: give at least one section.field=value1,value2,...")
    for key, values in grid.items():
        if key in given:
            raise ConfigError(f"--grid {key}=...: {key} is also given with --set; keep one")
        for value in values:
            try:
                _checked(config, [*sets, _set(key, value)])
            except ConfigError as err:
                raise ConfigError(f"--grid {key}={_text(value)}: {err}") from None
    runs: dict[str, PlannedRun] = {}
    for combination in itertools.product(*grid.values()):
        overrides = dict(zip(grid, combination, strict=True))
        name = run_name(overrides)
        folder = SweepDir(Path(out)).run(name)
        texts = [*sets, *itertools.starmap(_set, overrides.items())]
        if "run.threads" not in given | set(grid):
            saved = RunDir(folder).config.exists() and read_saved_config(folder)
            texts.append(f"run.threads={saved['run']['threads'] if saved else threads}")
        try:
            resolved = _checked(config, texts)
        except ConfigError as err:
            raise ConfigError(f"--grid run {name}: {err}") from None
        if name in runs:
            raise ConfigError(f"--grid: runs {overrides} and {runs[name].overrides} would share "
                              f"the folder {name}; give values that differ in letters or digits")
        if RunDir(folder).config.exists():
            _check_saved(folder, resolved)
        runs[name] = PlannedRun(name, overrides, resolved)
    return list(runs.values())


def _checked(config: str, overrides: list[str]) -> Config:
    """The config, its fields, sources and schedule checked (a ConfigError names the field)."""
    resolved = load_config(config, overrides)
    check_sources(resolved)
    try:
        build_schedule(resolved.schedule)
    except ValueError as err:  # the schedule's errors name their field
        raise ConfigError(str(err)) from None
    return resolved


def _check_saved(folder: Path, config: Config) -> None:
    saved, now = read_saved_config(folder), json.loads(json.dumps(config.to_dict()))
    changed = [f"{section}.{key}" for section, values in now.items()
               for key, value in values.items() if saved.get(section, {}).get(key) != value]
    if changed:
        raise ConfigError(f"{RunDir(folder).config}: this run was started with another config "
                          f"(differs in {', '.join(changed)}); sweep into another --out")


# --------------------------------------------------------------------------------------------
# A run's progress, and the job that makes it


class Progress(NamedTuple):
    """How far a run folder is: steps trained of the schedule's, circuit files written of those
    its checkpoints so far need (both 0 when it extracts nothing)."""

    steps: int
    total_steps: int
    circuits: int
    total_circuits: int

    @property
    def trained(self) -> bool:
        return self.steps == self.total_steps

    @property
    def done(self) -> bool:
        return self.trained and self.circuits == self.total_circuits


def progress(folder: Path, config: Config, extract: bool = True, seeds: int = 1) -> Progress:
    """What ``folder`` holds of the run ``config`` describes (``extract``: with ``seeds``
    extractions of each circuit)."""
    steps = RunDir(folder).checkpoint_steps()
    missing, total = missing_circuits(folder, seeds=seeds) if extract and steps else (0, 0)
    return Progress(steps[-1] + 1 if steps else 0, build_schedule(config.schedule).total_steps,
                    total - missing, total)


@dataclass(frozen=True, eq=False)
class RunJob:
    """One run of a sweep as a submitit job: train it to the end (resuming what is there), then
    extract its circuits. A job that reaches its time limit or is pre-empted is requeued by
    submitit (:meth:`checkpoint`) and resumes."""

    folder: Path
    config: Config
    extract: bool
    seeds: int

    def __call__(self) -> None:
        if not progress(self.folder, self.config, extract=False).trained:
            train(self.config, self.folder, resume=True, progress=False)
        if self.extract:
            extract_run(self.folder, seeds=self.seeds, progress=False)
        print(f"{self.folder}: done", flush=True)

    def checkpoint(self) -> Any:
        """submitit's hook on a time-out or pre-emption: run this job again."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


# --------------------------------------------------------------------------------------------
# Running a sweep


def run_sweep(
    config: str,
    grid: dict[str, list[Any]],
    out: str | Path,
    *,
    sets: Sequence[str] = (),
    executor: str = "local",
    parallel: int | None = None,
    extract: bool = True,
    seeds: int = 1,
    parameters: dict[str, Any] | None = None,
    wait: bool = True,
    show_progress: bool | None = None,
) -> Sweep:
    """Run every run of ``grid`` over ``config`` (module doc) into the sweep folder ``out`` and
    return it. ``executor`` "local" runs ``parallel`` (default 1) jobs at a time as processes
    here, each at ``max(1, cpus // parallel)`` torch threads; "slurm" submits one job array
    that runs ``parallel`` (default: all) at a time, each at ``cpus_per_task`` threads.
    ``parameters`` go to submitit's ``AutoExecutor.update_parameters`` (``timeout_min``,
    ``cpus_per_task``, ``gpus_per_node``, ``mem_gb``, ``slurm_partition``, ...). ``wait``
    False (Slurm) returns once the jobs are submitted. Runs already done are not submitted; a
    run left failed raises :class:`TrainingError` once every job has ended."""
    if executor not in ("local", "slurm"):
        raise ConfigError(f"--executor: {executor!r}; expected local or slurm")
    if parallel is not None and parallel < 1:
        raise ConfigError(f"--parallel: must be at least 1, got {parallel}")
    if executor == "local" and not wait:
        raise ConfigError("--no-wait: for --executor slurm only (local jobs end with the sweep)")
    parameters = {"timeout_min": TIME_LIMIT, **(parameters or {})}
    if executor == "local":
        parallel = parallel or 1
        threads = max(1, len(os.sched_getaffinity(0)) // parallel)
    else:
        threads = parameters.get("cpus_per_task") or 1
    where = SweepDir(Path(out).absolute())
    runs = plan(config, grid, where.root, sets, threads)
    if not parameters.get("gpus_per_node") and any(r.config.run.device != "cpu" for r in runs):
        raise ConfigError("--gpus: the runs train on a GPU (run.device) but their jobs would see "
                          "none; give --gpus N")
    pool = _executor(executor, where.logs)
    pool.update_parameters(name=f"sweep:{where.root.name}",
                           slurm_array_parallelism=parallel or len(runs), **parameters)
    previous = {r.name: r.record for r in open_sweep(where.root).runs} if where.index.exists() \
        else {}
    records = {}
    for run in runs:
        done = progress(where.run(run.name), run.config, extract, seeds).done
        records[run.name] = {**previous.get(run.name, {}), "name": run.name,
                             "overrides": run.overrides, "folder": f"{RUNS}/{run.name}",
                             "status": "done" if done else "todo"}
    index = {"config": config, "sets": list(sets), "grid": grid, "extract": extract,
             "seeds": seeds, "runs": list(records.values())}
    where.root.mkdir(parents=True, exist_ok=True)
    write_json(where.index, index, indent=1)
    todo = [run for run in runs if records[run.name]["status"] != "done"]
    if todo:
        jobs = [RunJob(where.run(run.name), run.config, extract, seeds) for run in todo]
        _drive(pool, executor, jobs, parallel or len(todo), where, index, wait, show_progress)
    failed = [r for r in index["runs"] if r["status"] == "failed"]
    if failed:
        raise TrainingError(f"{where.root}: {len(failed)} of {len(runs)} runs failed, first "
                            f"{failed[0]['name']}: {failed[0]['error']}; see "
                            f"`sparsecircuits sweep-status {out}`, and run the sweep again to "
                            f"resume them")
    return open_sweep(where.root)


def _executor(executor: str, logs: Path) -> Any:
    """submitit's executor of that name, writing its files into ``logs``."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"--executor {executor}: needs submitit (pip install "
                          "'sparsecircuits[sweep]')") from None
    if executor == "slurm" and not shutil.which("srun"):
        raise ConfigError("--executor slurm: no srun on this machine; submit from a machine of "
                          "the Slurm cluster (or use --executor local)")
    return submitit.AutoExecutor(folder=logs, cluster=executor)


def _drive(pool: Any, executor: str, jobs: list[RunJob], parallel: int, where: SweepDir,
           index: dict[str, Any], wait: bool, show_progress: bool | None) -> None:
    """Submit ``jobs`` (all at once on Slurm, ``parallel`` at a time here) and record each in
    the index as it starts and ends."""
    records = {where.root / r["folder"]: r for r in index["runs"]}
    queue, active = list(jobs), {}

    def submit(batch: list[RunJob]) -> None:
        with pool.batch():
            submitted = [pool.submit(job) for job in batch]
        for job, handle in zip(batch, submitted, strict=True):
            active[job] = handle
            records[job.folder] |= {"status": "submitted", "job": handle.job_id, "error": None,
                                    "log": str(handle.paths.stderr.relative_to(where.root))}
        write_json(where.index, index, indent=1)

    if executor == "slurm":
        submit(queue)
        queue = []
        if not wait:
            return
    bar = progress_bar(total=len(records), initial=len(records) - len(jobs), unit="run",
                       desc="sweep", show=show_progress)
    try:
        while queue or active:
            if len(active) < parallel and queue:
                submit([queue.pop(0) for _ in range(min(parallel - len(active), len(queue)))])
            for job, handle in list(active.items()):
                if handle.done():
                    del active[job]
                    done = progress(job.folder, job.config, job.extract, job.seeds).done
                    records[job.folder] |= (
                        {"status": "done", "error": None} if done else
                        {"status": "failed", "error": _job_error(handle, executor)})
                    write_json(where.index, index, indent=1)
                    bar.update(1)
            time.sleep(0.2 if executor == "local" else 30)
    finally:
        bar.close()
        if executor == "local" and active:  # local jobs end with the sweep command
            for job, handle in active.items():
                handle.cancel()
                records[job.folder] |= {"status": "failed", "error": "interrupted"}
            write_json(where.index, index, indent=1)


def _job_error(handle: Any, executor: str) -> str:
    """One line on why a job ended without finishing its run."""
    if executor == "local" and not handle.paths.result_pickle.exists():
        return "the job ended without a result (killed?)"
    error = handle.exception()
    if error is None:
        return "the job ended but the run is not done"
    trace = re.search(r"\n-{10,}\n(.*?)\n-{10,}\n", str(error), re.S)
    lines = (trace.group(1) if trace else str(error)).strip().splitlines()
    return lines[-1] if trace else " ".join(lines[:2])


# --------------------------------------------------------------------------------------------
# Reading a sweep


@dataclass(frozen=True, eq=False)
class SweepRun:
    """One run of a sweep as its index records it: name, grid overrides, folder and state."""

    root: Path
    record: dict[str, Any]

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def overrides(self) -> dict[str, Any]:
        return self.record["overrides"]

    @property
    def path(self) -> Path:
        return self.root / self.record["folder"]

    @property
    def status(self) -> str:
        return self.record["status"]

    def open(self) -> Run:
        """The run folder (:func:`sparsecircuits.run.open_run`)."""
        return open_run(self.path)

    @cached_property
    def summary(self) -> dict[str, Any]:
        """The run's headline numbers (``RunAnalysis.summary``), read once."""
        return RunAnalysis.load(self.path).summary()

    def value(self, metric: str) -> float:
        """One headline number: a float, or an estimate's centre when it has an interval."""
        value = self.summary.get(metric, np.nan)
        return float(value[0] if isinstance(value, tuple | list) else value)

    def __repr__(self) -> str:
        return f"<SweepRun {self.name}: {self.status}>"


@dataclass(frozen=True)
class Arm:
    """The runs of a sweep that share one value of a grid key and differ only in their seeds
    (``run.seed``, ``schedule.seed``): ``seeds[i]`` are ``runs[i]``'s seed values."""

    value: Any
    runs: tuple[SweepRun, ...]
    seeds: tuple[tuple[Any, ...], ...]

    def values(self, metric: str) -> dict[tuple[Any, ...], float]:
        """``metric`` of every done run, by its seeds."""
        return {seed: run.value(metric) for seed, run in zip(self.seeds, self.runs, strict=True)
                if run.status == "done"}

    def interval(self, metric: str) -> tuple[float, float, float]:
        """``(mean, low, high)`` of ``metric`` over the arm's seeds (``seed_interval``)."""
        return seed_interval(list(self.values(metric).values()))


@dataclass(frozen=True, eq=False)
class Sweep:
    """A sweep folder and its index (module doc): ``index`` is ``sweep.json`` as read."""

    path: Path
    index: dict[str, Any]

    @property
    def config(self) -> str:
        """The base config: a preset or a file, as given to `sparsecircuits sweep`."""
        return self.index["config"]

    @property
    def sets(self) -> list[str]:
        """The ``--set`` overrides of every run."""
        return self.index["sets"]

    @property
    def grid(self) -> dict[str, list[Any]]:
        return self.index["grid"]

    @property
    def extract(self) -> bool:
        return self.index["extract"]

    @property
    def seeds(self) -> int:
        """Extractions of each circuit (``extract --seeds``)."""
        return self.index["seeds"]

    @cached_property
    def runs(self) -> tuple[SweepRun, ...]:
        """Every run, in grid order."""
        return tuple(SweepRun(self.path, record) for record in self.index["runs"])

    def where(self, overrides: dict[str, Any]) -> Sweep:
        """The sweep cut to the runs with these grid values: ``{"sparsity.matrix_density":
        0.25}``."""
        runs = [r.record for r in self.runs
                if all(r.overrides.get(k) == v for k, v in overrides.items())]
        grid = {k: [overrides[k]] if k in overrides else vs for k, vs in self.grid.items()}
        return Sweep(self.path, {**self.index, "grid": grid, "runs": runs})

    def arms(self, by: str = "schedule.kind") -> dict[Any, Arm]:
        """The runs grouped by their value of grid key ``by`` (a list value by its name's text,
        ``quote+closer``), in grid order; every other grid key but the seeds must have one
        value (cut the sweep with :meth:`where` first)."""
        if by not in self.grid:
            raise ValueError(f"{by}: not a grid key of {self.path} (keys: {', '.join(self.grid)})")
        seed_keys = [k for k in self.grid if k.split(".")[1] == "seed" and k != by]
        for key in [k for k in self.grid if k != by and k not in seed_keys]:
            values = list(dict.fromkeys(_text(r.overrides[key]) for r in self.runs))
            if len(values) > 1:
                raise ValueError(f"{key}: the runs differ in it too ({', '.join(values)}); pick "
                                 f"one with sweep.where({{{key!r}: ...}})")
        arms = {}
        for value in self.grid[by]:
            runs = tuple(r for r in self.runs if r.overrides[by] == value)
            seeds = tuple(tuple(r.overrides[k] for k in seed_keys) for r in runs)
            key = _text(value) if isinstance(value, list | dict) else value
            arms[key] = Arm(value, runs, seeds)
        return arms

    def __repr__(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in Counter(r.status for r in self.runs).items())
        return f"<Sweep {self.path}: {len(self.runs)} runs ({states}), grid {self.grid}>"


def compare_arms(a: Arm, b: Arm, metrics: Sequence[str] | None = None) -> dict[str, Comparison]:
    """Every headline number of arm ``a`` against arm ``b`` over the seeds both have done:
    ``Comparison.a`` and ``.b`` the arms' means, ``.diff`` the mean of the per-seed differences
    a − b (paired by seed: the same seeds start both arms) and ``.low``/``.high`` its Student-t
    interval over seeds (``metrics.seed_interval``; nan with fewer than two seeds)."""
    done_a, done_b = (dict(zip(arm.seeds, arm.runs, strict=True)) for arm in (a, b))
    seeds = [s for s in done_a if s in done_b and done_a[s].status == done_b[s].status == "done"]
    if not seeds:
        raise ValueError(f"arms {a.value} and {b.value} have no seed done in both")
    if metrics is None:
        first_a, first_b = done_a[seeds[0]].summary, done_b[seeds[0]].summary
        metrics = [m for m, v in first_a.items() if m in first_b and _is_number(v)]
    out = {}
    for metric in metrics:
        va = np.array([done_a[s].value(metric) for s in seeds])
        vb = np.array([done_b[s].value(metric) for s in seeds])
        diff, low, high = seed_interval(va - vb)
        out[metric] = Comparison(a=seed_interval(va)[0], b=seed_interval(vb)[0], diff=diff,
                                 low=low, high=high)
    return out


def open_sweep(path: str | Path) -> Sweep:
    """The sweep in folder ``path`` as its index records it."""
    where = SweepDir(Path(path))
    try:
        index = json.loads(where.index.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where.index}: missing; is {path} a sweep folder (the --out of "
                          "`sparsecircuits sweep`)?") from None
    return Sweep(where.root, index)


def refresh_sweep(path: str | Path) -> Sweep:
    """The sweep with every run whose files are complete marked done, its index rewritten: for
    jobs that went on without the command that submitted them (Slurm ``--no-wait``)."""
    sweep = open_sweep(path)
    for run in sweep.runs:
        if run.status != "done" and (p := _progress(sweep, run)) and p.done:
            run.record.update(status="done", error=None)
    write_json(SweepDir(sweep.path).index, sweep.index, indent=1)
    return sweep


def _progress(sweep: Sweep, run: SweepRun) -> Progress | None:
    if not RunDir(run.path).config.exists():
        return None
    return progress(run.path, read_run_config(run.path), sweep.extract, sweep.seeds)


def status_table(sweep: Sweep) -> str:
    """The sweep's runs as a table: state, steps trained and circuit files written (of those
    its checkpoints so far need), and for a failed run its error and log."""
    rows = [("run", "state", "steps", "circuits", "")]
    for run in sweep.runs:
        p = _progress(sweep, run)
        note = (f"{run.record.get('error')}; log: {sweep.path / run.record['log']}"
                if run.status == "failed" and run.record.get("log") else "")
        rows.append((run.name, run.status, f"{p.steps}/{p.total_steps}" if p else "-",
                     f"{p.circuits}/{p.total_circuits}" if p else "-", note))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, [*widths, 0], strict=True))
                     .rstrip() for row in rows)


def _is_number(value: Any) -> bool:
    if isinstance(value, tuple | list):
        return len(value) == 3 and all(isinstance(v, float) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)
