"""``sparsecircuits demo``: a cyclic run beside its shuffled control, made into something to show.

1. Train the ``tiny`` preset under its cyclic (round-robin) schedule into ``OUT`` and the same
   config under a shuffled schedule into ``OUT_shuffled``: two processes at one torch thread
   each, side by side on two cores (and bitwise reproducible at one thread).
2. Extract both, the cyclic run with two seeds (a noise floor for its circuit metrics).
3. Build both timelines; write into ``OUT``: ``analysis/summary.json``, the figures (cyclic
   against the control), the offline viewer page and ``REPORT.md`` (the headline numbers with
   their intervals, every figure with what it shows, and what is undefined and why).

Everything resumes: run the command again after a kill and it continues where it stopped.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sparsecircuits.analysis import RunAnalysis, compare
from sparsecircuits.checkpoint import atomic_write_text, write_json
from sparsecircuits.config import load_config
from sparsecircuits.metrics import Comparison
from sparsecircuits.progress import progress_bar
from sparsecircuits.run import Run, open_run
from sparsecircuits.rundir import RunDir
from sparsecircuits.schedules import build_schedule
from sparsecircuits.train import TrainingError

PRESET = "tiny"
CONTROL = ('schedule.kind="shuffled"',)
SEEDS = 2

HEADLINES = {
    "loss.recovery_score": "signed recovery score of the loss (Yang et al.): how far the loss "
                           "falls back before a task returns; 0 flat, < 0 still rising",
    "loss.pre_exposure": "loss just before a task's re-exposure (nats; lower: less forgotten)",
    "loss.final": "loss at the end of training, mean over tasks (nats)",
    "circuit.survival_pre_exposure": "fraction of a task's post-exposure circuit edges still "
                                     "alive in the weights just before the task returns",
    "circuit.pre_exposure_jaccard": "Jaccard of the circuit just before re-exposure with the "
                                    "one after the previous exposure",
    "circuit.recovery_score": "signed recovery score of that circuit Jaccard",
    "circuit.noise_floor": "Jaccard between two extractions (seeds) of the same circuit: "
                           "the noise floor of every circuit Jaccard",
}


class DemoFiles(NamedTuple):
    """What the demo made to open: the report, the viewer page, the figures folder."""

    report: Path
    viewer: Path
    figures: Path


def demo(out: str | Path, overrides: Sequence[str] = (), *, progress: bool | None = None
         ) -> DemoFiles:
    """Run the whole demo (module doc) and return the files to open."""
    cyclic, control = Path(out), Path(f"{out}_shuffled")
    base = [*overrides, "run.threads=1"]
    arms = {cyclic: base, control: [*base, *CONTROL]}
    configs = {path: load_config(PRESET, sets) for path, sets in arms.items()}  # checked first
    start = time.perf_counter()
    total = sum(build_schedule(c.schedule).total_steps for c in configs.values())
    _parallel("training", [
        _command("train", PRESET, *[a for s in sets for a in ("--set", s)], "--out", str(path),
                 "--resume") for path, sets in arms.items()],
        total, lambda: sum(_steps_logged(p) for p in arms), progress)
    tasks = {p: len(open_run(p).tasks) for p in arms}
    seeds = {cyclic: SEEDS, control: 1}
    done_total = sum(tasks[p] * seeds[p] * len(RunDir(p).checkpoint_steps()) for p in arms)
    _parallel("circuits", [
        _command("extract", str(path), "--seeds", str(seeds[path]), "--threads", "1")
        for path in arms], done_total, lambda: sum(_circuits_done(p) for p in arms), progress)
    print("timelines, figures, viewer page and report ...", flush=True)
    run, other = open_run(cyclic), open_run(control)
    analysis, control_analysis = run.analysis(), other.analysis()
    for r, a in ((run, analysis), (other, control_analysis)):
        r.dir.summary.parent.mkdir(exist_ok=True)
        write_json(r.dir.summary, a.summary(), indent=1)
    figures = _figures(run, other)
    page = _viewer_page(run)
    atomic_write_text(run.dir.report, report_text(run, analysis, control_analysis, figures,
                                                  page, time.perf_counter() - start))
    return DemoFiles(run.dir.report, page, run.dir.figures)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sparsecircuits.cli", *args]


def _parallel(what: str, commands: list[list[str]], total: int, done: Any,
              progress: bool | None) -> None:
    """Run ``commands`` side by side; a bar follows ``done()`` up to ``total``; a failure
    stops the others and is raised with the failing command's own message."""
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in commands]
    bar = progress_bar(total=total, desc=what, unit="step" if what == "training" else "circuit",
                       show=progress)
    try:
        while any(p.poll() is None for p in procs):
            bar.update(min(done(), total) - bar.n)
            if any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.5)
        bar.update(min(done(), total) - bar.n)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        bar.close()
    for command, p in zip(commands, procs, strict=True):
        p.wait()
        if p.returncode:
            message = (p.stderr.read() if p.stderr else "").strip().splitlines()
            last = message[-1].removeprefix("sparsecircuits: error: ") if message else ""
            raise TrainingError(f"demo: `sparsecircuits {' '.join(command[3:])}` failed: {last}")


def _steps_logged(path: Path) -> int:
    metrics = RunDir(path).metrics
    if not metrics.exists():
        return 0
    for line in reversed(metrics.read_text(encoding="utf-8").splitlines()):
        try:
            return int(json.loads(line)["step"]) + 1
        except (ValueError, KeyError):  # a line the trainer is still writing
            continue
    return 0


def _circuits_done(path: Path) -> int:
    run = RunDir(path)
    return sum(len(run.circuit_files(step)) for step in run.checkpoint_steps())


def _figures(run: Run, control: Run) -> list[tuple[str, str]]:
    """Write the figure set as PNG (for the report) and PDF; ``(png path, caption)`` each."""
    from sparsecircuits.figures import run_data, write_figures
    from sparsecircuits.figures.write import figure_set

    write_figures(run, run.dir.figures, control=control, formats=("png", "pdf"))
    folder = run.dir.figures.relative_to(run.path)
    return [(f"{folder}/{stem}.png", caption)
            for stem, _, caption in figure_set(run_data(run), run_data(control))]


def _viewer_page(run: Run) -> Path:
    from sparsecircuits.viewer import export_html

    return export_html(run)


def _value(value: Any) -> str:
    if isinstance(value, tuple):
        estimate, low, high = value
        return f"{estimate:.3f} [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _why_undefined(name: str, summary: dict[str, Any]) -> str:
    """Why a headline number is nan, in words."""
    if name == "circuit.noise_floor":
        return "no seed re-extraction of a solved circuit"
    if name.startswith("circuit."):
        return "no task was solved both after an exposure and again later, so no circuit to follow"
    if name.startswith("loss.recovery"):
        return "no source was trained in two cycles after the first"
    return "not defined on this run"


def report_text(run: Run, analysis: RunAnalysis, control: RunAnalysis,
                figures: list[tuple[str, str]], page: Path, seconds: float) -> str:
    """The demo's REPORT.md (module doc)."""
    a, b = analysis.summary(), control.summary()
    diffs: dict[str, Comparison] = compare(analysis, control)
    s = run.config.schedule
    lines = [
        "# sparsecircuits demo: a cyclic run beside its shuffled control",
        "",
        f"Two runs of the `{PRESET}` preset ({run.config.model.n_layers} layers, d_model "
        f"{run.config.model.d_model}, matrices at density {run.config.sparsity.matrix_density:g}) "
        f"on {len(s.sources)} tasks, {s.cycles} cycles of {s.steps_per_block}-step blocks after "
        f"a {s.warmup_steps}-step mixed warm-up: `{run.path}` visits the tasks in the same order "
        f"every cycle, `{control.run_dir}` in a new random order each cycle. Both trained, "
        f"extracted and summarised by `sparsecircuits demo` in {seconds / 60:.1f} minutes.",
        "",
        f"Open the viewer: [{page.relative_to(run.path)}]({page.relative_to(run.path)}) "
        "(one file, works offline: scrub through the checkpoints, pick a circuit, hover).",
        "",
        "## Headline numbers",
        "",
        "Intervals are 95 % bootstrap intervals over tasks (a single training seed per arm: "
        "they say how the tasks vary, not how another seed would).",
        "",
        "| metric | cyclic | shuffled | cyclic − shuffled [95 %] | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, meaning in HEADLINES.items():
        here, there = a.get(name, math.nan), b.get(name, math.nan)
        diff = diffs.get(name)
        cells = []
        for value, summary in ((here, a), (there, b)):
            number = value[0] if isinstance(value, tuple) else value
            undefined = isinstance(number, float) and math.isnan(number)
            cells.append(f"undefined: {_why_undefined(name, summary)}" if undefined
                         else _value(value))
        d = (f"{diff.diff:.3f} [{diff.low:.3f}, {diff.high:.3f}]"
             if diff is not None and not math.isnan(diff.diff) else "—")
        lines.append(f"| `{name}` | {cells[0]} | {cells[1]} | {d} | {meaning} |")
    lines += ["", "Per task (cyclic run):", "", "| task | solved at | survival before "
              "re-exposure | ballooned circuits |", "| --- | --- | --- | --- |"]
    for task in run.tasks:
        survival = a.get(f"{task}.survival_pre_exposure.edges", math.nan)
        lines.append(
            f"| {task} | {a.get(f'{task}.solved_fraction', math.nan):.0%} of checkpoints | "
            + ("never solved, nothing to follow" if math.isnan(survival) else f"{survival:.2f}")
            + f" | {a.get(f'{task}.ballooned_checkpoints', 0)} |")
    lines += ["", "## Figures", ""]
    for png, caption in figures:
        if (run.path / png).exists():
            lines += [f"![{Path(png).stem}]({png})", "", caption, ""]
    notes = [*a.get("notes", []), *(f"control: {n}" for n in b.get("notes", []))]
    if notes:
        lines += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(lines)
