"""The shared layered layout: one fixed position per node id, the same at every checkpoint.

Tokens sit at the bottom, then one band per hook site in forward order, logits on top::

    band  sites (side by side within a band)
    0     tokens | positions
    1     blocks.0.hook_resid_pre
    per block i:
          blocks.i.ln1.hook_normalized
          blocks.i.attn.hook_q | hook_k | hook_v
          blocks.i.hook_attn_out
          blocks.i.ln2.hook_normalized
          blocks.i.mlp.hook_post
          blocks.i.hook_mlp_out
    ...   ln_final.hook_normalized
    top   logits

``x`` runs over ``[0, 1]``: a band's sites share it in proportion to their widths, with a small
gap between them, and channel ``c`` of a site sits at the centre of its slot. Every residual
site (reads and writes) has ``d_model`` channels alone in its band, so channel ``d`` has the
same ``x`` in all of them and residual edges are vertical. ``y`` is the band's index. The
viewer, the figures and :func:`~sparsecircuits.circuits.draw.draw` all place nodes with
:func:`layout`, so nothing moves between checkpoints or between pictures.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from sparsecircuits.circuits.graph import site_widths
from sparsecircuits.config import ModelConfig

GAP = 0.03
"""Fraction of the width left between two sites that share a band."""


@dataclass(frozen=True)
class Band:
    """One row of the layout: its sites, left to right, each with ``(x0, x1)``, and ``y``."""

    y: int
    sites: tuple[str, ...]
    spans: tuple[tuple[float, float], ...]

    @property
    def label(self) -> str:
        """The band's name for an axis: its sites without the shared prefix."""
        if len(self.sites) == 1:
            return self.sites[0]
        prefix = self.sites[0].rpartition(".")[0]
        tails = [site.rpartition(".")[2] if prefix else site for site in self.sites]
        return f"{prefix}.{' | '.join(tails)}" if prefix else " | ".join(tails)


def _rows(cfg: ModelConfig) -> list[list[str]]:
    rows: list[list[str]] = [["tokens", "positions"], ["blocks.0.hook_resid_pre"]]
    for i in range(cfg.n_layers):
        b = f"blocks.{i}"
        rows += [[f"{b}.ln1.hook_normalized"],
                 [f"{b}.attn.hook_q", f"{b}.attn.hook_k", f"{b}.attn.hook_v"],
                 [f"{b}.hook_attn_out"], [f"{b}.ln2.hook_normalized"], [f"{b}.mlp.hook_post"],
                 [f"{b}.hook_mlp_out"]]
    return [*rows, ["ln_final.hook_normalized"], ["logits"]]


def bands(cfg: ModelConfig) -> list[Band]:
    """The bands of a model, bottom (tokens) to top (logits)."""
    widths = site_widths(cfg)
    result = []
    for y, sites in enumerate(_rows(cfg)):
        total = sum(widths[s] for s in sites)
        usable = 1.0 - GAP * (len(sites) - 1)
        spans, x = [], 0.0
        for site in sites:
            width = usable * widths[site] / total
            spans.append((x, x + width))
            x += width + GAP
        result.append(Band(y, tuple(sites), tuple(spans)))
    return result


def model_config(graph: nx.Graph) -> ModelConfig:
    """The model shape a weight graph or circuit records in its graph attributes."""
    fields = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "vocab_size", "n_ctx")
    missing = [f for f in fields if f not in graph.graph]
    if missing:
        raise ValueError(f"graph attributes lack {', '.join(missing)}: pass the model config")
    return ModelConfig(**{f: int(graph.graph[f]) for f in fields})


def layout(model: ModelConfig | nx.Graph) -> dict[str, tuple[float, float]]:
    """``{node id: (x, y)}`` for every node of the model (see module doc). Takes a model
    config, or a weight graph or circuit (which record the model's shape)."""
    cfg = model if isinstance(model, ModelConfig) else model_config(model)
    widths = site_widths(cfg)
    positions: dict[str, tuple[float, float]] = {}
    for band in bands(cfg):
        for site, (x0, x1) in zip(band.sites, band.spans, strict=True):
            n = widths[site]
            step = (x1 - x0) / n
            positions.update((f"{site}:{c}", (x0 + (c + 0.5) * step, float(band.y)))
                             for c in range(n))
    return positions
