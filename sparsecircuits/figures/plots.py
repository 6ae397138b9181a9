"""The figures of a run, one function each, in the project's style (:mod:`.style`).

Every function takes the run (a folder, a ``Run``, a ``RunAnalysis`` or the data objects: see
:func:`.data.run_data`) and draws on the ``ax`` (or ``fig``) it is given, else on a new figure
sized for a two-column paper. Single-panel functions return their Axes, multi-panel ones their
Figure. A panel whose data is absent or nan says so in words on the panel.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import StrMethodFormatter

from sparsecircuits import metrics
from sparsecircuits.circuits.draw import draw, legend_handles
from sparsecircuits.circuits.timeline import WEIGHT_GRAPH, CircuitTimeline
from sparsecircuits.figures.data import (
    RunData,
    circuit_graph,
    exposure_ends,
    finite,
    fmt,
    run_data,
    shift_band,
    solved,
)
from sparsecircuits.figures.style import (
    LIGHT,
    NEGATIVE,
    NEUTRAL,
    OKABE_ITO,
    ONE_COLUMN,
    TWO_COLUMN,
    source_color,
    style,
)
from sparsecircuits.metrics import LossMatrix

MISSING_COLOUR = "#595959"
SURVIVAL = OKABE_ITO["blue"]
CHANNEL_AXIS = "x: each site's channels in index order"


# --- helpers -----------------------------------------------------------------------------------


def say(ax: Axes, text: str, *, clear: bool = True) -> Axes:
    """Write why a panel is empty on it (never a blank panel)."""
    if clear:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            color=MISSING_COLOUR, wrap=True, fontsize=7)
    return ax


def _axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _row_spans(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each block-boundary row covers the steps since the previous row: ``(start, end)``."""
    steps = np.asarray(steps, dtype=float)
    starts = np.concatenate([[0.0], steps[:-1]]) if steps.size else steps
    return starts, steps


def _cycle_starts(cycles: np.ndarray) -> list[int]:
    """Indices where a new cycle (≥ 0) begins, after the first index."""
    return [i for i in range(1, len(cycles)) if cycles[i] != cycles[i - 1]]


def _source_handles(sources: Sequence[str], alpha: float = 1.0) -> list[Patch]:
    return [Patch(facecolor=to_rgba(source_color(s), alpha), edgecolor="none", label=s)
            for s in dict.fromkeys(sources)]


def _exposure_shading(ax: Axes, starts: np.ndarray, ends: np.ndarray, trained: Sequence[str],
                      source: str | None, alpha: float = 0.18) -> None:
    """Shade the blocks that trained ``source`` (all blocks, each in its source's colour, when
    ``source`` is None)."""
    for left, right, s in zip(starts, ends, trained, strict=True):
        if source is None or s == source:
            ax.axvspan(left, right, color=source_color(s), alpha=alpha, lw=0, zorder=0)


def _cycle_lines(ax: Axes, xs: Sequence[float]) -> None:
    for x in xs:
        ax.axvline(x, color=NEUTRAL, lw=0.5, ls=(0, (3, 2)), zorder=1)


def _timeline_or_say(data: RunData, ax: Axes) -> CircuitTimeline | None:
    if data.timeline is None:
        say(ax, data.why("timeline"))
    return data.timeline


def _matrix_or_say(data: RunData, ax: Axes) -> LossMatrix | None:
    if data.matrix is None or data.matrix.loss.size == 0:
        say(ax, data.why("behaviour") if data.matrix is None else "the loss matrix is empty")
        return None
    return data.matrix


# --- circuits ----------------------------------------------------------------------------------


def _pick_step(timeline: CircuitTimeline, task: str, step: int | None) -> int | None:
    """Checkpoint index of ``step``, a training step or, negative, an index into the
    checkpoints as in ``Run`` (default: the last where the task's circuit is solved)."""
    if step is not None and step < 0:
        if -step > len(timeline.steps):
            raise ValueError(f"checkpoint index {step}, but the run has {len(timeline.steps)}")
        return len(timeline.steps) + step
    if step is not None:
        where = np.flatnonzero(timeline.steps == step)
        if not where.size:
            raise ValueError(f"no checkpoint at step {step}; checkpoints: "
                             f"{timeline.steps.tolist()}")
        return int(where[0])
    ok = np.flatnonzero(solved(timeline, task))
    return int(ok[-1]) if ok.size else None


def _never_solved(timeline: CircuitTimeline, task: str) -> str:
    """Why a task has no circuit anywhere, with the best the full model did."""
    attrs = [a for a, e in zip(timeline.circuits[task].attrs, timeline.circuits[task].extracted,
                               strict=True) if e]
    losses = [a["loss_full"] for a in attrs if a.get("loss_full") is not None]
    targets = {a.get("target_loss") for a in attrs} - {None}
    best = (f" (the full model's loss is at least {min(losses):.2f} nats; target "
            f"{', '.join(f'{t:.2f}' for t in sorted(targets))})" if losses and targets else "")
    return f"{task}: unsolved at every checkpoint{best}"


def _circuit_title(graph: Any, task: str, step: int) -> str:
    return (f"{task}, step {step}: {graph.number_of_nodes()} nodes, "
            f"{graph.number_of_edges()} edges")


def _circuit_note(graph: Any) -> str:
    a = graph.graph
    return (f"loss: full model {fmt(a.get('loss_full'))}, circuit {fmt(a.get('loss_circuit'))} "
            f"(target {fmt(a.get('target_loss'))}), ablated {fmt(a.get('loss_ablated'))} nats")


def circuit(run: Any, task: str, step: int | None = None, ax: Axes | None = None) -> Axes:
    """One task's circuit at one checkpoint (a training step, or negative: an index such as
    -1 for the newest; default: the last where it is solved), drawn with
    :func:`~sparsecircuits.circuits.draw.draw` in the shared layered layout."""
    data = run_data(run)
    with style():
        ax = _axes(ax, (TWO_COLUMN, 4.6))
        timeline = _timeline_or_say(data, ax)
        if timeline is None:
            return ax
        if task not in timeline.circuits:
            return say(ax, f"no circuit of {task!r} extracted; tasks: {', '.join(timeline.tasks)}")
        t = _pick_step(timeline, task, step)
        if t is None:
            return say(ax, f"{_never_solved(timeline, task)}: no circuit to draw")
        graph = circuit_graph(timeline, task, t)
        step_at = int(timeline.steps[t])
        if graph is None:
            return say(ax, f"{task}: not extracted at step {step_at}")
        if graph.graph.get("solved") is False:
            return say(ax, f"{task}: unsolved at step {step_at} (the full model's loss "
                           f"{fmt(graph.graph.get('loss_full'))} nats misses the target "
                           f"{fmt(graph.graph.get('target_loss'))}), no circuit to draw")
        draw(graph, ax)
        ax.set_title(_circuit_title(graph, task, step_at), loc="left")
        ax.set_xlabel(f"{CHANNEL_AXIS}\n{_circuit_note(graph)}", labelpad=14)
        ax.xaxis.set_label_position("bottom")
    return ax


def circuit_exposures(run: Any, task: str, fig: Figure | None = None) -> Figure:
    """Small multiples: ``task``'s circuit at the end of each of its exposures, side by side in
    the shared layout (a channel at the same place in every panel)."""
    data = run_data(run)
    with style():
        timeline = data.timeline
        ends = exposure_ends(timeline, task) if timeline and task in timeline.circuits else []
        n = max(len(ends), 1)
        if fig is None:
            fig = plt.figure(figsize=(TWO_COLUMN, 4.2), layout="constrained")
        axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
        if timeline is None:
            say(axes[0], data.why("timeline"))
            return fig
        if task not in timeline.circuits:
            say(axes[0], f"no circuit of {task!r} extracted")
            return fig
        if not ends:
            say(axes[0], f"{task} is never trained in a block of the cycles")
            return fig
        drawn = 0
        for ax, t in zip(axes, ends, strict=True):
            graph = circuit_graph(timeline, task, t)
            step = int(timeline.steps[t])
            head = f"cycle {int(timeline.cycles[t])}, step {step}"
            ax.set_title(head)
            if graph is None or graph.graph.get("solved") is False:
                # not say(): clearing ticks would clear the band names of the shared y axis
                ax.axis("off")
                say(ax, "not extracted" if graph is None else
                    "unsolved: the full\nmodel's loss "
                    f"{fmt(graph.graph.get('loss_full'))} nats\nmisses the target "
                    f"{fmt(graph.graph.get('target_loss'))}:\nno circuit", clear=False)
                continue
            draw(graph, ax, band_labels=not drawn, legend=False)
            drawn += 1
            ax.set_title(f"{head}\n{graph.number_of_nodes()} nodes, "
                         f"{graph.number_of_edges()} edges")
        fig.get_layout_engine().set(wspace=0.03)
        if drawn:
            legend = fig.legend(handles=legend_handles(), loc="outside lower center", ncol=3,
                                title=f"{CHANNEL_AXIS}, the same place in every panel")
            legend.get_title().set_color(MISSING_COLOUR)
        fig.suptitle(f"{task}: circuit at the end of each exposure")
    return fig


# --- edge survival -----------------------------------------------------------------------------


def edge_survival(run: Any, graph: str = WEIGHT_GRAPH, ax: Axes | None = None) -> Axes:
    """Raster of edges × checkpoints: black where the edge is present; rows sorted by first
    appearance; columns shaded by the source the checkpoint's block trained (grey: not
    extracted). ``graph``: ``"weight_graph"`` or a task."""
    data = run_data(run)
    with style():
        ax = _axes(ax, (TWO_COLUMN, 3.2))
        timeline = _timeline_or_say(data, ax)
        if timeline is None:
            return ax
        if graph != WEIGHT_GRAPH and graph not in timeline.circuits:
            return say(ax, f"no circuit of {graph!r} extracted")
        g = timeline.graph(graph)
        present = g.edges.present
        n_cp = len(timeline.steps)
        label = "weight graph" if graph == WEIGHT_GRAPH else f"{graph} circuit"
        if graph != WEIGHT_GRAPH and not solved(timeline, graph).any():
            return say(ax, f"{_never_solved(timeline, graph)}: no circuit edges")
        if not present.size or not present.any():
            return say(ax, f"{label}: no edge at any checkpoint")
        first = present.argmax(axis=1)
        last_seen = n_cp - 1 - present[:, ::-1].argmax(axis=1)
        # ties broken by the edge's key: the timeline's order can follow string hashing
        names = np.argsort(np.argsort([str(k) for k in g.edges.keys], kind="stable"))
        order = np.lexsort((names, -last_seen, first))
        fraction, rows = _bin_rows(present[order])
        image = np.zeros((len(fraction), n_cp, 4))
        image[..., :3] = to_rgba("#111111")[:3]
        image[..., 3] = fraction
        unsolved = ~solved(timeline, graph) & g.extracted if graph != WEIGHT_GRAPH \
            else np.zeros(n_cp, dtype=bool)
        for t in range(n_cp):
            if not g.extracted[t] or unsolved[t]:
                ax.axvspan(t - 0.5, t + 0.5, facecolor="white", edgecolor=LIGHT, hatch="////",
                           lw=0, zorder=0)
            else:
                ax.axvspan(t - 0.5, t + 0.5, color=source_color(timeline.sources[t]),
                           alpha=0.28, lw=0, zorder=0)
        ax.imshow(image, aspect="auto", interpolation="nearest", origin="upper",
                  extent=(-0.5, n_cp - 0.5, len(fraction) * rows - 0.5, -0.5), zorder=1)
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        _cycle_lines(ax, [i - 0.5 for i in _cycle_starts(timeline.cycles)])
        ax.set_xlim(-0.5, n_cp - 0.5)
        ticks = _tick_subset(n_cp)
        ax.set_xticks(ticks, [str(int(timeline.steps[t])) for t in ticks])
        ax.set_xlabel("checkpoint (training step)")
        ax.set_ylabel("edge, by first appearance" + (
            f"\n(bins of {rows}: grey = share present)" if rows > 1 else ""))
        alive = present.sum(axis=0)
        ax.set_title(f"{label}: edge survival (present at the last checkpoint: "
                     f"{int(alive[-1]):,} of {len(order):,})", loc="left")
        handles = _source_handles(timeline.sources, alpha=0.4)
        handles.append(Patch(facecolor="#111111", label="present"))
        if unsolved.any() or not g.extracted.all():
            handles.append(Patch(facecolor="white", edgecolor=LIGHT, hatch="////",
                                 label="no circuit: task unsolved\nor not extracted"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  title="block trained")
    return ax


def _bin_rows(present: np.ndarray, most: int = 600) -> tuple[np.ndarray, int]:
    """``present`` with consecutive rows averaged in bins, at most ``most`` bins (a raster of
    10⁴ edges would otherwise be resampled by the renderer): ``(share present, rows per bin)``."""
    rows = max(1, int(np.ceil(len(present) / most)))
    pad = (-len(present)) % rows
    padded = np.concatenate([present, np.full((pad, present.shape[1]), np.nan)]).astype(float)
    return np.nanmean(padded.reshape(-1, rows, present.shape[1]), axis=1), rows


def _tick_subset(n: int, most: int = 12) -> list[int]:
    every = max(1, int(np.ceil(n / most)))
    return list(range(0, n, every))


# --- losses ------------------------------------------------------------------------------------


def _row_order(matrix: LossMatrix) -> list[str]:
    """Trained sources in schedule order, then the others evaluated."""
    trained = [s for s in dict.fromkeys(matrix.trained) if s in matrix.sources]
    return trained + [s for s in matrix.sources if s not in trained]


def loss_matrix(run: Any, ax: Axes | None = None) -> Axes:
    """The loss matrix: loss on every evaluated source (rows) at the end of every block
    (columns), a log colour scale, white lines at cycle boundaries, a dot on the source the
    block trained."""
    data = run_data(run)
    with style():
        ax = _axes(ax, (TWO_COLUMN, 2.6))
        matrix = _matrix_or_say(data, ax)
        if matrix is None:
            return ax
        rows = _row_order(matrix)
        values = np.array([matrix.column(s) for s in rows])
        positive = values[np.isfinite(values) & (values > 0)]
        if not positive.size:
            return say(ax, "every loss in the matrix is nan or zero: nothing to colour")
        norm: Normalize = LogNorm(positive.min(), positive.max()) \
            if positive.max() / positive.min() > 10 else Normalize(positive.min(), positive.max())
        cmap = plt.get_cmap("cividis").with_extremes(bad=LIGHT)
        n = values.shape[1]
        image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap, norm=norm,
                          interpolation="nearest", extent=(-0.5, n - 0.5, len(rows) - 0.5, -0.5))
        for k, source in enumerate(matrix.trained):
            if source in rows:
                ax.plot(k, rows.index(source), "o", ms=3.2, mfc="white", mec="black", mew=0.7)
        for start in _cycle_starts(matrix.cycles):
            ax.axvline(start - 0.5, color="white", lw=1.2)
        ax.set_yticks(range(len(rows)), rows)
        ticks = _tick_subset(n)
        ax.set_xticks(ticks, [str(int(matrix.steps[k])) for k in ticks])
        ax.set_xlabel("end of block (training step)")
        ax.set_ylabel("evaluated on")
        ax.tick_params(axis="both", length=2)
        for spine in ax.spines.values():
            spine.set_visible(False)
        bar = ax.figure.colorbar(image, ax=ax, pad=0.01, fraction=0.04)
        bar.set_label("loss (nats)" + (", log scale" if isinstance(norm, LogNorm) else ""))
        bar.outline.set_visible(False)
        _cycle_labels(ax, matrix.cycles, -0.5, n - 0.5)
        ax.set_title("loss matrix  (○ = source trained in the block)", loc="left", pad=12)
    return ax


def _cycle_labels(ax: Axes, cycles: np.ndarray, left: float, right: float,
                  x: np.ndarray | None = None) -> None:
    """Name the cycles above the axes ("warm-up", "cycle 0", ...), centred on their span."""
    x = np.arange(len(cycles)) if x is None else x
    edges = [0, *_cycle_starts(cycles), len(cycles)]
    for a, b in itertools.pairwise(edges):
        cycle = int(cycles[a])
        lo = left if a == 0 else (x[a - 1] + x[a]) / 2
        hi = right if b == len(cycles) else (x[b - 1] + x[b]) / 2
        text = "warm-up" if cycle < 0 else f"cycle {cycle}"
        ax.text((lo + hi) / 2, 1.0, text, transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=6, color=MISSING_COLOUR)


def loss_curves(run: Any, fig: Figure | None = None,
                sources: Sequence[str] | None = None) -> Figure:
    """Per trained source, its loss at every block boundary, one panel each (shared x): the
    blocks that trained it shaded in its colour, a ring at the loss just before each exposure,
    dashed lines at cycle boundaries."""
    data = run_data(run)
    with style():
        matrix = data.matrix
        chosen = list(sources) if sources is not None else (
            [s for s in dict.fromkeys(matrix.trained) if s in matrix.sources]
            if matrix is not None else [])
        n = max(len(chosen), 1)
        if fig is None:
            fig = plt.figure(figsize=(TWO_COLUMN, 0.75 * n + 0.9), layout="constrained")
        axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
        if matrix is None or not chosen:
            say(axes[0], data.why("behaviour") if matrix is None
                else "no source is trained in a block")
            return fig
        starts, ends = _row_spans(matrix.steps)
        cycle_x = [starts[i] for i in _cycle_starts(matrix.cycles)]
        # from half a block before the first evaluation: a warm-up has one, at its end
        left = max(0.0, float(matrix.steps[0]) - float(np.median(ends - starts)) / 2) \
            if len(ends) > 1 else 0.0
        for ax, source in zip(axes, chosen, strict=True):
            if source not in matrix.sources:
                say(ax, f"{source}: never evaluated")
                continue
            y = matrix.column(source)
            _exposure_shading(ax, starts, ends, matrix.trained, source)
            _cycle_lines(ax, cycle_x)
            if not finite(y):
                say(ax, f"{source}: every evaluation is nan", clear=False)
                continue
            colour = source_color(source)
            ax.plot(matrix.steps, y, color=colour, lw=1.1, marker="o", ms=1.6, zorder=3)
            pre = [k - 1 for k, s in enumerate(matrix.trained) if s == source and k >= 1]
            ax.plot(matrix.steps[pre], y[pre], "o", ms=3.6, mfc="white", mec="black", mew=0.6,
                    zorder=4)
            ax.text(1.005, 0.5, source, transform=ax.transAxes, ha="left", va="center",
                    color=colour if colour != OKABE_ITO["yellow"] else "black", fontsize=7)
            ax.set_xlim(left, float(matrix.steps[-1]))
            ax.margins(y=0.12)
        axes[-1].set_xlabel("training step")
        fig.supylabel("loss (nats)", fontsize=7)
        _cycle_labels(axes[0], matrix.cycles, left, float(matrix.steps[-1]),
                      x=np.asarray(matrix.steps, dtype=float))
        handles = [Patch(facecolor=NEUTRAL, alpha=0.3, label="block trains this source"),
                   Line2D([], [], ls="none", marker="o", mfc="white", mec="black", ms=3.6,
                          label="loss just before an exposure"),
                   Line2D([], [], color=NEUTRAL, lw=0.5, ls=(0, (3, 2)), label="cycle boundary")]
        fig.legend(handles=handles, loc="outside lower center", ncol=3)
    return fig


def recovery(run: Any, control: Any = None, ax: Axes | None = None) -> Axes:
    """The recovery curve c(τ) of Yang et al. (2024): the loss τ blocks after a source's
    exposure minus the loss right after it, averaged over every exposure of every source in
    cycles ≥ 1 (``metrics.offset_averaged_curve``, as ``BehaviourReport`` scores it), with a
    95 % bootstrap band over sources; the control run (shuffled order) beside it. The legend
    gives each run's signed recovery score (``metrics.signed_recovery_score``: from the peak
    offset K//2, marked, to just before re-exposure) with its interval."""
    data = run_data(run)
    other = run_data(control) if control is not None else None
    with style():
        ax = _axes(ax, (ONE_COLUMN, 2.5))
        drawn = 0
        notes = []
        for d, colour, label, dashes in (
            (data, OKABE_ITO["blue"], "cyclic", "-"),
            (other, "#333333", "control", (0, (4, 2))),
        ):
            if d is None:
                continue
            name = f"{label} ({d.name})"
            if d.matrix is None:
                notes.append(f"{name}: {d.why('behaviour')}")
                continue
            first_cycle = d.behaviour.first_cycle if d.behaviour is not None else 1
            tau, mean, low, high, n_sources = shift_band(d.matrix, first_cycle)
            if not tau.size:
                notes.append(f"{name}: no exposure in cycles ≥ {first_cycle}")
                continue
            if not finite(mean):
                notes.append(f"{name}: every loss after an exposure is nan")
                continue
            rs = d.behaviour.recovery if d.behaviour is not None else \
                metrics.signed_recovery_ci(d.matrix, first_cycle)
            ax.fill_between(tau, low, high, color=colour, alpha=0.18, lw=0)
            ax.plot(tau, mean, color=colour, ls=dashes, marker="o", ms=2.5,
                    label=f"{name}: signed RS {fmt(rs[0])} [{fmt(rs[1])}, {fmt(rs[2])}], "
                          f"{n_sources} sources")
            drawn += 1
        if not drawn:
            return say(ax, "\n".join(notes) or "no loss matrix")
        last = max(int(line.get_xdata()[-1]) for line in ax.get_lines())
        ax.set_xticks(range(last + 1), ["0\npost", *map(str, range(1, last)), f"{last}\npre"]
                      if last > 0 else ["0"])
        ax.axhline(0, color=NEUTRAL, lw=0.5)
        if last >= 2:  # the offset the signed score takes its peak value at
            ax.axvline((last + 1) // 2, color=NEUTRAL, lw=0.5, ls=(0, (1, 1.5)))
            ax.text((last + 1) // 2, 1.0, " RS peak offset", transform=ax.get_xaxis_transform(),
                    ha="left", va="top", fontsize=5.5, color=MISSING_COLOUR)
        ax.set_xlabel("blocks since the source's exposure (τ)")
        ax.set_ylabel("loss − post-exposure loss (nats)")
        if other is None:
            notes.append("no control run given: a shuffled control is needed to read "
                         "anticipation (--control)")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.3), fontsize=6,
                  title="\n".join(notes) if notes else None, alignment="left")
        ax.set_title("loss change after an exposure (all exposures)\nband: 95 % bootstrap "
                     "over sources", loc="left")
    return ax


# --- circuit similarity and churn --------------------------------------------------------------


def jaccard(run: Any, fig: Figure | None = None, kind: str = "edges",
            tasks: Sequence[str] | None = None, survival: bool = True) -> Figure:
    """Per task, Jaccard similarity (``kind``: ``edges``, ``nodes`` or ``weighted_edges``) of its
    circuit at every checkpoint with its circuit right after its latest exposure, beside the
    noise floor (mean Jaccard between seed re-extractions at the same checkpoint). Where the
    task is unsolved there is no circuit: no point, a cross on the axis. With ``survival``, the
    share of the post-exposure circuit's weight edges still alive in the weights
    (``CircuitTimeline.survival``), defined whether or not the task is solved; circuits more
    than 3× their task's median size (``CircuitTimeline.ballooned``) are marked."""
    data = run_data(run)
    with style():
        timeline = data.timeline
        chosen = list(tasks) if tasks is not None else (list(timeline.tasks) if timeline else [])
        n = max(len(chosen), 1)
        cols = min(n, 3)
        rows = -(-n // cols)
        if fig is None:
            fig = plt.figure(figsize=(TWO_COLUMN, 1.45 * rows + 0.9), layout="constrained")
        axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax in axes[n:]:
            ax.set_visible(False)
        if timeline is None or not chosen:
            say(axes[0], data.why("timeline") if timeline is None else "no task circuits")
            return fig
        steps = np.asarray(timeline.steps, dtype=float)
        starts, ends = _row_spans(steps)
        cycle_x = [starts[i] for i in _cycle_starts(timeline.cycles)]
        left = max(0.0, steps[0] - float(np.median(ends - starts)) / 2) if len(steps) > 1 else 0
        floors = survived = ballooned = 0
        for ax, task in zip(axes, chosen, strict=False):
            colour = source_color(task)
            ax.set_title(task, loc="left",
                         color=colour if colour != OKABE_ITO["yellow"] else "black")
            if task not in timeline.circuits:
                say(ax, "not extracted", clear=False)
                continue
            _exposure_shading(ax, starts, ends, timeline.sources, task)
            _cycle_lines(ax, cycle_x)
            ok = solved(timeline, task)
            j = np.where(ok, timeline.similarity(task, "post")[kind], np.nan)
            floor = np.where(ok, timeline.circuits[task].noise[kind], np.nan)
            ax.set_ylim(-0.08, 1.05)
            ax.set_xlim(left, steps[-1])
            if finite(floor):
                floors += 1
                ax.plot(steps, floor, color=NEUTRAL, ls=(0, (2, 1.5)), marker="_", ms=4,
                        lw=0.9, zorder=2)
            alive = timeline.survival(task)["edges"] if survival else np.array([np.nan])
            if finite(alive):
                survived += 1
                ax.plot(steps, alive, color=SURVIVAL, lw=0.9, marker="s", ms=1.6, zorder=2)
            if finite(j):
                ax.plot(steps, j, color="black", marker="o", ms=2.2, lw=1.0, zorder=3)
                big = timeline.ballooned(task) & np.isfinite(j)
                if big.any():
                    ballooned += 1
                    ax.plot(steps[big], j[big], "D", mfc="white", mec=NEGATIVE, ms=3.2,
                            mew=0.8, zorder=4)
            unsolved = ~ok & timeline.circuits[task].extracted
            if unsolved.any():
                ax.plot(steps[unsolved], np.full(unsolved.sum(), -0.05), "x", color=NEGATIVE,
                        ms=3, mew=0.7, zorder=4)
            if not finite(j):
                say(ax, "no solved circuit right after\nan exposure: nothing to compare",
                    clear=False)
        label = {"edges": "edges", "nodes": "nodes", "weighted_edges": "|w|-weighted edges"}
        fig.supylabel(f"overlap with the post-exposure circuit\n(Jaccard of "
                      f"{label.get(kind, kind)}; share of edges alive)" if survived else
                      f"Jaccard ({label.get(kind, kind)}) to the\npost-exposure circuit",
                      fontsize=7)
        fig.supxlabel("training step", fontsize=7)
        handles = [Line2D([], [], color="black", marker="o", ms=2.2,
                          label="Jaccard of the current circuit"),
                   Line2D([], [], color=NEUTRAL, ls=(0, (2, 1.5)) if floors else "none",
                          marker="_" if floors else "none",
                          label="noise floor (seed re-extractions)" if floors else
                          "no noise floor (extract --seeds 3)"),
                   Patch(facecolor=NEUTRAL, alpha=0.3, label="block trains the task"),
                   Line2D([], [], ls="none", marker="x", color=NEGATIVE, ms=3,
                          label="task unsolved: no circuit")]
        if survived:
            handles.insert(1, Line2D([], [], color=SURVIVAL, marker="s", ms=1.6,
                                     label="post-exposure circuit's edges alive in the weights"))
        if ballooned:
            handles.append(Line2D([], [], ls="none", marker="D", mfc="white", mec=NEGATIVE,
                                  ms=3.2, label="circuit > 3× its median size"))
        fig.legend(handles=handles, loc="outside upper center", ncol=3)
    return fig


CHURN_GROUPS = (
    ("own", "edges in the circuit of the task the block trains"),
    ("other", "edges in other tasks' circuits"),
    ("rest", "the rest of the weight graph"),
)


def churn(run: Any, fig: Figure | None = None) -> Figure:
    """Births, revivals (up) and deaths (down) of weight-graph edges per block, in three panels:
    the trained task's circuit, other tasks' circuits, the rest; a strip gives the source each
    block trained."""
    data = run_data(run)
    with style():
        if fig is None:
            fig = plt.figure(figsize=(TWO_COLUMN, 3.9), layout="constrained")
        axes = fig.subplots(3, 1, sharex=True)
        timeline = data.timeline
        if timeline is None:
            say(axes[0], data.why("timeline"))
            return fig
        blocks = timeline.churn()
        if not blocks:
            say(axes[0], "fewer than two checkpoints with a weight graph: no churn to count")
            return fig
        x = np.arange(len(blocks))
        colours = {"births": OKABE_ITO["bluish_green"], "revivals": OKABE_ITO["sky_blue"],
                   "deaths": OKABE_ITO["vermillion"]}
        for ax, (group, title) in zip(axes, CHURN_GROUPS, strict=True):
            births, deaths, revivals = (np.array([b.counts[group][i] for b in blocks])
                                        for i in range(3))
            ax.bar(x, births, width=0.8, color=colours["births"], lw=0)
            ax.bar(x, revivals, width=0.8, bottom=births, color=colours["revivals"], lw=0)
            ax.bar(x, -deaths, width=0.8, color=colours["deaths"], lw=0)
            ax.axhline(0, color="black", lw=0.5)
            ax.set_title(title, loc="left", fontsize=7, pad=9 if group == "own" else 4)
            _cycle_lines(ax, [i - 0.5 for i in _cycle_starts(np.array([b.cycle for b in blocks]))])
            top = max(int((births + revivals).max()), int(deaths.max()), 1)
            ax.set_ylim(-top * 1.1, top * 1.1)
            if group == "own" and not any(timeline.tasks):
                say(ax, "no task circuits: every edge counts as rest", clear=False)
        axes[-1].set_xticks(x, [b.source for b in blocks], rotation=90)
        for label, b in zip(axes[-1].get_xticklabels(), blocks, strict=True):
            colour = source_color(b.source)
            label.set_color(colour if colour != OKABE_ITO["yellow"] else "black")
        axes[-1].set_xlim(-0.5, len(blocks) - 0.5)
        axes[-1].set_xlabel(f"block, by the source it trains (blocks end at steps "
                            f"{blocks[0].step}–{blocks[-1].step})")
        _cycle_labels(axes[0], np.array([b.cycle for b in blocks]), -0.5, len(blocks) - 0.5)
        fig.supylabel("edges per block\n(− = deaths)", fontsize=7)
        handles = [Patch(facecolor=c, label=k) for k, c in colours.items()]
        fig.legend(handles=handles, loc="outside right upper", title="edges")
    return fig
