"""The weight graph: every surviving connection of a SparseGPT as a ``networkx.DiGraph``.

Nodes are channels, named ``"<site>:<index>"``, where the site is a hook name of the model
(``blocks.0.mlp.hook_post:180``) or one of three non-hook sites: ``tokens`` (input token ids),
``positions`` (input positions) and ``logits`` (output token ids). Every channel of every site
is a node, alive or not, so a node id means the same channel in every checkpoint of a run.

Sites, in forward order (``i`` runs over blocks)::

    tokens, positions                  inputs                           layer -1
    blocks.0.hook_resid_pre            the embedding's residual write   layer 0
    blocks.i.ln1.hook_normalized       residual read by attention       layer i
    blocks.i.attn.hook_q / _k / _v     channel c in head c // d_head    layer i
    blocks.i.hook_attn_out             residual write of attention      layer i
    blocks.i.ln2.hook_normalized       residual read by the MLP         layer i
    blocks.i.mlp.hook_post             MLP neurons                      layer i
    blocks.i.hook_mlp_out              residual write of the MLP        layer i
    ln_final.hook_normalized           residual read by the unembedding layer n_layers
    logits                             outputs                          layer n_layers

Node attributes: ``layer``, ``site``, ``index``, ``head`` (``c // d_head`` at q/k/v, else
None) and, where the channel has one, ``bias`` (the bias of the matrix that writes it: q/k/v,
attention output, MLP input (on the neuron), MLP output, unembedding).

Edges: one per nonzero weight, with attributes ``weight``, ``sign`` (+1 or -1), ``param`` (the
parameter it lives in, e.g. ``blocks.0.attn.q.W``) and ``kind``:

====================  ==============================================  =====================
kind                  from -> to                                      param
====================  ==============================================  =====================
``embed``             ``tokens:t`` -> ``blocks.0.hook_resid_pre:d``   ``W_E[t, d]``
``pos_embed``         ``positions:p`` -> ``blocks.0.hook_resid_pre:d``  ``W_pos[p, d]``
``q``, ``k``, ``v``   ``ln1.hook_normalized:d`` -> ``attn.hook_q:c``  ``attn.q.W[c, d]`` ...
``o``                 ``attn.hook_v:c`` -> ``hook_attn_out:d``        ``attn.o.W[d, c]``
``mlp_in``            ``ln2.hook_normalized:d`` -> ``mlp.hook_post:n``  ``mlp.fc_in.W[n, d]``
``mlp_out``           ``mlp.hook_post:n`` -> ``hook_mlp_out:d``       ``mlp.fc_out.W[d, n]``
``unembed``           ``ln_final.hook_normalized:d`` -> ``logits:t``  ``unembed.W[t, d]``
====================  ==============================================  =====================

The ``o`` edge leaves the value channel: the output matrix reads the pattern-weighted values
(``hook_z``), whose channels are the value channels. These weight edges cover exactly the
two-dimensional weight-sparse tensors (``W_E``, ``W_pos`` and every ``.W``), so their number
equals those tensors' nonzero count. Two more kinds carry no weight of a sparse tensor:

- ``residual``: a residual write (``blocks.0.hook_resid_pre``, ``hook_attn_out``,
  ``hook_mlp_out``) to every later residual read of the same channel ``d``; the weight is the
  reader's RMSNorm gain ``w[d]`` (param ``blocks.j.ln1.w`` ...). The division by the RMS, which
  mixes all channels, is not drawn.
- ``qk``: ``attn.hook_q:c`` -> ``attn.hook_k:c``, the query and key channels whose product
  enters head ``c // d_head``'s scores; weight ``1 / sqrt(d_head)``, param ``""``.

So every path from a token to a logit through the model is a path in the graph. Not drawn: the
dense bigram table and the attention sink (both off by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import torch

from sparsecircuits.checkpoint import load_model
from sparsecircuits.config import ModelConfig
from sparsecircuits.model import SparseGPT

RESID_EMBED = "blocks.0.hook_resid_pre"
WEIGHT_KINDS = ("embed", "pos_embed", "q", "k", "v", "o", "mlp_in", "mlp_out", "unembed")


@dataclass(frozen=True)
class WeightSite:
    """A weight-sparse matrix as a bundle of edges from ``source`` channels to ``target``
    channels. ``linear`` matrices are ``[target, source]`` and have a bias ``<param>[:-1]b``;
    embeddings are ``[source, target]``."""

    param: str
    source: str
    target: str
    kind: str
    linear: bool = True

    def index(self, source: int, target: int) -> tuple[int, int]:
        """Position of the weight from channel ``source`` to channel ``target``."""
        return (target, source) if self.linear else (source, target)


def site_widths(cfg: ModelConfig) -> dict[str, int]:
    """Every node site of the graph, in forward order, with its number of channels."""
    d, heads = cfg.d_model, cfg.n_heads * cfg.d_head
    widths = {"tokens": cfg.vocab_size, "positions": cfg.n_ctx, RESID_EMBED: d}
    for i in range(cfg.n_layers):
        b = f"blocks.{i}"
        widths |= {
            f"{b}.ln1.hook_normalized": d,
            f"{b}.attn.hook_q": heads,
            f"{b}.attn.hook_k": heads,
            f"{b}.attn.hook_v": heads,
            f"{b}.hook_attn_out": d,
            f"{b}.ln2.hook_normalized": d,
            f"{b}.mlp.hook_post": cfg.d_mlp,
            f"{b}.hook_mlp_out": d,
        }
    return widths | {"ln_final.hook_normalized": d, "logits": cfg.vocab_size}


def channel_sites(cfg: ModelConfig) -> dict[str, int]:
    """The sites whose channels a circuit is made of (residual reads, q/k/v, MLP neurons,
    residual writes), in forward order, with their widths."""
    skip = ("tokens", "positions", RESID_EMBED, "logits")
    return {site: n for site, n in site_widths(cfg).items() if site not in skip}


def weight_sites(cfg: ModelConfig) -> list[WeightSite]:
    """Every weight-sparse matrix and embedding the graph draws, in forward order."""
    sites = [
        WeightSite("W_E", "tokens", RESID_EMBED, "embed", linear=False),
        WeightSite("W_pos", "positions", RESID_EMBED, "pos_embed", linear=False),
    ]
    for i in range(cfg.n_layers):
        b = f"blocks.{i}"
        read1, read2 = f"{b}.ln1.hook_normalized", f"{b}.ln2.hook_normalized"
        sites += [WeightSite(f"{b}.attn.{x}.W", read1, f"{b}.attn.hook_{x}", x) for x in "qkv"]
        sites += [
            WeightSite(f"{b}.attn.o.W", f"{b}.attn.hook_v", f"{b}.hook_attn_out", "o"),
            WeightSite(f"{b}.mlp.fc_in.W", read2, f"{b}.mlp.hook_post", "mlp_in"),
            WeightSite(f"{b}.mlp.fc_out.W", f"{b}.mlp.hook_post", f"{b}.hook_mlp_out", "mlp_out"),
        ]
    return [*sites, WeightSite("unembed.W", "ln_final.hook_normalized", "logits", "unembed")]


def weight_site(cfg: ModelConfig, source: str, target: str) -> WeightSite:
    """The matrix whose weights run from site ``source`` to site ``target``."""
    for site in weight_sites(cfg):
        if (site.source, site.target) == (source, target):
            return site
    raise ValueError(f"no weight matrix runs from {source} to {target}")


def split_node(node: str) -> tuple[str, int]:
    """``"blocks.0.mlp.hook_post:180"`` -> ``("blocks.0.mlp.hook_post", 180)``."""
    site, _, index = node.rpartition(":")
    return site, int(index)


def site_layer(site: str, cfg: ModelConfig) -> int:
    """The block a site belongs to: -1 for tokens and positions, ``n_layers`` after the
    blocks (``ln_final``, logits)."""
    if site.startswith("blocks."):
        return int(site.split(".")[1])
    return -1 if site in ("tokens", "positions") else cfg.n_layers


def _residual_order(cfg: ModelConfig) -> list[tuple[str, str | None]]:
    """The residual stream's writes and reads in forward order, as ``(site, gain param)``;
    writes have no gain."""
    order: list[tuple[str, str | None]] = [(RESID_EMBED, None)]
    for i in range(cfg.n_layers):
        b = f"blocks.{i}"
        order += [(f"{b}.ln1.hook_normalized", f"{b}.ln1.w"), (f"{b}.hook_attn_out", None),
                  (f"{b}.ln2.hook_normalized", f"{b}.ln2.w"), (f"{b}.hook_mlp_out", None)]
    return [*order, ("ln_final.hook_normalized", "ln_final.w")]


def weight_graph(model_or_checkpoint: SparseGPT | str | Path) -> nx.DiGraph:
    """The weight graph of a model, or of the model in a checkpoint folder (see module doc)."""
    model = (
        model_or_checkpoint if isinstance(model_or_checkpoint, SparseGPT)
        else load_model(model_or_checkpoint)[0]
    )
    cfg = model.cfg
    params = {name: p.detach() for name, p in model.named_parameters()}
    graph = nx.DiGraph(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head,
        d_mlp=cfg.d_mlp, vocab_size=cfg.vocab_size, n_ctx=cfg.n_ctx,
    )
    for site, width in site_widths(cfg).items():
        layer, has_head = site_layer(site, cfg), site.endswith(("hook_q", "hook_k", "hook_v"))
        graph.add_nodes_from(
            (f"{site}:{c}", {"layer": layer, "site": site, "index": c,
                             "head": c // cfg.d_head if has_head else None})
            for c in range(width)
        )
    for ws in weight_sites(cfg):
        matrix = params[ws.param]
        if ws.linear:
            bias = params[ws.param[:-1] + "b"].tolist()
            for c, b in enumerate(bias):
                graph.nodes[f"{ws.target}:{c}"]["bias"] = b
            matrix = matrix.T  # [source, target]
        sources, targets = matrix.nonzero(as_tuple=True)
        values = matrix[sources, targets].tolist()
        graph.add_edges_from(
            (f"{ws.source}:{s}", f"{ws.target}:{t}",
             {"weight": w, "sign": 1 if w > 0 else -1, "param": ws.param, "kind": ws.kind})
            for s, t, w in zip(sources.tolist(), targets.tolist(), values, strict=True)
        )
    _add_residual_edges(graph, cfg, params)
    _add_qk_edges(graph, cfg)
    return graph


def _add_residual_edges(graph: nx.DiGraph, cfg: ModelConfig, params: dict[str, torch.Tensor]
                        ) -> None:
    writes: list[str] = []
    for site, gain_param in _residual_order(cfg):
        if gain_param is None:
            writes.append(site)
            continue
        for d, gain in enumerate(params[gain_param].tolist()):
            if gain != 0:
                graph.add_edges_from(
                    (f"{w}:{d}", f"{site}:{d}",
                     {"weight": gain, "sign": 1 if gain > 0 else -1, "param": gain_param,
                      "kind": "residual"})
                    for w in writes
                )


def _add_qk_edges(graph: nx.DiGraph, cfg: ModelConfig) -> None:
    scale = 1 / math.sqrt(cfg.d_head)
    for i in range(cfg.n_layers):
        graph.add_edges_from(
            (f"blocks.{i}.attn.hook_q:{c}", f"blocks.{i}.attn.hook_k:{c}",
             {"weight": scale, "sign": 1, "param": "", "kind": "qk"})
            for c in range(cfg.n_heads * cfg.d_head)
        )

