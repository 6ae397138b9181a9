"""The run folder: every path and file name inside a run, in one module.

Nothing else in the package spells a path inside a run: the trainer, the checkpoints, the
extractor, the timeline, the viewer and the figures ask a :class:`RunDir` for it. The tree
(README's "A run folder" is checked against :data:`TREE` by a test)::

    .lock                                held (flock) by the process writing the run: its pid
    config.json                          the resolved config (JSON)
    metrics.jsonl                        one JSON line per logged training step
    evals.jsonl                          one JSON line per block boundary: every task and
                                         source's loss there (the loss matrix)
    checkpoints/<step>/                  one folder per checkpoint (sparsecircuits.checkpoint):
      model.safetensors                  weights, weight-sparse tensors compact
      state.safetensors                  optimizer and masks, for resume (2 newest only)
      meta.json                          step, cycle, block, source, position, churn, checksums
    circuits/<step>/                     per checkpoint (sparsecircuits.circuits.circuit):
      <task>.json                        the task's circuit: its nodes, importances, losses
      <task>.seed<k>.json                re-extraction with seed k (the noise floor)
      <task>[.seed<k>].mask.safetensors  trained mask logits: the next checkpoint's warm start
    analysis/summary.json                the timeline's headline numbers (`timeline`)
    analysis/trajectory.json             weight trajectory, similarity, mask oscillation,
                                         recency probes, gradient cosine, recovery matrices
                                         (`analyze`, sparsecircuits.trajectory)
    analysis/recovery/<step>.m<M>.json   pairwise recovery rows from checkpoint <step>, M
                                         steps each, as they complete (`analyze --what
                                         recovery`, sparsecircuits.transfer; a cache)
    exports/                             GEXF, node-link JSON, GraphML, CSV (`export`, opt-in)
    viewer/bundle.bin, viewer/viewer.html  the viewer's bundle and page (caches, rebuilt on change)
    figures/                             publication figures (`figures`)
    REPORT.md                            the demo's report (`demo`)

``<step>`` is the training step, zero-padded to eight digits (:func:`step_name`); only names
that match :data:`STEP_NAME` exactly are checkpoints. The weight graph of a checkpoint is not
stored: it is a function of the checkpoint's weights (``Run.weight_graph``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LOCK = ".lock"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
EVALS = "evals.jsonl"
CHECKPOINTS = "checkpoints"
CIRCUITS = "circuits"
ANALYSIS = "analysis"
EXPORTS = "exports"
VIEWER = "viewer"
FIGURES = "figures"
MODEL_FILE, STATE_FILE, META_FILE = "model.safetensors", "state.safetensors", "meta.json"
SUMMARY_FILE = "summary.json"
TRAJECTORY_FILE = "trajectory.json"
RECOVERY = "recovery"
REPORT = "REPORT.md"
BUNDLE_FILE, PAGE_FILE = "bundle.bin", "viewer.html"
DERIVED = (ANALYSIS, EXPORTS, VIEWER, FIGURES, REPORT, LOCK)
"""What is derived from the run (or bookkeeping), not part of it: a cache built from a run
leaves these out of its fingerprint."""

STEP_NAME = re.compile(r"\d{8}")
"""A checkpoint or circuit folder's name: the step in eight digits."""
CIRCUIT_FILE = re.compile(r"(?P<task>[a-z0-9_:]+?)(?:\.seed(?P<seed>[1-9]\d*))?\.json")
"""A circuit file's name: ``<task>.json`` (seed 0) or ``<task>.seed<k>.json``."""

TREE = (LOCK, CONFIG, METRICS, EVALS, f"{CHECKPOINTS}/<step>/", MODEL_FILE, STATE_FILE,
        META_FILE, f"{CIRCUITS}/<step>/", "<task>.json", "<task>.seed<k>.json",
        "<task>[.seed<k>].mask.safetensors", f"{ANALYSIS}/{SUMMARY_FILE}",
        f"{ANALYSIS}/{TRAJECTORY_FILE}", f"{ANALYSIS}/{RECOVERY}/<step>.m<M>.json",
        f"{EXPORTS}/",
        f"{VIEWER}/", f"{FIGURES}/", REPORT)
"""Every entry of the tree above, as README's "A run folder" must name it."""


def step_name(step: int) -> str:
    """The folder name of a step: ``649`` -> ``"00000649"``."""
    return f"{step:08d}"


def circuit_stem(task: str, seed: int = 0) -> str:
    """``<task>`` for seed 0, ``<task>.seed<k>`` for a re-extraction."""
    return task if seed == 0 else f"{task}.seed{seed}"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder (see module doc). Nothing here touches the disk except the
    listings (:meth:`checkpoint_steps`, :meth:`circuit_steps`, :meth:`circuit_files`)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def lock(self) -> Path:
        """The file `train` and `extract` lock while they write (``checkpoint.run_lock``)."""
        return self.root / LOCK

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def evals(self) -> Path:
        return self.root / EVALS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def circuits(self) -> Path:
        return self.root / CIRCUITS

    @property
    def summary(self) -> Path:
        return self.root / ANALYSIS / SUMMARY_FILE

    @property
    def trajectory(self) -> Path:
        """The numbers of `analyze` (:mod:`sparsecircuits.trajectory`)."""
        return self.root / ANALYSIS / TRAJECTORY_FILE

    def recovery(self, step: int, steps: int) -> Path:
        """The pairwise recovery rows from checkpoint ``step`` after ``steps`` training steps
        each (:mod:`sparsecircuits.transfer`)."""
        return self.root / ANALYSIS / RECOVERY / f"{step_name(step)}.m{steps}.json"

    @property
    def exports(self) -> Path:
        return self.root / EXPORTS

    @property
    def viewer(self) -> Path:
        return self.root / VIEWER

    @property
    def bundle(self) -> Path:
        return self.viewer / BUNDLE_FILE

    @property
    def page(self) -> Path:
        return self.viewer / PAGE_FILE

    @property
    def figures(self) -> Path:
        return self.root / FIGURES

    @property
    def report(self) -> Path:
        return self.root / REPORT

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / step_name(step)

    def partial_checkpoint(self, step: int) -> Path:
        """Where a checkpoint is written before it is renamed into place."""
        return self.checkpoints / f".partial-{step_name(step)}"

    def circuit_folder(self, step: int) -> Path:
        return self.circuits / step_name(step)

    def circuit_file(self, step: int, task: str, seed: int = 0) -> Path:
        return self.circuit_folder(step) / f"{circuit_stem(task, seed)}.json"

    def mask_file(self, step: int, task: str, seed: int = 0) -> Path:
        return self.circuit_folder(step) / f"{circuit_stem(task, seed)}.mask.safetensors"

    def checkpoint_steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first (partial saves are ignored)."""
        return _steps(self.checkpoints)

    def circuit_steps(self) -> list[int]:
        """Steps that have a circuits folder with at least one circuit file, in order."""
        return [step for step in _steps(self.circuits) if self.circuit_files(step)]

    def circuit_files(self, step: int) -> dict[tuple[str, int], Path]:
        """``{(task, seed): path}`` of the circuit files at ``step``."""
        folder = self.circuit_folder(step)
        found = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            match = CIRCUIT_FILE.fullmatch(path.name)
            if match:
                found[match["task"], int(match["seed"] or 0)] = path
        return found


def _steps(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir()
                  if p.is_dir() and STEP_NAME.fullmatch(p.name))
