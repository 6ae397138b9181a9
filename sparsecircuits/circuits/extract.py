"""Weight graphs and task circuits for every checkpoint of a run, written into the run folder.

Layout, one folder per checkpoint::

    run_dir/circuits/<step:08d>/
        weight_graph.json (and .graphml on request)  the weight graph (graph.py)
        <task>.json, <task>.graphml                  the task's circuit, seed 0
        <task>.seed<k>.json, <task>.seed<k>.graphml  re-extractions with seed k (noise floor)
        <task>[.seed<k>].mask.safetensors            trained mask logits (solved tasks only),
                                                     the warm start of the next checkpoint

JSON files are networkx node-link data (``edges="edges"``); a circuit's graph attributes are
those of :func:`~sparsecircuits.circuits.prune.find_circuits` plus ``step``. GraphML files
omit attributes whose value is None (an unsolved task's losses, a node's ``head``). Every file
is written atomically and a circuit's JSON last, so a killed extraction resumes where it
stopped: whatever has its JSON is done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import networkx as nx
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from sparsecircuits.checkpoint import (
    atomic_write_text,
    list_checkpoints,
    load_model,
    read_run_config,
)
from sparsecircuits.circuits.graph import weight_graph
from sparsecircuits.circuits.graphml import graphml_text
from sparsecircuits.circuits.prune import Circuit, PruneConfig, find_circuits
from sparsecircuits.config import ConfigError
from sparsecircuits.data.tasks import TASKS
from sparsecircuits.progress import progress_bar

WEIGHT_GRAPH = "weight_graph"


def _stem(task: str, seed: int) -> str:
    return task if seed == 0 else f"{task}.seed{seed}"


def _write_graph(graph: nx.DiGraph, folder: Path, stem: str, graphml: bool = True) -> None:
    """``<stem>.graphml`` (if ``graphml``) then ``<stem>.json``, each atomically."""
    if graphml:
        atomic_write_text(folder / f"{stem}.graphml", graphml_text(graph))
    data = nx.node_link_data(graph, edges="edges")
    atomic_write_text(folder / f"{stem}.json", json.dumps(data))


def _read_graph(path: Path) -> nx.DiGraph:
    return nx.node_link_graph(json.loads(path.read_text()), edges="edges")


def _write_circuit(circuit: Circuit, folder: Path, seed: int, step: int) -> None:
    circuit.graph.graph["step"] = step
    stem = _stem(circuit.task, seed)
    if circuit.logits is not None:
        tmp = folder / f".{stem}.mask.safetensors.tmp"
        save_file({"logits": circuit.logits.contiguous()}, str(tmp))
        os.replace(tmp, folder / f"{stem}.mask.safetensors")
    _write_graph(circuit.graph, folder, stem)


def extract_run(
    run_dir: str | Path,
    tasks: Iterable[str] | None = None,
    seeds: int = 1,
    progress: bool | None = None,
    *,
    config: PruneConfig | None = None,
    threads: int | None = None,
    weight_graph_graphml: bool = False,
) -> Path:
    """Extract every checkpoint of a run in step order (see module doc); return the circuits
    folder. ``tasks`` defaults to the tasks the run's schedule trains; ``seeds`` > 1
    re-extracts with seeds 1..seeds-1. A task solved at the previous checkpoint starts from
    that checkpoint's mask logits (of the same seed), any other starts cold: logits older than
    one checkpoint were measured to mislead more than help. ``threads`` (default: the run's
    ``run.threads``, else torch's) is how many tasks are extracted at once, one torch thread
    each (:func:`~sparsecircuits.circuits.prune.find_circuits`). Done work is skipped. The
    whole weight graph is written as GraphML only with ``weight_graph_graphml`` (about 10 MB
    and 0.1 s per tiny checkpoint with :func:`~sparsecircuits.circuits.graphml.graphml_text`;
    the JSON holds the same graph)."""
    if seeds < 1:
        raise ConfigError(f"--seeds: must be at least 1, got {seeds}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: must be at least 1, got {threads}")
    run_dir = Path(run_dir)
    run_config = read_run_config(run_dir)
    threads = threads or run_config.run.threads
    if threads:
        torch.set_num_threads(threads)
    trained = [source for source in run_config.schedule.sources if source in TASKS]
    tasks = list(tasks or trained or TASKS)
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise ConfigError(f"--tasks: unknown task(s) {', '.join(unknown)} "
                         f"(tasks: {', '.join(TASKS)})")
    root = run_dir / "circuits"
    warm: list[dict[str, Tensor]] = [{} for _ in range(seeds)]
    checkpoints = list_checkpoints(run_dir)
    for ckpt in progress_bar(checkpoints, desc="circuits", unit="ckpt", show=progress):
        step = int(ckpt.name)
        folder = root / f"{step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        model = graph = None
        if not (folder / f"{WEIGHT_GRAPH}.json").exists():
            model = load_model(ckpt)[0]
            graph = weight_graph(model)
            graph.graph["step"] = step
            _write_graph(graph, folder, WEIGHT_GRAPH, graphml=weight_graph_graphml)
        for seed in range(seeds):
            todo = [t for t in tasks if not (folder / f"{_stem(t, seed)}.json").exists()]
            if todo:
                if model is None:
                    model = load_model(ckpt)[0]
                    graph = _read_graph(folder / f"{WEIGHT_GRAPH}.json")
                find_circuits(model, todo, graph, seed=seed, warm=warm[seed], config=config,
                              workers=torch.get_num_threads(),
                              on_found=partial(_write_circuit, folder=folder, seed=seed,
                                               step=step))
            masks = {task: folder / f"{_stem(task, seed)}.mask.safetensors" for task in tasks}
            warm[seed] = {task: load_file(str(path))["logits"]
                          for task, path in masks.items() if path.exists()}
    return root


def read_weight_graph(run_dir: str | Path, step: int) -> nx.DiGraph:
    """The weight graph of the checkpoint at ``step``."""
    return _read_graph(Path(run_dir) / "circuits" / f"{step:08d}" / f"{WEIGHT_GRAPH}.json")


def read_circuits(run_dir: str | Path, seed: int = 0) -> dict[int, dict[str, nx.DiGraph]]:
    """Every extracted circuit of a run, ``{step: {task: circuit graph}}``, steps in order;
    ``seed`` > 0 reads the re-extractions ``<task>.seed<k>.json``."""
    out: dict[int, dict[str, nx.DiGraph]] = {}
    root = Path(run_dir) / "circuits"
    folders = sorted(p for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
    for folder in folders:
        found: dict[str, nx.DiGraph] = {}
        for path in sorted(folder.glob("*.json")):
            task, _, suffix = path.stem.partition(".")
            if task != WEIGHT_GRAPH and suffix == ("" if seed == 0 else f"seed{seed}"):
                found[task] = _read_graph(path)
        out[int(folder.name)] = found
    return out
