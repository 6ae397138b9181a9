"""Figures of time in the weights (:mod:`sparsecircuits.trajectory`): the PCA path coloured by
position in the cycle, the checkpoint x checkpoint similarity heatmaps, the mask
oscillation spectrum and the recency probes (:mod:`sparsecircuits.recency`); and of transfer
between sources (:mod:`sparsecircuits.transfer`): the source x source gradient cosine and
pairwise recovery matrices with their profiles around the cycle.

Each takes the run (a folder or a ``Run``), an optional ``ax`` (``fig`` for the heatmaps) and
optionally the numbers of :func:`sparsecircuits.trajectory.analyze` (computed when not given).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sparsecircuits import trajectory as tj
from sparsecircuits.figures.plots import say
from sparsecircuits.figures.style import (
    LIGHT,
    NEUTRAL,
    ONE_COLUMN,
    TWO_COLUMN,
    save,
    source_color,
    style,
)
from sparsecircuits.run import Run, open_run

FIGURES = ("trajectory_weights", "trajectory_masks", "similarity", "oscillation", "recency",
           "gradient_cosine", "recovery_matrix")
"""The files `analyze` writes (one per figure, PDF and PNG; each when its numbers are there)."""


def _run(run: Any) -> Run:
    return open_run(run) if isinstance(run, str | Path) else run


def _numbers(run: Run, numbers: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if numbers is not None and what in numbers:
        return numbers[what]
    return tj.analyze(run, (what,))[what]


def pca_path(run: Any, kind: str = "weights", ax: Axes | None = None,
             numbers: dict[str, Any] | None = None) -> Axes:
    """The run's path in the plane of the first two principal components of its ``kind``
    (``weights`` or ``masks``): each checkpoint coloured by its position in the cycle, the
    first checkpoint of each cycle ringed and labelled, the warm-up in grey."""
    run = _run(run)
    with style():
        if ax is None:
            _, ax = plt.subplots(figsize=(ONE_COLUMN, ONE_COLUMN * 0.85), layout="constrained")
        data = _numbers(run, numbers, "trajectory")[kind]
        coords = np.asarray(data["coords"])
        if coords.shape[0] < 2 or coords.shape[1] < 2:
            return say(ax, "fewer than two checkpoints or components: no path to draw")
        sched = tj.schedule_of(run)
        cycles, positions, period = sched["cycles"], sched["positions"], max(sched["period"], 1)
        ax.plot(coords[:, 0], coords[:, 1], color=NEUTRAL, lw=0.6, zorder=1)
        cmap = plt.get_cmap("viridis")
        colours = [cmap(p / max(period - 1, 1)) if c >= 0 else NEUTRAL
                   for c, p in zip(cycles, positions, strict=True)]
        ax.scatter(coords[:, 0], coords[:, 1], c=colours, s=14, zorder=2, edgecolors="none")
        for i in range(len(cycles)):
            if cycles[i] >= 0 and (i == 0 or cycles[i] != cycles[i - 1]):
                ax.scatter(coords[i, 0], coords[i, 1], s=40, facecolors="none",
                           edgecolors="black", lw=0.7, zorder=3)
                ax.annotate(f"cycle {cycles[i]}", coords[i, :2], xytext=(3, 3),
                            textcoords="offset points", fontsize=6)
        exp = data["explained"]
        ax.set_xlabel(f"PC1 ({100 * exp[0]:.0f} % of variance)")
        ax.set_ylabel(f"PC2 ({100 * exp[1]:.0f} %)")
        ax.set_title(f"{kind}: path through the checkpoints (closure "
                     f"{data['closure']:.2f})")
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, period - 1))
        bar = ax.figure.colorbar(sm, ax=ax, shrink=0.8)
        bar.set_label("position in the cycle")
    return ax


def similarity_heatmaps(run: Any, fig: Figure | None = None,
                        numbers: dict[str, Any] | None = None) -> Figure:
    """Checkpoint x checkpoint heatmaps: cosine of displacements from the start and from the
    previous checkpoint, Jaccard overlap of the masks and (where circuits are extracted) of the
    task circuits' edges, mean over tasks; each titled with the period
    read off it beside the schedule's; cycle boundaries dashed."""
    run = _run(run)
    with style():
        if fig is None:
            fig = plt.figure(figsize=(TWO_COLUMN, TWO_COLUMN * 0.28), layout="constrained")
        data = _numbers(run, numbers, "similarity")
        names = (("from_start", "cosine of displacement\nfrom start"),
                 ("from_previous", "cosine of step\nfrom previous"),
                 ("jaccard", "Jaccard of alive sets"),
                 ("circuits", "Jaccard of circuits\n(mean over tasks)"))
        axes = fig.subplots(1, 4)
        cycles = tj.schedule_of(run)["cycles"]
        for ax, (key, title) in zip(axes, names, strict=True):
            if key not in data["matrices"]:
                say(ax, "no circuits extracted" if key == "circuits" else f"no {key} matrix")
                continue
            m = np.asarray(data["matrices"][key], dtype=float)
            offset = len(cycles) - len(m)  # displacement matrices start at checkpoint 1
            cosine = key.startswith("from_")
            im = ax.imshow(m, cmap="RdBu_r" if cosine else "cividis", vmin=-1 if cosine else None,
                           vmax=1 if cosine else None, interpolation="nearest")
            for axis in (ax.xaxis, ax.yaxis):  # checkpoints are counted, not measured
                axis.set_major_locator(MaxNLocator(integer=True))
            for i in range(1, len(cycles)):
                if cycles[i] != cycles[i - 1] and i - offset >= 0:
                    for line in (ax.axhline, ax.axvline):
                        line(i - offset - 0.5, color="black", lw=0.5, ls=(0, (3, 2)))
            found = data["periods"].get(key)
            ax.set_title(f"{title}\nperiod {found if found else 'none'} "
                         f"(schedule {data['schedule_period']})", fontsize="small")
            ax.set_xlabel("checkpoint")
            fig.colorbar(im, ax=ax, shrink=0.7)
        axes[0].set_ylabel("checkpoint")
    return fig


def oscillation_spectrum(run: Any, ax: Axes | None = None,
                         numbers: dict[str, Any] | None = None) -> Axes:
    """The mean power spectrum of the alive sequences of the weights that flip, with the
    cycle's frequency marked and the count of weights that oscillate with it beyond the
    shuffled-time control."""
    run = _run(run)
    with style():
        if ax is None:
            _, ax = plt.subplots(figsize=(ONE_COLUMN, ONE_COLUMN * 0.7), layout="constrained")
        data = _numbers(run, numbers, "oscillation")
        freqs = np.asarray(data["spectrum"]["freqs"])
        power = np.asarray(data["spectrum"]["power"])
        if data["flipping"] == 0 or len(freqs) < 2:
            return say(ax, "no weight leaves or enters the kept set: no spectrum")
        ax.plot(freqs[1:], power[1:], marker="o", color="black")
        ax.axvline(1 / data["period"], color=NEUTRAL, ls=(0, (3, 2)), lw=0.7)
        ax.text(1 / data["period"], ax.get_ylim()[1], " cycle", va="top", fontsize=6)
        ax.set_xlabel("frequency (cycles per checkpoint)")
        ax.set_ylabel("mean power / variance")
        ax.set_title(f"{data['oscillating']} of {data['flipping']} flipping weights oscillate "
                     f"with the cycle")
    return ax


def _centroids(ax: Axes, data: dict[str, Any], recency: np.ndarray, sources: list[str],
               kind: str) -> None:
    xs, ys = np.asarray(data["x"], dtype=float), np.asarray(data["y"], dtype=float)
    if not np.isfinite(xs).any():
        say(ax, "no checkpoint with two sources that have a recency: no centroids")
        return
    cmap, top = plt.get_cmap("viridis"), max(float(np.nanmax(recency)), 1.0)
    for k in range(len(xs)):
        keep = np.flatnonzero(np.isfinite(recency[k]) & np.isfinite(xs[k]))
        keep = keep[np.argsort(recency[k, keep], kind="stable")]
        last = k == len(xs) - 1
        if last:
            ax.plot(xs[k, keep], ys[k, keep], color=NEUTRAL, lw=0.8, zorder=1)
        ax.scatter(xs[k, keep], ys[k, keep], c=[cmap(r / top) for r in recency[k, keep]],
                   s=22 if last else 9, edgecolors="black" if last else "none", lw=0.5,
                   zorder=3 if last else 2)
        if last:
            for j in keep:
                ax.annotate(sources[j], (xs[k, j], ys[k, j]), xytext=(3, 2),
                            textcoords="offset points", fontsize=5.5)
    null = data["null"]
    ax.set_title(f"centroids, {kind}: rho(x, recency) {data['rho_mean']:.2f}\n"
                 f"(null {null['mean']:.2f}, p {null['p']:.2f}; -1: in training order)")
    ax.set_xlabel("x: toward the latest source")
    ax.set_ylabel("y: top PC of the rest")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, top))
    ax.figure.colorbar(sm, ax=ax, shrink=0.8).set_label("recency (blocks ago)")


def _probe_points(ax: Axes, rows: list[tuple[str, dict[str, Any]]], metric: str,
                  chance: float, label: str) -> None:
    for i, (_, score) in enumerate(rows):
        null = score["null"][metric]
        lo, hi = null["interval"]
        ax.plot([i, i], [lo, hi], color=LIGHT, lw=5, solid_capstyle="butt", zorder=1)
        ax.plot(i, null["mean"], marker="_", color=NEUTRAL, ms=8, zorder=2)
        ax.plot(i, score[metric], marker="o", color="black", zorder=3)
    ax.axhline(chance, color=NEUTRAL, lw=0.5, ls=(0, (3, 2)))
    ax.set_xticks(range(len(rows)), [name for name, _ in rows], rotation=30, ha="right")
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel(label)


def recency_probes(run: Any, fig: Figure | None = None, numbers: dict[str, Any] | None = None,
                   site: str | None = None) -> Figure:
    """The recency probes at ``site`` (default: the last probed): the centroid projection at
    every pooled checkpoint, raw and with each source's mean removed, coloured by recency
    (the last checkpoint's ringed, named and joined in recency order); and the held-out
    Spearman and early-vs-late AUC of the probe on the
    activations beside its controls (black), each with the shuffled-label null (grey: its 95 %
    interval and mean)."""
    run = _run(run)
    with style():
        if fig is None:
            fig = plt.figure(figsize=(TWO_COLUMN, TWO_COLUMN * 0.62), layout="constrained")
        data = _numbers(run, numbers, "recency")
        if "note" in data:
            say(fig.subplots(), f"recency: {data['note']}")
            return fig
        site = site or data["sites"][-1]
        axes = fig.subplots(2, 2)
        recency = np.array([[np.nan if r is None else r for r in row] for row in
                            data["recency"]], dtype=float)
        for ax, kind in zip(axes[0], ("raw", "centred"), strict=True):
            _centroids(ax, data["centroids"][site][kind], recency, data["sources"], kind)
        probes = data["probes"][site]
        rows = [(name, probes[name]) for name in ("activations", "direction", "norm")]
        rows += [("loss", data["loss_probe"]), ("norm+loss", probes["norm+loss"])]
        _probe_points(axes[1, 0], rows, "spearman", 0.0, "held-out Spearman rho")
        _probe_points(axes[1, 1], rows, "early_late_auc", 0.5, "early vs late AUC")
        fig.suptitle(f"recency at {site}: {len(data['steps'])} checkpoints pooled, "
                     f"{len(data['sources'])} sources, each held out in turn")
    return fig


def _entry(entries: list[dict[str, Any]], step: int | None) -> dict[str, Any]:
    """The entry of ``step`` (default: the newest)."""
    if step is None:
        return entries[-1]
    for entry in entries:
        if entry["step"] == step:
            return entry
    raise ValueError(f"step {step}: not among the computed checkpoints "
                     f"{[e['step'] for e in entries]}")


def _two(value: float | None) -> str:
    """A number to two places, ``n/a`` for nan (or null, read back from JSON)."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"


def _source_matrix(ax: Axes, matrix: np.ndarray, order: list[str], label: str,
                   hide_diagonal: bool = False) -> None:
    """A source x source heatmap in cycle order, values written in the cells, on a diverging
    colour map centred at 0 (symmetric limits over the drawn cells; the diagonal grey when
    hidden)."""
    m = np.array(matrix, dtype=float)
    if hide_diagonal:
        np.fill_diagonal(m, np.nan)
    limit = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
    limit = limit if limit > 0 else 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad=LIGHT)
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=-limit, vmax=limit,
                   interpolation="nearest")
    for (i, j), value in np.ndenumerate(m):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}".replace("-0.00", "0.00"), ha="center", va="center",
                    fontsize=5,
                    color="white" if abs(value) > 0.6 * limit else "black")
    ticks = range(len(order))
    ax.set_xticks(ticks, order, rotation=45, ha="right")
    ax.set_yticks(ticks, order)
    for tick, source in zip(ax.get_yticklabels(), order, strict=True):
        tick.set_color(source_color(source))
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = ax.figure.colorbar(im, ax=ax, shrink=0.8)
    bar.set_label(label)
    bar.outline.set_visible(False)


def gradient_cosine(run: Any, fig: Figure | None = None, numbers: dict[str, Any] | None = None,
                    step: int | None = None, kind: str = "alive") -> Figure:
    """Left: the cosine between every two sources' gradients at a checkpoint (``step``,
    default the newest computed), over the ``kind`` weights (``alive`` or ``all``), sources in
    cycle order, the diagonal (1) grey. Right: the mean cosine at each cycle distance, at every
    computed checkpoint (grey; the chosen one in black) and over the cycles' checkpoints
    (dashed), titled with the chosen checkpoint's correlation with the distance and its
    order-permutation p."""
    run = _run(run)
    with style():
        if fig is None:
            fig = plt.figure(figsize=(TWO_COLUMN, TWO_COLUMN * 0.36), layout="constrained")
        data = _numbers(run, numbers, "gradients")
        left, right = fig.subplots(1, 2, width_ratios=(1.2, 1))
        if not data["checkpoints"] or len(data["order"]) < 2:
            say(left, "fewer than two sources or no checkpoint: no cosine to draw")
            return fig
        entry = _entry(data["checkpoints"], step)
        order, numbers_at = data["order"], entry[kind]
        _source_matrix(left, numbers_at["cosine"], order, "cosine of gradients",
                       hide_diagonal=True)
        left.set_title(f"step {entry['step']} ({kind} weights)")
        distances = np.arange(len(numbers_at["by_distance"]))[1:]
        for other in data["checkpoints"]:
            chosen = other is entry
            right.plot(distances, np.asarray(other[kind]["by_distance"][1:], dtype=float),
                       marker="o" if chosen else None,
                       color="black" if chosen else LIGHT, lw=1.0 if chosen else 0.6,
                       zorder=3 if chosen else 1)
        right.plot(distances, np.asarray(data["summary"][kind]["by_distance"][1:], dtype=float),
                   color=NEUTRAL,
                   ls=(0, (3, 2)), label="mean over the cycles")
        right.axhline(0, color=NEUTRAL, lw=0.5)
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_xlabel("cycle distance (blocks)")
        right.set_ylabel("mean cosine")
        repeat = numbers_at.get("repeat")
        ceiling = (f"\nsame source, other batch: {_two(np.nanmean(np.asarray(repeat, float)))}"
                   if repeat else "")
        right.set_title(f"r = {_two(numbers_at['correlation'])} with distance, order p = "
                        f"{_two(numbers_at['order_p'])}{ceiling}")
        right.legend(loc="best")
    return fig


def recovery_matrix(run: Any, fig: Figure | None = None,
                    numbers: dict[str, Any] | None = None, step: int | None = None) -> Figure:
    """Left: the pairwise recovery matrix at a checkpoint (``step``, default the newest
    computed): the change of each source's loss (column) after training on one (row) alone,
    on a diverging colour map centred at 0 (blue: the loss fell). Right: its mean at each
    offset around the cycle (0: the trained source itself), titled with the correlation with
    the cycle distance off the diagonal and its order-permutation p. Without given numbers
    this trains (one block per source at the newest checkpoint, cached)."""
    run = _run(run)
    with style():
        if fig is None:
            fig = plt.figure(figsize=(TWO_COLUMN, TWO_COLUMN * 0.36), layout="constrained")
        data = _numbers(run, numbers, "recovery")
        left, right = fig.subplots(1, 2, width_ratios=(1.2, 1))
        if not data["checkpoints"]:
            say(left, "no checkpoint computed: no matrix to draw")
            return fig
        entry = _entry(data["checkpoints"], step)
        order = data["order"]
        _source_matrix(left, entry["matrix"], order, "loss change (after - before)")
        left.set_xlabel("evaluated on")
        left.set_ylabel("trained on")
        left.set_title(f"step {entry['step']}, {data['steps']} steps per row")
        offsets = np.arange(len(entry["by_offset"]))
        right.bar(offsets, np.asarray(entry["by_offset"], dtype=float), width=0.6,
                  color=[NEUTRAL] + ["black"] * (len(offsets) - 1))
        right.axhline(0, color=NEUTRAL, lw=0.5)
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_xlabel("blocks from the trained source to the evaluated one")
        right.set_ylabel("mean loss change")
        right.set_title(f"r = {_two(entry['correlation'])} with distance, order p = "
                        f"{_two(entry['order_p'])}\noptimizer state "
                        f"{entry['optimizer'].split(':')[0]}")
    return fig


def figure_list(run: Any, numbers: dict[str, Any]
                ) -> list[tuple[str, Callable[[], Figure], str]]:
    """``(file stem, draw, caption)`` of the figure of each analysis in ``numbers``, in reading
    order (the shape of :func:`sparsecircuits.figures.write.figure_set`)."""
    run = _run(run)
    items: list[tuple[str, Callable[[], Figure], str]] = []
    if "trajectory" in numbers:
        for kind, what in (("weights", "weights"), ("masks", "alive sets (masks)")):
            items.append((f"trajectory_{kind}",
                          lambda kind=kind: pca_path(run, kind, numbers=numbers).figure,
                          f"The path of the {what} through the checkpoints in its first two "
                          "principal components, coloured by position in the cycle, cycle "
                          "boundaries marked; the loop closure in the title (0: a closed "
                          "loop each cycle, about 1: it walks on)."))
    if "similarity" in numbers:
        items.append(("similarity", lambda: similarity_heatmaps(run, numbers=numbers),
                      "Checkpoint x checkpoint cosine of weight displacements from the start "
                      "and of steps, Jaccard of the alive sets and of the task circuits (mean "
                      "over tasks); the period read off each beside the schedule's."))
    if "oscillation" in numbers:
        items.append(("oscillation",
                      lambda: oscillation_spectrum(run, numbers=numbers).figure,
                      "Mean power spectrum of the alive sequences of the weights that flip, "
                      "the cycle's frequency marked; how many oscillate with the cycle against "
                      "a shuffled-time control."))
    if "recency" in numbers:
        items.append(("recency", lambda: recency_probes(run, numbers=numbers),
                      "Recency probes on held-out sources (activations, and the norm, loss and "
                      "shuffled-table controls) and the sources' centroids in training order."))
    if "gradients" in numbers:
        items.append(("gradient_cosine", lambda: gradient_cosine(run, numbers=numbers),
                      "Source x source cosine of the training-loss gradients, sources in cycle "
                      "order, and its mean at each cycle distance."))
    if "recovery" in numbers:
        items.append(("recovery_matrix", lambda: recovery_matrix(run, numbers=numbers),
                      "Pairwise recovery: every source's loss change after M steps on one "
                      "source from a checkpoint, and its mean around the cycle."))
    return items


def write_trajectory_figures(run: Any, numbers: dict[str, Any], out: str | Path,
                             formats: tuple[str, ...] = ("pdf", "png")) -> list[Path]:
    """The figures of the analyses in ``numbers`` into ``out``; returns the files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw, _ in figure_list(run, numbers):
        fig = draw()
        written += [save(fig, out / f"{name}.{fmt}") for fmt in formats]
        plt.close(fig)
    return written
