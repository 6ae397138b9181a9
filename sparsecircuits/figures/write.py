"""Write a run's whole figure set, and an ``index.md`` with a one-line caption per figure."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.figure import Figure

from sparsecircuits.checkpoint import atomic_write_text
from sparsecircuits.circuits.timeline import WEIGHT_GRAPH
from sparsecircuits.figures import plots
from sparsecircuits.figures.data import RunData, run_data
from sparsecircuits.figures.style import save, style
from sparsecircuits.figures.trajectory_plots import figure_list

FORMATS = ("pdf", "svg", "png")


def _figure_of(made: Artist | Figure) -> Figure:
    return made if isinstance(made, Figure) else made.get_figure(root=True)


def figure_set(data: RunData, control: RunData | None = None
               ) -> list[tuple[str, Callable[[], Any], str]]:
    """``(file stem, draw, caption)`` of every figure of the run, in reading order: the
    circuits' and the losses', then those of its time analyses (``sparsecircuits analyze``)
    where it has them."""
    tasks = list(data.timeline.tasks) if data.timeline is not None else []
    items: list[tuple[str, Callable[[], Any], str]] = [
        ("loss_matrix", lambda: plots.loss_matrix(data),
         "Loss on every evaluated source at the end of every block; rings mark the source the "
         "block trained, white lines the cycle boundaries."),
        ("loss_curves", lambda: plots.loss_curves(data),
         "Per trained source, its loss at every block boundary; shaded: the blocks that train "
         "it; rings: the loss just before each exposure."),
        ("recovery", lambda: plots.recovery(data, control),
         "Loss change after an exposure averaged over every exposure (Yang et al. 2024), "
         "cyclic run" + (" beside the control run" if control is not None
                         else " (no control run given)")
         + ", with a 95 % bootstrap band over sources and the signed recovery score."),
        ("jaccard", lambda: plots.jaccard(data),
         "Per task, Jaccard (edges) of its circuit with the circuit right after its latest "
         "exposure, beside the seed re-extraction noise floor and the share of that circuit's "
         "edges still alive in the weights."),
        ("churn", lambda: plots.churn(data),
         "Births, revivals and deaths of weight-graph edges per block: in the trained task's "
         "circuit, in other tasks' circuits, elsewhere."),
        ("edge_survival_weight_graph", lambda: plots.edge_survival(data, WEIGHT_GRAPH),
         "Every weight-graph edge (rows, by first appearance) at every checkpoint (columns, "
         "shaded by the source trained)."),
    ]
    for task in tasks:
        items += [
            (f"circuit_{task}", lambda task=task: plots.circuit(data, task),
             f"The {task} circuit at the last checkpoint where the task is solved, in the "
             "shared layered layout."),
            (f"circuit_exposures_{task}", lambda task=task: plots.circuit_exposures(data, task),
             f"The {task} circuit at the end of each of its exposures, in the shared layout."),
            (f"edge_survival_{task}", lambda task=task: plots.edge_survival(data, task),
             f"Every edge ever in the {task} circuit (rows, by first appearance) at every "
             "checkpoint (columns, shaded by the source trained)."),
        ]
    if data.time is not None:
        items += figure_list(data.run, data.time)
    return items


def write_figures(
    run: Any,
    out_dir: str | Path,
    control: Any = None,
    formats: Sequence[str] | str = FORMATS,
) -> list[Path]:
    """Write every figure of ``run`` (a folder, a ``Run`` or the data objects; ``control``
    likewise, or None) to ``out_dir`` in each format, and ``index.md``. Returns the paths
    written, ``index.md`` last. The same data gives the same bytes."""
    formats = _formats(formats)
    data = run_data(run)
    other = run_data(control) if control is not None else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    lines = [f"# Figures of {data.name}", ""]
    if other is not None:
        lines += [f"Control run: {other.name}.", ""]
    for reason in data.missing.values():
        lines += [f"Missing: {reason}.", ""]
    for stem, make, caption in figure_set(data, other):
        with style():
            fig = _figure_of(make())
            try:
                paths = [save(fig, out / f"{stem}.{fmt}") for fmt in formats]
            finally:
                plt.close(fig)
        written += paths
        links = " · ".join(f"[{p.suffix[1:]}]({p.name})" for p in paths)
        lines.append(f"- **{stem}** ({links}): {caption}")
    index = out / "index.md"
    atomic_write_text(index, "\n".join(lines) + "\n")
    return [*written, index]


def _formats(formats: Iterable[str] | str) -> tuple[str, ...]:
    chosen = tuple(f.strip().lower().lstrip(".")
                   for f in (formats.split(",") if isinstance(formats, str) else formats))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ValueError(f"formats: {', '.join(unknown) or 'none given'}; choose from "
                         f"{', '.join(FORMATS)}")
    return chosen
