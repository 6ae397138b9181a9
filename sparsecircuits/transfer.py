"""Transfer between sources: do sources close in the cycle point the same way? (Yang et al.,
"Reawakening knowledge", §1.3 of the notes; issue 16.)

Two pictures of one checkpoint, each a K x K matrix over the schedule's sources in their
listed order (the round-robin order; for a shuffled run, the same nominal order: its control):

- :func:`gradients`: the **gradient cosine** of every two sources. Each source's gradient is
  that of its training loss on the batch the run would draw for it at the step after the
  checkpoint (``step_generator``; the same step for every source), on its source rows alone: the
  corpus rows every step adds would put one shared direction into every gradient. Flattened
  over all weights (``all``), over the weights alive at the checkpoint (``alive``: the nonzero
  entries of the weight-sparse tensors and every entry of the dense ones), and per tensor. One
  backward per source and checkpoint.
- :func:`recovery`: the **pairwise recovery matrix** ``M[i, j]``: from the checkpoint, train
  ``M`` steps on source ``i`` alone (the run's own trainer: its optimizer state where the
  checkpoint kept it, else a fresh one, said in the numbers; the learning rate and sparsity
  projection of those steps; each batch as the run draws it, corpus rows included) and record
  the change of every source's loss (``evaluate_all``, after minus before; negative: training
  on ``i`` lowered ``j``'s loss). It trains, so it runs only when asked; each row is written as
  it completes to ``RunDir.recovery(step, M)``, so a killed computation resumes where it
  stopped, and a file computed from another checkpoint or optimizer state is not reused.

:func:`cycle_structure` reads the cycle off either matrix: its mean at each cycle distance
(``by_distance``, the shorter way round the cycle) and each offset (``by_offset``, ``j - i``
mod K: how far ahead in the cycle ``j`` comes after ``i``), their correlation over the pairs
``i != j`` and the fraction of all orders of the sources that correlate at least as strongly
(``order_p``: a permutation test on the sources' order; rotations and reflections of the
cycle give the same distances, so its floor is ``2K / K!``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparsecircuits import checkpoint as ckpt
from sparsecircuits.config import Config, ConfigError
from sparsecircuits.model import SparseGPT
from sparsecircuits.progress import progress_bar
from sparsecircuits.rundir import MODEL_FILE
from sparsecircuits.schedules import Slot
from sparsecircuits.train import (
    Sources,
    Trainer,
    batch_loss,
    evaluate_all,
    load_sources,
    torch_threads,
)
from sparsecircuits.trajectory import cosine_matrix

if TYPE_CHECKING:
    from sparsecircuits.run import Run

CACHE_VERSION = 1
"""The recovery cache's format; a file of another version is recomputed."""


# -- the cycle in a source x source matrix ---------------------------------------------------


def cycle_offset(k: int) -> np.ndarray:
    """``offset[i, j] = (j - i) mod k``: how many blocks after ``i`` source ``j`` comes."""
    i = np.arange(k)
    return (i[None, :] - i[:, None]) % k


def cycle_distance(k: int) -> np.ndarray:
    """The distance between two of ``k`` sources around the cycle, the shorter way."""
    offset = cycle_offset(k)
    return np.minimum(offset, k - offset)


def profile(matrix: np.ndarray, lags: np.ndarray) -> list[float]:
    """The mean of ``matrix`` at each value ``0 .. max(lags)`` of ``lags`` (nan entries
    skipped; nan where none)."""
    m = np.asarray(matrix, dtype=np.float64)
    out = []
    for lag in range(int(lags.max()) + 1):
        values = m[(lags == lag) & np.isfinite(m)]
        out.append(float(values.mean()) if values.size else float("nan"))
    return out


def _correlation(matrix: np.ndarray, distance: np.ndarray) -> float:
    """Pearson correlation of ``matrix`` with ``distance`` over the finite pairs ``i != j``."""
    keep = ~np.eye(len(matrix), dtype=bool) & np.isfinite(matrix)
    x, y = distance[keep].astype(np.float64), matrix[keep]
    if x.size < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def order_test(matrix: np.ndarray, orders: int = 5040, seed: int = 0) -> dict[str, float]:
    """The correlation of ``matrix`` (K x K) with the cycle distance, and ``order_p``: the
    fraction of orders of the K sources (all of them when there are at most ``orders``, else
    ``orders`` random ones, the given order among them) whose correlation is at least as large
    in magnitude. ``orders_tested``: how many."""
    m = np.asarray(matrix, dtype=np.float64)
    k = len(m)
    distance = cycle_distance(k)
    observed = _correlation(m, distance)
    if not math.isfinite(observed):
        return {"correlation": observed, "order_p": float("nan"), "orders_tested": 0}
    if math.factorial(k) <= orders:
        perms = [np.array(p) for p in itertools.permutations(range(k))]
    else:
        rng = np.random.default_rng(seed)
        perms = [np.arange(k)] + [rng.permutation(k) for _ in range(orders - 1)]
    # relabelling the sources by an order moves each one to its place in that order
    stats = np.array([_correlation(m, distance[np.ix_(p, p)]) for p in perms])
    p = float(np.mean(np.abs(stats) >= abs(observed) - 1e-12))
    return {"correlation": observed, "order_p": p, "orders_tested": len(perms)}


def cycle_structure(matrix: np.ndarray) -> dict[str, Any]:
    """How a source x source matrix (rows and columns in cycle order) varies around the cycle
    (module doc): ``by_distance``, ``by_offset``, ``correlation`` (with the distance),
    ``order_p``, and the means on and off the diagonal."""
    m = np.asarray(matrix, dtype=np.float64)
    k = len(m)
    off = ~np.eye(k, dtype=bool) & np.isfinite(m)
    return {"by_distance": profile(m, cycle_distance(k)),
            "by_offset": profile(m, cycle_offset(k)),
            **order_test(m),
            "diagonal": float(np.nanmean(np.diag(m))) if k else float("nan"),
            "off_diagonal": float(m[off].mean()) if off.any() else float("nan")}


# -- gradient cosine --------------------------------------------------------------------------


def gradient_cosines(grads: list[dict[str, np.ndarray]], alive: dict[str, np.ndarray],
                     again: list[dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Cosines between the sources' gradients (``grads``: one ``{tensor: array}`` per source,
    in cycle order), flattened over every weight (``all``) and over the ``alive`` ones
    (``{tensor: bool array}``), each with its :func:`cycle_structure`, the gradient norms and
    the number of weights; and per tensor (``per_tensor``: ``{tensor: {"all", "alive"}}``).
    With ``again`` (the same sources' gradients on other batches), ``repeat``: each source's
    cosine with itself across the two batches, the ceiling batch noise leaves for the rest."""
    names = list(grads[0])
    everything = {n: np.ones(grads[0][n].shape, dtype=bool) for n in names}

    def flat(gs: list[dict[str, np.ndarray]], keep: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([np.concatenate([g[n][keep[n]] for n in names]) for g in gs])

    out: dict[str, Any] = {}
    for kind, keep in (("all", everything), ("alive", alive)):
        rows = flat(grads, keep)
        cosine = cosine_matrix(rows)
        out[kind] = {"cosine": cosine.tolist(), "norms": np.linalg.norm(rows, axis=1).tolist(),
                     "weights": int(rows.shape[1]), **cycle_structure(cosine)}
        if again is not None:
            both = cosine_matrix(np.concatenate([rows, flat(again, keep)]))
            out[kind]["repeat"] = np.diag(both, len(rows)).tolist()
    out["per_tensor"] = {
        n: {kind: cosine_matrix(np.stack([g[n][keep[n]] for g in grads])).tolist()
            for kind, keep in (("all", everything), ("alive", alive))}
        for n in names}
    return out


def source_gradients(model: SparseGPT, config: Config, sources: Sources, names: list[str],
                     step: int) -> list[dict[str, np.ndarray]]:
    """Each named source's gradient (``{tensor: array}``) of its training loss on the batch
    the run draws for it at ``step``, its source rows alone (``data.lm_rows`` set to 0; the
    source rows are drawn first, so they are the ones training draws)."""
    alone = dataclasses.replace(config, data=dataclasses.replace(config.data, lm_rows=0))
    model.train()
    out = []
    for name in names:
        model.zero_grad(set_to_none=True)
        slot = Slot(step, name, cycle=-1, block=-1, position=-1, offset=0)
        batch_loss(model, alone, sources, slot)["source_loss"].backward()
        out.append({n: p.grad.detach().cpu().numpy().copy() if p.grad is not None
                    else np.zeros(tuple(p.shape), dtype=np.float32)
                    for n, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)
    return out


def alive_weights(model: SparseGPT, config: Config) -> dict[str, np.ndarray]:
    """Per tensor, the weights alive in ``model``: the nonzero entries of the weight-sparse
    tensors, every entry of the dense ones (and of all with sparsity off)."""
    sparse = model.sparse_parameters() if config.sparsity.enabled else {}
    return {n: (p.detach().cpu().numpy() != 0) if n in sparse
            else np.ones(tuple(p.shape), dtype=bool)
            for n, p in model.named_parameters()}


def gradients(run: Run, checkpoints: str | list[int | str] | None = None, repeat: bool = True,
              progress: bool | None = None) -> dict[str, Any]:
    """:func:`gradient_cosines` at the chosen checkpoints (default: all) of ``run``, each with
    its place in the schedule and ``batch_step`` (the step whose batches were drawn; with
    ``repeat``, also those of the step after, for the ``repeat`` cosines), and ``summary``: per
    kind (``all``, ``alive``), the mean ``by_distance`` profile, correlation and ``repeat``
    over the chosen checkpoints of the cycles (the warm-up left out)."""
    config = run.config
    order = list(config.schedule.sources)
    steps = run.select(checkpoints, "all")
    info = {c.step: c for c in run.checkpoints}
    sources = load_sources(config)
    entries = []
    batches = 2 if repeat else 1
    bar = progress_bar(total=len(steps) * len(order) * batches, unit="backward",
                       desc="gradients", show=progress)
    with torch_threads(config.run.threads):
        for step in steps:
            model, _ = ckpt.load_model(run.dir.checkpoint(step))
            grads = [source_gradients(model, config, sources, order, step + 1 + b)
                     for b in range(batches)]
            bar.update(len(order) * batches)
            c = info[step]
            entries.append({"step": step, "cycle": c.cycle, "source": c.source,
                            "position": c.position, "batch_step": step + 1,
                            **gradient_cosines(grads[0], alive_weights(model, config),
                                               grads[1] if repeat else None)})
    bar.close()
    cycling = [e for e in entries if e["cycle"] >= 0] or entries
    fields = ("by_distance", "correlation", "repeat") if repeat else ("by_distance",
                                                                       "correlation")
    summary = {kind: {f: _mean([e[kind][f] for e in cycling]) for f in fields}
               for kind in ("all", "alive")}
    return {"order": order, "distance": cycle_distance(len(order)).tolist(),
            "checkpoints": entries, "summary": summary,
            "batch": "the source rows of the batch training draws at batch_step"}


def _mean(rows: list[Any]) -> Any:
    """The mean over ``rows`` (numbers or lists of them), nan skipped; nan where all are."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a mean of nothing but nan is nan
        return np.nanmean(np.asarray(rows, dtype=np.float64), axis=0).tolist()


# -- the pairwise recovery matrix --------------------------------------------------------------


def _losses(evals: dict[str, dict[str, float]]) -> dict[str, float]:
    return {name: values["loss"] for name, values in evals.items()}


def _read_cache(path: Path, key: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The cached rows at ``path`` if they were computed under ``key``, and what was found."""
    if not path.exists():
        return None, "new"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, "replaced an unreadable file"
    if not isinstance(cached, dict) or cached.get("key") != key:
        return None, "replaced rows computed under another key"
    return cached, f"resumed ({len(cached['rows'])} of {len(key['sources'])} rows cached)"


def _check_steps(config: Config, step: int, steps: int, total: int) -> None:
    if steps < 1:
        raise ConfigError(f"--steps: must be at least 1, got {steps}")
    if config.optimizer.decay == "linear" and step + steps >= total:
        raise ConfigError(f"--steps: {steps} steps from checkpoint {step} run past the "
                          f"schedule's last step ({total - 1}), where optimizer.decay='linear' "
                          f"has brought the learning rate to 0; choose an earlier checkpoint "
                          f"or fewer steps")


def recovery_at(run: Run, trainer: Trainer, step: int, steps: int,
                progress: bool | None = None) -> dict[str, Any]:
    """The pairwise recovery matrix from checkpoint ``step`` (module doc), with ``trainer``
    (the run's, at its thread count), resuming the rows cached in ``RunDir.recovery``."""
    config = run.config
    order = list(config.schedule.sources)
    folder = run.dir.checkpoint(step)
    meta = ckpt.read_meta(folder)
    restored = ckpt.has_state(folder)
    key = {"version": CACHE_VERSION, "step": step, "steps": steps, "sources": order,
           "model_sha256": meta["files"][MODEL_FILE]["sha256"],
           "optimizer": "restored" if restored else "fresh"}
    path = run.dir.recovery(step, steps)
    cached, cache = _read_cache(path, key)
    if cached is None:
        trainer.branch(folder)
        cached = {"key": key, "before": _losses(evaluate_all(trainer.model, config,
                                                             trainer.sources)), "rows": {}}
        path.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_json(path, cached, indent=1)
    rows = cached["rows"]
    missing = [source for source in order if source not in rows]
    bar = progress_bar(total=len(missing) * steps, unit="step", desc=f"recovery {step}",
                       show=progress)
    for source in missing:
        start = time.perf_counter()
        trainer.branch(folder)
        records = []
        for _ in range(steps):
            records.append(trainer.step_on(source))
            bar.update(1)
        after = _losses(evaluate_all(trainer.model, config, trainer.sources))
        rows[source] = {"after": after, "train_loss": [records[0]["loss"], records[-1]["loss"]],
                        "lr": [records[0]["lr"], records[-1]["lr"]],
                        "seconds": time.perf_counter() - start}
        ckpt.write_json(path, cached, indent=1)  # atomically, row by row
    bar.close()
    before = cached["before"]
    columns = list(before)
    change = np.array([[rows[i]["after"][j] - before[j] for j in columns] for i in order])
    square = change[:, [columns.index(j) for j in order]]
    info = {c.step: c for c in run.checkpoints}[step]
    return {"step": step, "cycle": info.cycle, "source": info.source, "position": info.position,
            "optimizer": ("restored from the checkpoint" if restored else
                          f"fresh: the checkpoint kept no optimizer state (only the "
                          f"{ckpt.RESUMABLE} newest do)"),
            "cache": cache, "before": before, "matrix": square.tolist(),
            "other": {j: change[:, c].tolist() for c, j in enumerate(columns) if j not in order},
            "lr": rows[order[0]]["lr"],
            "seconds": float(sum(rows[i]["seconds"] for i in order)),
            **cycle_structure(square)}


def recovery(run: Run, checkpoints: str | list[int | str] | None = None, steps: int | None = None,
             progress: bool | None = None) -> dict[str, Any]:
    """:func:`recovery_at` the chosen checkpoints (default: the newest) after ``steps`` steps
    per row (default: one block, ``schedule.steps_per_block``)."""
    config = run.config
    steps = config.schedule.steps_per_block if steps is None else steps
    chosen = run.select(checkpoints, "newest")
    with torch_threads(config.run.threads):
        trainer = Trainer(config, run.path)
        for step in chosen:
            _check_steps(config, step, steps, trainer.schedule.total_steps)
        entries = [recovery_at(run, trainer, step, steps, progress) for step in chosen]
    return {"steps": steps, "order": list(config.schedule.sources), "checkpoints": entries,
            "change": "loss after minus before; row: the source trained, column: the source "
                      "evaluated"}
