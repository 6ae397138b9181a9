"""The viewer's bundle: a whole run's circuit timeline as one compact binary.

A browser reads it with typed-array views on one ``ArrayBuffer``: no JSON is parsed for the bulk
data, and nothing of the JSON/GEXF exports reaches the browser. It is a cache of the run,
written into the run folder as ``RunDir.bundle`` and rebuilt
when the run changes (any file of the run but the derived folders: viewer, figures, exports,
analysis).

Format (version :data:`VERSION`, all integers little-endian)::

    offset 0   b"SCVB"                 magic
    offset 4   uint32 version
    offset 8   uint32 header_length    bytes of the UTF-8 JSON header that follows
    offset 12  header                  a small JSON object (names and per-checkpoint scalars)
    data       from offset ``12 + header_length`` rounded up to a multiple of 8: the arrays

The header's ``arrays`` maps each array's name to ``{"dtype", "offset", "shape"}``; ``offset`` is
relative to the data start and a multiple of 8, so every array can be viewed in place
(``new Float32Array(buffer, data + offset, n)``). dtypes: ``u1 u2 u4 f2 f4`` (float16 has no
typed array everywhere: the viewer decodes it through a 65,536-entry table).

With N nodes (every channel of the model, in layout order), E edges (the union over checkpoints
of the weight graph's edges, in order of first appearance) and T checkpoints:

==========================  ========  =========  ==============================================
array                       dtype     shape      what
==========================  ========  =========  ==============================================
``node_site``               u2        N          index into ``header.sites``
``node_channel``            u2        N          channel; the node id is ``site:channel``
``node_x``, ``node_y``      f4        N          the shared layered layout (``circuits.layout``)
``edge_source``             u2 or u4  E          node index of the edge's source (u4 only
                                                 when N > 65,536)
``edge_target``             u2 or u4  E          node index of its target
``edge_kind``               u1        E          index into ``header.kinds``
``edge_param``              u2        E          index into ``header.params``
``edge_present``            u1        T, ⌈E/8⌉   presence bitset per checkpoint: edge e is
                                                 bit ``e % 8`` of byte ``e // 8``
``edge_weight``             f2        P          weights of the present edges: checkpoint 0's
                                                 in edge order, then checkpoint 1's, ...;
                                                 P = total present, ``header.checkpoints
                                                 .edge_counts`` gives each checkpoint's share
``circuit_nodes.<task>``    u1        T, ⌈N/8⌉   the task's circuit nodes, bitset per checkpoint
``circuit_importance.<t>``  f2        Q          importance of the present circuit nodes, in the
                                                 same order as the weights
``circuit_edges.<task>``    u1        T, ⌈E/8⌉   only if the circuit is not the weight subgraph
                                                 on its nodes (``tasks[i].edges == "explicit"``)
``loss``                    f4        R, S       the loss matrix (``header.loss``), nan = none
``trajectory.<kind>``       f4        T, 2       the PCA path of the ``weights`` or ``masks``:
                                                 each checkpoint in the first two components
``similarity.<name>``       f2        n, n       a checkpoint x checkpoint matrix
                                                 (``from_start``, ``from_previous``,
                                                 ``jaccard``) on ``n`` of the checkpoints
``oscillating_edge``        u4        K          edge index of each weight that oscillates with
                                                 the cycle, strongest first (at most
                                                 :data:`MAX_OSCILLATING`)
``oscillating_power``       f4        K          its power at the cycle's frequency
==========================  ========  =========  ==============================================

A circuit's edges are, unless stored explicitly, the weight-graph edges present at the checkpoint
whose two ends are both circuit nodes there (the extractor's circuits are exactly that subgraph).
The header also holds the model's shape, the bands of the layout (``y``, ``label``, ``sites``,
``spans``), per checkpoint ``steps, cycles, blocks, positions, sources, edge_counts,
extracted``, per task ``extracted, solved, loss_full, loss_circuit`` and the run's
``fingerprint`` (what the cache is checked against).

Time in the weights: ``header.time`` carries the numbers of ``sparsecircuits analyze``
(:mod:`sparsecircuits.trajectory`, read from ``analysis/trajectory.json``; computing them here
would multiply the bundle's build time, the mask oscillation's permutations above all), at the
bundle's checkpoints. ``time.missing`` says why there are none (one checkpoint, not analysed,
or analysed before the run gained checkpoints: the file's ``steps`` must be the run's), else
``time.period`` (the schedule's, in checkpoints) and, for each analysis the file holds,
``time.trajectory.<kind>`` (``explained``, ``explained_first2``, ``closure``,
``closure_pc12``), ``time.similarity`` (``schedule_period``; per matrix the bundle checkpoint
of each row, ``checkpoints``, and the ``period`` found in it) and ``time.oscillation`` (the
counts of the analysis, and how many of its oscillating weights are ``carried`` as edges and
how many lie ``outside_graph``: biases, which the weight graph does not draw).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparsecircuits import rundir
from sparsecircuits import trajectory as tj
from sparsecircuits.checkpoint import CheckpointError
from sparsecircuits.circuits.graph import site_widths, weight_sites
from sparsecircuits.circuits.layout import bands, layout
from sparsecircuits.config import ModelConfig
from sparsecircuits.run import Run, open_run

MAGIC = b"SCVB"
VERSION = 2
MAX_OSCILLATING = 2000
"""The most oscillating weights a bundle carries (the strongest)."""
_DTYPES = {"u1": np.uint8, "u2": np.uint16, "u4": np.uint32, "f2": np.float16, "f4": np.float32}
_MODEL_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "vocab_size", "n_ctx")


@dataclass(frozen=True)
class Bundle:
    """A decoded bundle: the JSON header and every array as numpy (see module doc)."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def node_ids(self) -> list[str]:
        sites = self.header["sites"]
        return [f"{sites[s]}:{c}" for s, c in
                zip(self.arrays["node_site"].tolist(), self.arrays["node_channel"].tolist(),
                    strict=True)]

    @property
    def edge_keys(self) -> list[tuple[str, str, str]]:
        ids, params = self.node_ids, self.header["params"]
        return [(ids[s], ids[t], params[p]) for s, t, p in zip(
            self.arrays["edge_source"].tolist(), self.arrays["edge_target"].tolist(),
            self.arrays["edge_param"].tolist(), strict=True)]

    def edge_presence(self) -> np.ndarray:
        """``[E, T]`` bool."""
        return _unpack(self.arrays["edge_present"], self.header["counts"]["edges"]).T

    def edge_weights(self) -> np.ndarray:
        """``[E, T]`` float32, nan where absent."""
        present = self.edge_presence()
        out = np.full(present.shape, np.nan, dtype=np.float32)
        out.T[present.T] = self.arrays["edge_weight"].astype(np.float32)
        return out

    def circuit_nodes(self, task: str) -> np.ndarray:
        """``[N, T]`` bool."""
        return _unpack(self.arrays[f"circuit_nodes.{task}"], self.header["counts"]["nodes"]).T

    def circuit_importance(self, task: str) -> np.ndarray:
        """``[N, T]`` float32, nan where not in the circuit (or not recorded)."""
        present = self.circuit_nodes(task)
        out = np.full(present.shape, np.nan, dtype=np.float32)
        out.T[present.T] = self.arrays[f"circuit_importance.{task}"].astype(np.float32)
        return out

    def circuit_edges(self, task: str) -> np.ndarray:
        """``[E, T]`` bool: stored, or the weight subgraph on the circuit's nodes."""
        name = f"circuit_edges.{task}"
        if name in self.arrays:
            return _unpack(self.arrays[name], self.header["counts"]["edges"]).T
        nodes = self.circuit_nodes(task)
        source, target = self.arrays["edge_source"], self.arrays["edge_target"]
        return self.edge_presence() & nodes[source] & nodes[target]


def _pack(present: np.ndarray) -> np.ndarray:
    """``[n, T]`` bool -> ``[T, ⌈n/8⌉]`` bitsets."""
    return np.packbits(np.ascontiguousarray(present.T), axis=1, bitorder="little")


def _unpack(bits: np.ndarray, n: int) -> np.ndarray:
    """``[T, ⌈n/8⌉]`` -> ``[T, n]`` bool."""
    return np.unpackbits(bits, axis=1, count=n, bitorder="little").astype(bool)


def _float(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def as_run(run: Any) -> Any:
    """A ``Run`` (or any object with its ``path``, ``config``, ``timeline()`` and
    ``loss_matrix()``) as it is; a path opened with :func:`~sparsecircuits.open_run`."""
    return open_run(run) if isinstance(run, str | Path) else run


def files_of(run: Any) -> rundir.RunDir:
    """The run folder's paths (where the bundle and the page go)."""
    return run.dir if isinstance(run, Run) else rundir.RunDir(run.path)


def fingerprint(run: Any) -> str:
    """A digest of every file in the run folder (name, size, mtime) but the viewer's own."""
    root = Path(as_run(run).path)
    digest = hashlib.sha256(f"bundle v{VERSION}".encode())
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in rundir.DERIVED]
            files = [f for f in files if f not in rundir.DERIVED]
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".tmp"):
                continue
            stat = (Path(folder) / name).stat()
            digest.update(f"{rel / name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    analyses = rundir.RunDir(root).trajectory  # derived, but the bundle carries it
    if analyses.exists():
        stat = analyses.stat()
        digest.update(f"{analyses.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def encode(run: Any) -> bytes:
    """The bundle of a run (see module doc), built from its timeline and loss matrix."""
    run = as_run(run)
    timeline = run.timeline()
    cfg = run.config.model if hasattr(run.config, "model") else run.config
    positions = layout(cfg)
    node_ids = list(positions)
    node_index = {node: i for i, node in enumerate(node_ids)}
    sites = list(dict.fromkeys(node.rpartition(":")[0] for node in node_ids))
    site_index = {site: i for i, site in enumerate(sites)}
    arrays: dict[str, np.ndarray] = {}

    split = [node.rpartition(":") for node in node_ids]
    arrays["node_site"] = np.array([site_index[s] for s, _, _ in split], dtype=np.uint16)
    arrays["node_channel"] = np.array([int(c) for _, _, c in split], dtype=np.uint16)
    xy = np.array([positions[node] for node in node_ids], dtype=np.float32).reshape(-1, 2)
    arrays["node_x"], arrays["node_y"] = xy[:, 0].copy(), xy[:, 1].copy()

    edges = timeline.weight_graph.edges
    unknown = {n for key in edges.keys for n in key[:2] if n not in node_index}
    if unknown:
        raise ValueError(f"weight graph nodes outside the model's layout: {sorted(unknown)[:5]}")
    kinds = list(dict.fromkeys(str(a.get("kind", "")) for a in edges.attrs))
    params = list(dict.fromkeys(str(key[2]) for key in edges.keys))
    kind_index = {k: i for i, k in enumerate(kinds)}
    param_index = {p: i for i, p in enumerate(params)}
    index_type = np.uint16 if len(node_ids) <= 65536 else np.uint32
    arrays["edge_source"] = np.array([node_index[k[0]] for k in edges.keys], dtype=index_type)
    arrays["edge_target"] = np.array([node_index[k[1]] for k in edges.keys], dtype=index_type)
    arrays["edge_kind"] = np.array([kind_index[str(a.get("kind", ""))] for a in edges.attrs],
                                   dtype=np.uint8)
    arrays["edge_param"] = np.array([param_index[str(k[2])] for k in edges.keys],
                                    dtype=np.uint16)
    present = edges.present.astype(bool)
    arrays["edge_present"] = _pack(present)
    arrays["edge_weight"] = edges.value.T[present.T].astype(np.float16)

    edge_index = {key: i for i, key in enumerate(edges.keys)}
    tasks = []
    for task, graph in timeline.circuits.items():
        nodes = np.zeros((len(node_ids), len(timeline.steps)), dtype=bool)
        importance = np.full(nodes.shape, np.nan)
        for key, row, value in zip(graph.nodes.keys, graph.nodes.present, graph.nodes.value,
                                   strict=True):
            nodes[node_index[key]] = row
            importance[node_index[key]] = value
        arrays[f"circuit_nodes.{task}"] = _pack(nodes)
        arrays[f"circuit_importance.{task}"] = importance.T[nodes.T].astype(np.float16)
        stored = np.zeros(present.shape, dtype=bool)
        for key, row in zip(graph.edges.keys, graph.edges.present, strict=True):
            if key not in edge_index:
                raise ValueError(f"{task}: circuit edge {key} is not in the weight graph")
            stored[edge_index[key]] = row
        source, target = arrays["edge_source"], arrays["edge_target"]
        induced = present & nodes[source] & nodes[target]
        explicit = not np.array_equal(induced, stored)
        if explicit:
            arrays[f"circuit_edges.{task}"] = _pack(stored)
        attrs = graph.attrs
        tasks.append({
            "name": task,
            "edges": "explicit" if explicit else "induced",
            "extracted": [bool(e) for e in graph.extracted],
            "solved": [bool(a.get("solved", False)) for a in attrs],
            "loss_full": [_float(a.get("loss_full")) for a in attrs],
            "loss_circuit": [_float(a.get("loss_circuit")) for a in attrs],
            "target_loss": [_float(a.get("target_loss")) for a in attrs],
        })

    loss_header = None
    try:
        matrix = run.loss_matrix()
    except CheckpointError:  # no evaluation yet
        matrix = None
    if matrix is not None:
        arrays["loss"] = np.asarray(matrix.loss, dtype=np.float32)
        loss_header = {
            "steps": matrix.steps.tolist(), "cycles": matrix.cycles.tolist(),
            "blocks": matrix.blocks.tolist(), "positions": matrix.positions.tolist(),
            "trained": list(matrix.trained), "sources": list(matrix.sources),
        }

    time, time_arrays = _time_analyses(run, timeline.steps.tolist(), edge_index, cfg)
    arrays |= time_arrays
    header = {
        "format": "sparsecircuits viewer bundle",
        "version": VERSION,
        "run": Path(run.path).name,
        "fingerprint": fingerprint(run),
        "model": {f: int(getattr(cfg, f)) for f in _MODEL_FIELDS},
        "sites": sites,
        "bands": [{"y": b.y, "label": b.label, "sites": list(b.sites),
                   "spans": [list(s) for s in b.spans]} for b in bands(cfg)],
        "kinds": kinds,
        "params": params,
        "counts": {"nodes": len(node_ids), "edges": len(edges.keys),
                   "checkpoints": len(timeline.steps)},
        "checkpoints": {
            "steps": timeline.steps.tolist(), "cycles": timeline.cycles.tolist(),
            "blocks": timeline.blocks.tolist(), "positions": timeline.positions.tolist(),
            "sources": list(timeline.sources),
            "edge_counts": present.sum(axis=0).tolist(),
            "extracted": [bool(e) for e in timeline.weight_graph.extracted],
        },
        "tasks": tasks,
        "loss": loss_header,
        "time": time,
    }
    return _serialise(header, arrays)


def _time_analyses(run: Any, steps: list[int], edge_index: dict[tuple[str, str, str], int],
                  cfg: ModelConfig) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``header.time`` and its arrays (see module doc): the numbers of ``analysis/
    trajectory.json`` at the checkpoints ``steps``, the oscillating weights as indices into
    ``edge_index``; or only ``missing``, saying why there are none."""
    files = files_of(run)
    path = files.trajectory
    where = f"{rundir.ANALYSIS}/{rundir.TRAJECTORY_FILE}"
    command = f"sparsecircuits analyze {Path(run.path).name}"
    if len(steps) < 2:
        return {"missing": "one checkpoint: no path through time"}, {}
    if not path.exists():
        return {"missing": f"the run has no {where}: run `{command}`"}, {}
    try:
        numbers = json.loads(path.read_text(encoding="utf-8"))
        analysed = [int(s) for s in numbers["steps"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return {"missing": f"{where} cannot be read ({err}): rerun `{command}`"}, {}
    if analysed != files.checkpoint_steps() or not set(steps) <= set(analysed):
        return {"missing": f"{where} is stale: it analysed {len(analysed)} checkpoints, the run "
                           f"has {len(files.checkpoint_steps())}: rerun `{command}`"}, {}
    row = {step: i for i, step in enumerate(analysed)}
    rows = np.array([row[step] for step in steps])
    header: dict[str, Any] = {"missing": None, "period": tj.schedule_of(run)["period"]}
    arrays: dict[str, np.ndarray] = {}

    if "trajectory" in numbers:
        header["trajectory"] = {}
        for kind in ("weights", "masks"):
            data = numbers["trajectory"][kind]
            coords = np.zeros((len(analysed), 2), dtype=np.float32)
            found = np.asarray(data["coords"], dtype=np.float32)[:, :2]
            coords[:, :found.shape[1]] = found
            arrays[f"trajectory.{kind}"] = coords[rows]
            header["trajectory"][kind] = {key: data[key] for key in (
                "explained", "explained_first2", "closure", "closure_pc12")}

    if "similarity" in numbers:
        data = numbers["similarity"]
        matrices = {}
        for name, values in data["matrices"].items():
            m = np.asarray(values, dtype=np.float32)
            first = len(analysed) - len(m)  # displacement matrices start at checkpoint 1
            keep = [t for t, r in enumerate(rows) if r >= first]
            picked = rows[keep] - first
            arrays[f"similarity.{name}"] = m[np.ix_(picked, picked)].astype(np.float16)
            matrices[name] = {"checkpoints": keep, "period": data["periods"].get(name)}
        header["similarity"] = {"schedule_period": data["schedule_period"],
                                "matrices": matrices}

    if "oscillation" in numbers:
        data = numbers["oscillation"]
        listed = data.get("oscillating_weights")  # absent in files of an older `analyze`
        edges, power, outside = [], [], 0
        for key, (_, _, p) in zip(_weight_edges(cfg, listed or []), listed or [], strict=True):
            e = edge_index.get(key) if key else None
            if e is None:
                outside += 1
            elif len(edges) < MAX_OSCILLATING:
                edges.append(e)
                power.append(p)
        arrays["oscillating_edge"] = np.array(edges, dtype=np.uint32)
        arrays["oscillating_power"] = np.array(power, dtype=np.float32)
        header["oscillation"] = {key: data[key] for key in (
            "period", "checkpoints", "weights", "flipping", "oscillating", "expected_false",
            "alpha", "permutations")} | {"listed": listed is not None, "carried": len(edges),
                                         "outside_graph": outside}
    return header, arrays


def _weight_edges(cfg: ModelConfig, weights: list[list[Any]]
                  ) -> list[tuple[str, str, str] | None]:
    """The weight graph's edge key of each ``[tensor, flat index, ...]`` (an entry of a
    flattened parameter); None for a tensor the graph does not draw (a bias)."""
    widths = site_widths(cfg)
    sites = {site.param: site for site in weight_sites(cfg)}
    keys: list[tuple[str, str, str] | None] = []
    for tensor, index, *_ in weights:
        site = sites.get(tensor)
        if site is None:
            keys.append(None)
            continue
        cols = widths[site.source] if site.linear else widths[site.target]
        source, target = site.index(*divmod(int(index), cols))  # the map is its own inverse
        keys.append((f"{site.source}:{source}", f"{site.target}:{target}", site.param))
    return keys


def _serialise(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    layout_: dict[str, dict[str, Any]] = {}
    chunks, offset = [], 0
    for name, array in arrays.items():
        dtype = next(code for code, t in _DTYPES.items() if array.dtype == t)
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        layout_[name] = {"dtype": dtype, "offset": offset, "shape": list(array.shape)}
        pad = -len(data) % 8
        chunks.append(data + b"\0" * pad)
        offset += len(data) + pad
    text = json.dumps({**header, "arrays": layout_}, separators=(",", ":"), allow_nan=False)
    encoded = text.encode("utf-8")
    encoded += b" " * (-(12 + len(encoded)) % 8)
    return MAGIC + struct.pack("<II", VERSION, len(encoded)) + encoded + b"".join(chunks)


def decode(data: bytes) -> Bundle:
    """Read a bundle (the inverse of :func:`encode`; arrays are views on ``data``)."""
    if data[:4] != MAGIC:
        raise ValueError("not a sparsecircuits viewer bundle (bad magic)")
    version, length = struct.unpack_from("<II", data, 4)
    if version != VERSION:
        raise ValueError(f"bundle version {version}; this viewer reads version {VERSION}")
    header = json.loads(data[12:12 + length].decode("utf-8"))
    start = 12 + length
    arrays = {}
    for name, spec in header["arrays"].items():
        dtype = np.dtype(_DTYPES[spec["dtype"]]).newbyteorder("<")
        count = int(np.prod(spec["shape"], dtype=np.int64))
        arrays[name] = np.frombuffer(data, dtype=dtype, count=count,
                                     offset=start + spec["offset"]).reshape(spec["shape"])
    return Bundle(header, arrays)


def build_bundle(run: Any, *, force: bool = False) -> bytes:
    """The run's bundle: read from the run folder if it was built from the run as it is now,
    else built and written there (atomically)."""
    run = as_run(run)
    path = files_of(run).bundle
    if not force and path.exists():
        data = path.read_bytes()
        try:
            if decode(data).header.get("fingerprint") == fingerprint(run):
                return data
        except (ValueError, KeyError):
            pass
    data = encode(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data
