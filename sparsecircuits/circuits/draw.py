"""Draw a weight graph or a task circuit in the shared layered layout, with matplotlib.

>>> from sparsecircuits.circuits.draw import draw
>>> ax = draw(circuit)                      # a networkx.DiGraph from the extractor

Nodes sit where :func:`sparsecircuits.circuits.layout.layout` puts them (tokens at the bottom,
one band per hook site in forward order, logits on top; a channel at the same x in every
checkpoint), so two drawings of one run line up. Edges are one ``LineCollection``: weight
edges coloured by sign (blue +, vermillion −, the colour-blind-safe Okabe–Ito pair) and as wide
as ``|weight|`` relative to the largest; residual edges (a residual write to a later read of
the same channel, weighted by the reader's norm gain) are thin grey verticals beneath them.
``qk`` edges (query channel to key channel of the same head, a constant) lie inside one band
and are left out. Nodes are one scatter: every node of a circuit, and the nodes of a weight
graph that a weight edge reaches (every channel is a node of a weight graph, linked to its
neighbours by residual and ``qk`` edges); residual edges are drawn between shown nodes.
The y axis names the bands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D

from sparsecircuits.circuits.layout import bands, model_config
from sparsecircuits.circuits.layout import layout as shared_layout

POSITIVE = "#0072B2"
"""Okabe–Ito blue: a positive weight."""
NEGATIVE = "#D55E00"
"""Okabe–Ito vermillion: a negative weight."""
STRUCTURE = "#8C8C8C"
"""Grey: residual edges (norm gains, not weights of a sparse matrix)."""
NODE = "#1A1A1A"
GUIDE = "#E3E3E3"

STRUCTURAL_KINDS = ("residual",)
"""Edge kinds drawn grey and thin: they carry a norm gain, not a learned sparse weight."""


def is_circuit(graph: nx.Graph) -> bool:
    """A task circuit (the extractor records its task) rather than a whole weight graph."""
    return "task" in graph.graph


def draw(
    graph: nx.DiGraph,
    ax: Axes | None = None,
    *,
    layout: Mapping[str, tuple[float, float]] | None = None,
    residual: bool = True,
    max_width: float = 1.6,
    min_width: float = 0.12,
    node_size: float | None = None,
    band_labels: bool = True,
    legend: bool = True,
    title: str | None = None,
) -> Axes:
    """Draw ``graph`` (a weight graph or a circuit, node ids ``site:channel``) on ``ax``.

    ``layout``: ``{node: (x, y)}``, default :func:`~sparsecircuits.circuits.layout.layout` of
    the model shape the graph records. ``residual``: draw residual edges (grey). Widths run
    from ``min_width`` to ``max_width`` points as ``|weight|`` runs up to the 99th percentile of
    the drawn weight edges; ``node_size`` (points²) defaults to a size that keeps 1,000 nodes
    apart on a one-column figure. ``band_labels`` puts the band names on the y axis (it needs
    the model shape in the graph's attributes); ``legend`` explains colours under the axes.
    Returns the Axes.
    """
    if ax is None:
        ax = plt.gca()
    pos = dict(layout) if layout is not None else shared_layout(graph)
    cfg = None
    try:
        cfg = model_config(graph)
    except ValueError:
        if layout is None:
            raise

    weight_segments, weights, structure = [], [], []
    edges = sorted(
        ((str(u), str(v), d) for u, v, d in graph.edges(data=True)),
        key=lambda e: (abs(float(e[2].get("weight", 0.0))), e[0], e[1]),
    )
    linked: set[str] = set()
    for u, v, data in edges:
        if pos[u][1] == pos[v][1]:  # qk: inside one band
            continue
        if data.get("kind") in STRUCTURAL_KINDS:
            structure.append((u, v))
            continue
        weight_segments.append((pos[u], pos[v]))
        weights.append(float(data.get("weight", math.nan)))
        linked.update((u, v))

    # sorted: a graph's node order can follow string hashing (networkx subgraphs iterate a
    # set), and the same graph must give the same file in every process
    if is_circuit(graph):
        shown = sorted(str(n) for n in graph.nodes)
    else:  # every channel is a node of a weight graph: show those a weight reaches
        shown = sorted(str(n) for n in graph.nodes if str(n) in linked)
    visible = set(shown)
    structure_segments = [(pos[u], pos[v]) for u, v in sorted(structure)
                          if residual and u in visible and v in visible]

    if cfg is not None:
        for band in bands(cfg):
            for x0, x1 in band.spans:
                ax.plot([x0, x1], [band.y, band.y], color=GUIDE, lw=0.4, zorder=0,
                        solid_capstyle="butt")
    if structure_segments:
        ax.add_collection(LineCollection(
            structure_segments, colors=STRUCTURE, linewidths=0.25, alpha=0.45, zorder=1))
    if weight_segments:
        w = np.asarray(weights)
        magnitude = np.nan_to_num(np.abs(w))
        reference = float(np.quantile(magnitude, 0.99)) or 1.0
        widths = min_width + (max_width - min_width) * np.clip(magnitude / reference, 0, 1)
        colours = np.where(w >= 0, POSITIVE, NEGATIVE)
        alpha = float(np.clip(400 / len(w), 0.35, 0.85))
        ax.add_collection(LineCollection(
            weight_segments, colors=list(colours), linewidths=widths, alpha=alpha, zorder=2))
    if shown:
        xy = np.array([pos[n] for n in shown])
        size = node_size if node_size is not None else float(np.clip(900 / len(shown), 1.2, 14))
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=NODE, linewidths=0, zorder=3)
    else:
        ax.text(0.5, 0.5, "no edges: nothing survives in this graph", transform=ax.transAxes,
                ha="center", va="center", color=STRUCTURE)

    ys = [y for _, y in pos.values()]
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.set_xticks([])
    ax.spines[["top", "right", "bottom"]].set_visible(False)
    if cfg is not None:  # ticks on every panel (axes may share y), names where asked
        ax.set_yticks([b.y for b in bands(cfg)], [b.label for b in bands(cfg)])
        ax.tick_params(axis="y", length=0, labelleft=band_labels)
    else:
        ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    if title is not None:
        ax.set_title(title)
    if legend:
        handles = legend_handles(residual=residual and bool(structure_segments))
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                  ncol=len(handles), frameon=False, handlelength=1.2, columnspacing=1.0)
    return ax


def legend_handles(residual: bool = True) -> list[Line2D]:
    """The legend entries of :func:`draw` (for one legend over several drawings)."""
    handles = [Line2D([], [], color=POSITIVE, lw=1.2, label="weight > 0"),
               Line2D([], [], color=NEGATIVE, lw=1.2, label="weight < 0")]
    if residual:
        handles.append(Line2D([], [], color=STRUCTURE, lw=0.6, label="residual (norm gain)"))
    return handles
