"""A task's circuit at one checkpoint, as a value, and its file in a run folder.

A circuit is a set of nodes (``blocks.0.mlp.hook_post:180``) whose mean-ablated complement
still solves its task to ``target_loss`` (:mod:`~sparsecircuits.circuits.prune`). Its graph is
exactly the subgraph of the checkpoint's weight graph on those nodes, so the file stores the
nodes and how they were found, not the edges::

    {"format": "sparsecircuits-circuit", "version": 1,
     "attrs": {"task", "step", "seed", "solved", "target_loss", "loss_full", "loss_circuit",
               "loss_ablated", "loss_random", "n_nodes", "n_edges", "method", "reference",
               "per_position", "n_eval"},
     "nodes": {"<node id>": importance or null, ...}}   sorted by node id

``method`` (``mean`` or ``zero``), ``reference`` (a task name or ``"corpus"``: what the means
are taken over), ``per_position`` and ``n_eval`` (evaluation prompts) are the arguments that
reproduce the stored losses: ``ablate(model, keep=circuit)`` reads them from the circuit, and
``evaluate(model, task)`` defaults to ``n_eval``. An unsolved task's circuit says so: it has no
nodes, ``solved`` False, and ``loss_full`` is what the whole model scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
from torch import Tensor

from sparsecircuits.checkpoint import CheckpointError, atomic_write_text

FORMAT, VERSION = "sparsecircuits-circuit", 1


@dataclass
class Circuit:
    """A task's circuit at one checkpoint (see module doc). ``graph`` is the subgraph of the
    weight graph on its nodes (node attribute ``importance``; the attributes above as graph
    attributes); ``logits`` the trained mask logits when just extracted (a warm start), else
    None."""

    task: str
    graph: nx.DiGraph
    logits: Tensor | None = None

    @property
    def solved(self) -> bool:
        return bool(self.graph.graph.get("solved"))

    @property
    def step(self) -> int | None:
        return self.graph.graph.get("step")

    @property
    def seed(self) -> int:
        return int(self.graph.graph.get("seed", 0))

    @property
    def nodes(self) -> list[str]:
        return sorted(self.graph.nodes)

    @property
    def importance(self) -> dict[str, float | None]:
        """Loss increase when one node alone leaves the circuit (None: not measured)."""
        return dict(self.graph.nodes(data="importance"))

    @property
    def attrs(self) -> dict[str, Any]:
        return self.graph.graph

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __repr__(self) -> str:
        a = self.graph.graph
        where = f"{self.task} at step {a.get('step')} (seed {self.seed})"
        if not self.solved:
            return (f"<unsolved circuit {where}: the whole model's loss "
                    f"{a.get('loss_full', float('nan')):.3f} exceeds the target "
                    f"{a.get('target_loss', float('nan')):.3f}>")
        return (f"<circuit {where}: {len(self)} nodes, {self.graph.number_of_edges()} edges, "
                f"loss {a['loss_circuit']:.3f} (target {a['target_loss']:.3f}, whole model "
                f"{a['loss_full']:.3f}); {a['method']} ablation over {a['reference']!r}>")


def write_circuit(circuit: Circuit, path: Path) -> None:
    """Write ``circuit`` to ``path`` atomically (module doc)."""
    data = {
        "format": FORMAT, "version": VERSION,
        "attrs": {key: value for key, value in circuit.graph.graph.items()
                  if key not in _MODEL_SHAPE},
        "nodes": {node: circuit.graph.nodes[node].get("importance") for node in circuit.nodes},
    }
    atomic_write_text(path, json.dumps(data, sort_keys=True))


_MODEL_SHAPE = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "vocab_size", "n_ctx")


def read_circuit(path: Path, weight_graph: nx.DiGraph) -> Circuit:
    """The circuit stored at ``path``, its graph built from the checkpoint's ``weight_graph``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a sparsecircuits circuit file")
        if data.get("version") != VERSION:
            raise CheckpointError(f"{path}: circuit format version {data.get('version')}, "
                                  f"this sparsecircuits reads version {VERSION}")
        attrs, nodes = dict(data["attrs"]), dict(data["nodes"])
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: not a valid circuit file ({err})") from None
    unknown = [node for node in nodes if node not in weight_graph]
    if unknown:
        raise CheckpointError(f"{path}: node {unknown[0]} is not in the model's weight graph")
    graph = weight_graph.subgraph(nodes).copy()
    graph.graph.update(attrs)
    nx.set_node_attributes(graph, nodes, "importance")
    return Circuit(attrs.get("task", Path(path).name.split(".")[0]), graph)
