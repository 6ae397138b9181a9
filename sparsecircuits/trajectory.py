"""Time in the weights: the path of a run's weights through its checkpoints (issue 16).

Three analyses, each a pure function on arrays (``T`` checkpoints by ``N`` weights) and a
function that applies it to a :class:`~sparsecircuits.run.Run`:

- :func:`pca_path` / :func:`trajectory`: PCA (numpy SVD) of the flattened weights over the
  checkpoints (whole model, or one tensor) and of the masks (alive: nonzero), with the fraction
  of variance in the first components and :func:`loop_closure`, whether the path comes back
  each cycle: the distance between the checkpoints at one position of consecutive cycles over
  the path length of one cycle (0: a closed loop, about 1: it walks on).
- :func:`similarity_matrices` / :func:`similarity`: checkpoint x checkpoint cosine of weight
  displacements (from the first checkpoint and from the previous one) and the Jaccard overlap
  of the alive sets; :func:`detect_period` reads the period of a block pattern off a matrix.
- :func:`mask_oscillation` / :func:`oscillation`: per weight, how often it leaves and
  re-enters the kept set and the power of its alive sequence at the cycle's frequency, against
  a shuffled-time control (the checkpoints' order permuted); and, where the run's circuits are
  extracted, where those weights sit (:func:`circuit_share`): the share of oscillating weights
  that are an edge of some task's circuit, against the share among all flipping weights and
  among all weights ever alive.

:func:`analyze` runs them for ``sparsecircuits analyze``, with the recency probes of
:mod:`sparsecircuits.recency` (on activations, not weights) and the two analyses of transfer
between sources of :mod:`sparsecircuits.transfer`: the gradient cosine (``gradients``) and,
only when named, the pairwise recovery matrix (``recovery``, which trains).

Masks are read from the tensors that are weight-sparse (some weight zero at some checkpoint);
dense tensors (all alive throughout) are left out of the mask analyses.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sparsecircuits.run import Run

WHAT = ("trajectory", "similarity", "oscillation", "recency", "gradients")
"""The analyses, in the order ``sparsecircuits analyze`` runs them."""
ON_DEMAND = ("recovery",)
"""Analyses that train (:mod:`sparsecircuits.transfer`): run only when named."""


# -- 1. the weight trajectory --------------------------------------------------------------


def pca_path(points: np.ndarray, components: int = 3) -> dict[str, np.ndarray]:
    """PCA of ``points`` (``T`` x ``N``, one row per checkpoint) by SVD of the centred rows:
    ``coords`` (``T`` x ``components``), ``explained`` (fraction of variance per component,
    all of them, summing to 1; zeros for a path that stands still) and ``axes`` (the
    components' directions, ``components`` x ``N``)."""
    x = np.asarray(points, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s**2
    total = var.sum()
    explained = var / total if total > 0 else np.zeros_like(var)
    k = min(components, len(s))
    return {"coords": u[:, :k] * s[:k], "explained": explained, "axes": vt[:k]}


def loop_closure(points: np.ndarray, cycles: np.ndarray, positions: np.ndarray) -> float:
    """How far the path is from closing a loop each cycle: over consecutive cycles ``c`` and
    ``c + 1`` and every position both reached, the distance between the two checkpoints at that
    position, divided by the path length of cycle ``c`` (the sum of the steps between its
    consecutive checkpoints, and the step into the next cycle). The median over those pairs:
    0 for a loop the path retraces, about 1 for a path that walks on (as far in one cycle as it
    travels); nan with fewer than two cycles. Warm-up checkpoints (cycle < 0) are ignored."""
    x = np.asarray(points, dtype=np.float64)
    cycles, positions = np.asarray(cycles), np.asarray(positions)
    where = {(int(c), int(p)): i for i, (c, p) in enumerate(zip(cycles, positions, strict=True))
             if c >= 0}
    ratios = []
    for c in sorted({c for c, _ in where}):
        own = sorted(i for (cc, _), i in where.items() if cc == c)
        nxt = [i for (cc, _), i in where.items() if cc == c + 1]
        if not nxt:
            continue
        path = [*own, min(nxt)]
        length = float(sum(np.linalg.norm(x[b] - x[a]) for a, b in itertools.pairwise(path)))
        if length == 0:
            continue
        for (cc, p), i in where.items():
            if cc == c and (c + 1, p) in where:
                ratios.append(np.linalg.norm(x[where[c + 1, p]] - x[i]) / length)
    return float(np.median(ratios)) if ratios else float("nan")


def trajectory_numbers(points: np.ndarray, cycles: np.ndarray, positions: np.ndarray,
                       components: int = 3) -> dict[str, Any]:
    """:func:`pca_path` of ``points`` and its :func:`loop_closure`, in the full space and in
    the plane of the first two components, as JSON-ready numbers."""
    pca = pca_path(points, components)
    return {
        "coords": pca["coords"].tolist(),
        "explained": pca["explained"][:components].tolist(),
        "explained_first2": float(pca["explained"][:2].sum()),
        "closure": loop_closure(points, cycles, positions),
        "closure_pc12": loop_closure(pca["coords"][:, :2], cycles, positions),
    }


# -- 2. checkpoint x checkpoint similarity -------------------------------------------------


def cosine_matrix(rows: np.ndarray) -> np.ndarray:
    """Cosine similarity between every two rows (nan where a row is zero)."""
    x = np.asarray(rows, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = x / norm[:, None]
    return unit @ unit.T


def jaccard_matrix(alive: np.ndarray) -> np.ndarray:
    """Jaccard overlap of the alive sets of every two rows of a boolean ``T`` x ``N`` array
    (1 where both are empty)."""
    a = np.asarray(alive, dtype=np.float64)
    both = a @ a.T
    counts = a.sum(axis=1)
    union = counts[:, None] + counts[None, :] - both
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, both / union, 1.0)
    return out


def circuit_jaccard(member: np.ndarray, solved: np.ndarray) -> np.ndarray:
    """Checkpoint x checkpoint Jaccard of one task's circuit edges (``member``: ``T`` x ``E``,
    edge ``e`` is in the circuit at checkpoint ``t``); rows and columns of checkpoints where the
    circuit is not solved (or not extracted) are nan, not the 1 of two empty sets."""
    out = jaccard_matrix(member)
    out[~solved, :] = np.nan
    out[:, ~solved] = np.nan
    return out


def mean_matrix(matrices: list[np.ndarray]) -> np.ndarray:
    """The entry-wise mean of ``matrices`` over those that are not nan there (nan where none
    is)."""
    stack = np.stack(matrices)
    counts = np.isfinite(stack).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.nansum(stack, axis=0) / counts, np.nan)


def similarity_matrices(points: np.ndarray, alive: np.ndarray | None = None
                        ) -> dict[str, np.ndarray]:
    """``from_start``: cosine of the displacements from the first checkpoint (rows 1..T-1);
    ``from_previous``: cosine of the steps between consecutive checkpoints (rows 1..T-1, the
    step into each); ``jaccard``: overlap of the alive sets (all ``T``), when ``alive`` is
    given."""
    x = np.asarray(points, dtype=np.float64)
    out = {"from_start": cosine_matrix(x[1:] - x[0]),
           "from_previous": cosine_matrix(np.diff(x, axis=0))}
    if alive is not None:
        out["jaccard"] = jaccard_matrix(alive)
    return out


def lag_profile(matrix: np.ndarray) -> np.ndarray:
    """Mean of ``matrix`` along its off-diagonals: entry ``L`` is the mean over ``i`` of
    ``matrix[i, i + L]`` (nan entries skipped); entry 0 is the diagonal."""
    m = np.asarray(matrix, dtype=np.float64)
    out = np.full(len(m), np.nan)
    for lag in range(len(m)):
        diag = np.diagonal(m, lag)
        if np.isfinite(diag).any():
            out[lag] = np.nanmean(diag)
    return out


def detect_period(matrix: np.ndarray, max_lag: int | None = None) -> int | None:
    """The period of a block pattern in a checkpoint x checkpoint matrix, read off it: the
    lag ``L >= 2`` (up to ``max_lag``, default half the checkpoints, so the pattern repeats at
    least twice) where the mean along the off-diagonal (:func:`lag_profile`) is a local peak,
    higher than at ``L - 1`` and ``L + 1``; of those peaks the shortest lag whose margin over
    the mean of its two neighbours is at least half the largest margin (the fundamental, not
    a multiple of it). The profile is detrended first (a straight line through it removed), so
    a slow drift that makes near lags more alike does not hide the peak.
    None when there is no peak."""
    profile = lag_profile(matrix)
    n = len(profile)
    max_lag = n // 2 if max_lag is None else min(max_lag, n - 2)
    lags = np.arange(1, max_lag + 2)
    if max_lag < 2 or not np.isfinite(profile[lags]).all():
        return None
    trend = np.polyfit(lags, profile[lags], 1)
    resid = profile.copy()
    resid[lags] = profile[lags] - np.polyval(trend, lags)
    peaks = {}
    for lag in range(2, max_lag + 1):
        left, right = resid[lag - 1], resid[lag + 1]
        if resid[lag] > left and resid[lag] > right:
            peaks[lag] = resid[lag] - (left + right) / 2
    if not peaks:
        return None
    # the fundamental, not a multiple of it: the shortest lag whose peak is at least half the
    # highest one
    top = max(peaks.values())
    return min(lag for lag, margin in peaks.items() if margin >= top / 2)


def period_contrast(profile: np.ndarray, period: int) -> float:
    """How much more alike checkpoints ``period`` apart are than those one closer or one
    further: ``profile[period]`` minus the mean of its two neighbours, on a :func:`lag_profile`.
    A continuous counterpart of :func:`detect_period`'s yes or no, to average over seeds;
    nan where the profile does not reach ``period + 1``."""
    p = np.asarray(profile, dtype=np.float64)
    if not 1 <= period < len(p) - 1:
        return float("nan")
    return float(p[period] - (p[period - 1] + p[period + 1]) / 2)


def same_source_contrast(matrix: np.ndarray, sources: list[str], min_lag: int = 2
                         ) -> dict[str, float]:
    """Mean of ``matrix[i, j]`` (``i < j``, ``j - i >= min_lag``) over pairs whose rows trained
    the same source (``same``) and different sources (``different``). Read off the
    step-from-previous cosine it says whether steps on one source align wherever they fall in
    time, which a shuffled control can show too (its period cannot)."""
    m = np.asarray(matrix, dtype=np.float64)
    same, different = [], []
    for i in range(len(m)):
        for j in range(i + min_lag, len(m)):
            if np.isfinite(m[i, j]):
                (same if sources[i] == sources[j] else different).append(m[i, j])
    return {"same": float(np.mean(same)) if same else float("nan"),
            "different": float(np.mean(different)) if different else float("nan"),
            "pairs_same": len(same), "pairs_different": len(different)}


# -- 3. mask oscillation -------------------------------------------------------------------


def leaves_and_returns(alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per weight (column of a boolean ``T`` x ``N`` array): how often it leaves the kept set
    (alive, then dead at the next checkpoint) and how often it re-enters it (dead after having
    been alive, then alive)."""
    a = np.asarray(alive, dtype=bool)
    leaves = (a[:-1] & ~a[1:]).sum(axis=0)
    seen = np.maximum.accumulate(a, axis=0)
    returns = (seen[:-1] & ~a[:-1] & a[1:]).sum(axis=0)
    return leaves, returns


def period_power(series: np.ndarray, period: float) -> np.ndarray:
    """Per column of ``series`` (``T`` x ``N``), the fraction of its variance at frequency
    ``1 / period`` (in checkpoints): ``|sum_t x_t e^{-2 pi i t / period}|^2 / (T/2 sum_t
    x_t^2)`` of the centred column; 1 for a sinusoid of that period over whole periods, 0 for a
    constant column."""
    x = np.asarray(series, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    t = np.arange(len(x))
    phase = np.exp(-2j * np.pi * t / period)
    power = np.abs(phase @ x) ** 2
    total = (x**2).sum(axis=0) * len(x) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, power / total, 0.0)


def spectrum(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cycles per checkpoint) and the mean power spectrum (``rfft``) of the
    centred columns of ``series``, each column's power divided by its variance."""
    x = np.asarray(series, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    var = (x**2).sum(axis=0)
    keep = var > 0
    freqs = np.fft.rfftfreq(len(x))
    if not keep.any():
        return freqs, np.zeros(len(freqs))
    power = np.abs(np.fft.rfft(x[:, keep], axis=0)) ** 2 / var[keep]
    return freqs, power.mean(axis=1)


def mask_oscillation(alive: np.ndarray, period: float, permutations: int = 200,
                     alpha: float = 0.01, seed: int = 0) -> dict[str, Any]:
    """Which weights' alive sequences (columns of ``alive``, ``T`` x ``N``) oscillate with
    ``period`` checkpoints: a weight oscillates when its :func:`period_power` exceeds the
    ``1 - alpha`` quantile of its own power under ``permutations`` random orders of the
    checkpoints (the shuffled-time control; the same orders for every weight) and it leaves
    and re-enters the kept set at least once. Returns per-weight ``power``, ``threshold``,
    ``leaves``, ``returns`` and ``oscillating`` (bool), and ``expected_false``, ``alpha``
    times the number of weights that flip at all: an upper bound on the weights that pass by
    chance (a weight that flips once or twice has a coarse, tied null, and must beat its
    quantile strictly, so far fewer pass; compare against a shuffled control run instead)."""
    a = np.asarray(alive, dtype=bool)
    x = a.astype(np.float64)
    power = period_power(x, period)
    rng = np.random.default_rng(seed)
    null = np.empty((permutations, a.shape[1]))
    for k in range(permutations):
        null[k] = period_power(x[rng.permutation(len(x))], period)
    threshold = np.quantile(null, 1 - alpha, axis=0)
    leaves, returns = leaves_and_returns(a)
    flips = (leaves + returns) > 0
    oscillating = flips & (returns > 0) & (power > threshold)
    return {"power": power, "threshold": threshold, "leaves": leaves, "returns": returns,
            "oscillating": oscillating, "flipping": int(flips.sum()),
            "expected_false": float(alpha * flips.sum())}


def circuit_share(groups: dict[str, np.ndarray], in_circuit: np.ndarray) -> dict[str, Any]:
    """For each named group of weights (a boolean mask over the same ``N`` weights as
    ``in_circuit``), its size and the share of it that lies in a circuit; ``enrichment`` is the
    share of the first group over the share of the last (nan when that is 0)."""
    shares = {name: {"weights": int(g.sum()),
                     "in_circuits": float(in_circuit[g].mean()) if g.any() else float("nan")}
              for name, g in groups.items()}
    names = list(groups)
    first, last = shares[names[0]]["in_circuits"], shares[names[-1]]["in_circuits"]
    return {"groups": shares,
            "enrichment": first / last if last and not np.isnan(last) else float("nan")}


# -- on a run ------------------------------------------------------------------------------


def weight_edges(run: Run, spans: list[tuple[str, int, int]], columns: np.ndarray
                 ) -> list[tuple[str, str] | None]:
    """The weight-graph edge (source node, target node) of each of ``columns`` (indices into
    :func:`run_weights`' flat weights); None for a column that is no edge (a bias, a dense
    tensor)."""
    from sparsecircuits.circuits.graph import weight_sites

    sites = {site.param: site for site in weight_sites(run.config.model)}
    shapes = {name: tuple(p.shape) for name, p in run.model(run.steps[0]).named_parameters()}
    starts = np.array([a for _, a, _ in spans])
    edges: list[tuple[str, str] | None] = []
    for column in columns:
        name, start, _ = spans[int(np.searchsorted(starts, column, side="right")) - 1]
        site = sites.get(name)
        if site is None:
            edges.append(None)
            continue
        row, col = divmod(int(column) - start, shapes[name][1])
        source, target = (col, row) if site.linear else (row, col)
        edges.append((f"{site.source}:{source}", f"{site.target}:{target}"))
    return edges


def circuit_nodes(run: Run, steps: list[int]) -> dict[str, list[set[str]]]:
    """Per extracted task, the node sets of its circuits at ``steps``, read off the run's
    circuit timeline (empty where unsolved or not extracted)."""
    timeline = run.timeline()
    index = {int(step): t for t, step in enumerate(timeline.steps)}
    out: dict[str, list[set[str]]] = {}
    for task, graph in timeline.circuits.items():
        snapshots = [graph.snapshots[index[step]] if step in index else None for step in steps]
        out[task] = [set(s.nodes) if s is not None else set() for s in snapshots]
    return out


def in_circuits(edges: list[tuple[str, str]], alive: np.ndarray, nodes: list[set[str]]
                ) -> np.ndarray:
    """Per weight (column of ``alive``, ``T`` x ``N``, with its edge in ``edges``): whether at
    some checkpoint ``t`` it is alive and both its ends are in ``nodes[t]`` (it is an edge of
    that circuit)."""
    index = {node: i for i, node in enumerate(sorted({n for edge in edges for n in edge}))}
    ends = np.array([[index[a], index[b]] for a, b in edges], dtype=np.int64).reshape(-1, 2)
    hit = np.zeros(len(edges), dtype=bool)
    for t, kept in enumerate(nodes):
        member = np.zeros(len(index), dtype=bool)
        member[[index[n] for n in kept if n in index]] = True
        hit |= member[ends[:, 0]] & member[ends[:, 1]] & alive[t]
    return hit


def run_weights(run: Run, tensors: list[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]:
    """Every checkpoint's weights flattened (``T`` x ``N`` float32), which columns belong to
    weight-sparse tensors (bool, ``N``), and each tensor's ``(name, start, stop)`` columns.
    ``tensors`` restricts to those parameter names."""
    rows, spans = [], []
    for step in run.steps:
        params = {name: p.detach().cpu().numpy().ravel()
                  for name, p in run.model(step).named_parameters()
                  if tensors is None or name in tensors}
        if not spans:
            start = 0
            for name, flat in params.items():
                spans.append((name, start, start + flat.size))
                start += flat.size
        rows.append(np.concatenate([params[name] for name, _, _ in spans]).astype(np.float32))
    if not rows:
        raise ValueError(f"{run.path}: no checkpoint to analyse")
    if not spans:
        raise ValueError(f"{run.path}: no parameter named {', '.join(tensors or [])}")
    x = np.stack(rows)
    sparse = np.zeros(x.shape[1], dtype=bool)
    for _, start, stop in spans:
        sparse[start:stop] = bool((x[:, start:stop] == 0).any())
    return x, sparse, spans


def schedule_of(run: Run) -> dict[str, Any]:
    """The checkpoints' cycles and positions, and the cycle's period in checkpoints (the number
    of distinct positions reached in cycles >= 0)."""
    cycles = np.array([c.cycle for c in run.checkpoints])
    positions = np.array([c.position for c in run.checkpoints])
    period = len({int(p) for c, p in zip(cycles, positions, strict=True) if c >= 0})
    return {"steps": list(run.steps), "cycles": cycles, "positions": positions,
            "period": period}


def trajectory(run: Run, per_tensor: bool = False, components: int = 3,
               weights: tuple[np.ndarray, np.ndarray, list] | None = None) -> dict[str, Any]:
    """:func:`trajectory_numbers` of the run's weights (``weights``) and masks (``masks``:
    the alive weights of the weight-sparse tensors), and with ``per_tensor`` of each tensor
    (``tensors``: name -> numbers of its weights)."""
    x, sparse, spans = weights if weights is not None else run_weights(run)
    sched = schedule_of(run)
    cyc, pos = sched["cycles"], sched["positions"]
    out: dict[str, Any] = {"weights": trajectory_numbers(x, cyc, pos, components),
                           "masks": trajectory_numbers(x[:, sparse] != 0, cyc, pos, components)}
    if per_tensor:
        out["tensors"] = {name: trajectory_numbers(x[:, a:b], cyc, pos, components)
                          for name, a, b in spans}
    return out


def circuit_matrices(run: Run) -> dict[str, np.ndarray]:
    """Per task, :func:`circuit_jaccard` over the run's checkpoints (nan at checkpoints without
    its circuit); empty when no circuit is extracted."""
    if not run.dir.circuit_steps():
        return {}
    timeline = run.timeline()
    where = [run.steps.index(int(step)) for step in timeline.steps]
    out = {}
    for task in timeline.tasks:
        graph = timeline.circuits[task]
        member = np.zeros((len(run.steps), len(timeline.weight_graph.edges.keys)), dtype=bool)
        member[where] = timeline.membership(task).T
        solved = np.zeros(len(run.steps), dtype=bool)
        solved[where] = graph.extracted & np.array([bool(a.get("solved")) for a in graph.attrs])
        out[task] = circuit_jaccard(member, solved)
    return out


def similarity(run: Run, weights: tuple[np.ndarray, np.ndarray, list] | None = None
               ) -> dict[str, Any]:
    """:func:`similarity_matrices` of the run, each with the period :func:`detect_period`
    reads off it, beside the schedule's period, and the step cosine of same-source against
    different-source blocks (:func:`same_source_contrast`; row ``i`` of the step matrix is the
    step into checkpoint ``i + 1``, which trained that checkpoint's source). Where circuits
    are extracted, ``circuit_matrices`` holds each task's :func:`circuit_matrices` and
    ``matrices["circuits"]`` their mean (nan where no task's circuit is solved)."""
    x, sparse, _ = weights if weights is not None else run_weights(run)
    mats = similarity_matrices(x, x[:, sparse] != 0)
    circuits = circuit_matrices(run)
    if circuits:
        mats["circuits"] = mean_matrix(list(circuits.values()))
    sources = [c.source for c in run.checkpoints]
    return {"schedule_period": schedule_of(run)["period"],
            "step_cosine_by_source": same_source_contrast(mats["from_previous"], sources[1:]),
            "matrices": {k: (m if k == "circuits" else np.nan_to_num(m, nan=0.0)).tolist()
                         for k, m in mats.items()},
            "circuit_matrices": {task: m.tolist() for task, m in circuits.items()},
            "periods": {k: detect_period(m) for k, m in mats.items()},
            "lag_profiles": {k: lag_profile(m).tolist() for k, m in mats.items()}}


def oscillation(run: Run, weights: tuple[np.ndarray, np.ndarray, list] | None = None,
                permutations: int = 200, alpha: float = 0.01, seed: int = 0
                ) -> dict[str, Any]:
    """:func:`mask_oscillation` of the alive weights of the weight-sparse tensors over the
    checkpoints of cycles >= 0 (the warm-up left out), at the schedule's period, with the mean
    power spectrum of the weights that flip, the count of oscillating weights per tensor and
    the oscillating weights themselves (``oscillating_weights``: ``[tensor, flat index, power]``,
    strongest first; the viewer highlights them)."""
    x, sparse, spans = weights if weights is not None else run_weights(run)
    sched = schedule_of(run)
    rows = sched["cycles"] >= 0
    alive = x[rows][:, sparse] != 0
    result = mask_oscillation(alive, sched["period"], permutations, alpha, seed)
    flipping = (result["leaves"] + result["returns"]) > 0
    freqs, power = spectrum(alive[:, flipping])
    per_tensor, found, col = {}, [], 0
    for name, a, b in spans:
        if sparse[a]:
            hits = np.flatnonzero(result["oscillating"][col:col + b - a])
            per_tensor[name] = len(hits)
            found += [[name, int(i), float(result["power"][col + i])] for i in hits]
            col += b - a
    return {"period": sched["period"], "checkpoints": int(rows.sum()),
            "in_circuits": _oscillation_in_circuits(run, spans, sparse, rows, alive, result),
            "weights": int(alive.shape[1]), "flipping": result["flipping"],
            "oscillating": int(result["oscillating"].sum()),
            "expected_false": result["expected_false"], "alpha": alpha,
            "permutations": permutations,
            "median_power_flipping": float(np.median(result["power"][flipping]))
            if flipping.any() else float("nan"),
            "per_tensor": per_tensor,
            "oscillating_weights": sorted(found, key=lambda w: -w[2]),
            "spectrum": {"freqs": freqs.tolist(), "power": power.tolist()}}


def _oscillation_in_circuits(run: Run, spans: list[tuple[str, int, int]], sparse: np.ndarray,
                             rows: np.ndarray, alive: np.ndarray, result: dict[str, Any]
                             ) -> dict[str, Any] | str:
    """:func:`circuit_share` of the oscillating, the flipping and the ever-alive weights that
    are edges, per task and over all tasks; a sentence when no circuit is extracted."""
    steps = [s for s, r in zip(run.steps, rows, strict=True) if r]
    if not any(run.dir.circuit_files(step) for step in steps):
        return f"no circuits extracted; run `sparsecircuits extract {run.path}`"
    ever = alive.any(axis=0)
    flipping = (result["leaves"] + result["returns"]) > 0
    keep = np.flatnonzero(ever)  # only weights ever alive can sit in a circuit
    edges = weight_edges(run, spans, np.flatnonzero(sparse)[keep])
    is_edge = np.array([e is not None for e in edges])
    keep, edges = keep[is_edge], [e for e in edges if e is not None]
    groups = {"oscillating": result["oscillating"][keep], "flipping": flipping[keep],
              "alive": np.ones(len(keep), dtype=bool)}
    per_task = {task: in_circuits(edges, alive[:, keep], nodes)
                for task, nodes in circuit_nodes(run, steps).items()}
    any_task = np.logical_or.reduce(list(per_task.values()))
    return {**circuit_share(groups, any_task),
            "tasks": {task: circuit_share(groups, hit) for task, hit in per_task.items()}}


def headline(numbers: dict[str, Any]) -> dict[str, float]:
    """One number per question of the analyses in ``numbers`` (as :func:`analyze` returns
    them, or read back from JSON), named ``<analysis>.<what>``, to set a run's numbers beside
    another's or to average over seeds. ``similarity.<matrix>.period_found`` is 1 when the
    matrix's detected period is the schedule's, else 0 (over seeds: the share that found it);
    the recency numbers are the held-out Spearman of each probe at the last site probed; the
    gradient ones the alive-weight cosine's correlation with the cycle distance and its mean
    between neighbours in the cycle."""
    out: dict[str, float] = {}
    for kind, t in numbers.get("trajectory", {}).items():
        if kind in ("weights", "masks"):
            out[f"trajectory.{kind}.explained_first2"] = t["explained_first2"]
            out[f"trajectory.{kind}.closure"] = t["closure"]
    if "similarity" in numbers:
        sim = numbers["similarity"]
        period = sim["schedule_period"]
        for name, profile in sim["lag_profiles"].items():
            out[f"similarity.{name}.period_found"] = float(sim["periods"][name] == period)
            out[f"similarity.{name}.period_contrast"] = period_contrast(profile, period)
        steps = sim["step_cosine_by_source"]
        out["similarity.step_cosine.same_minus_different"] = steps["same"] - steps["different"]
    if "oscillation" in numbers:
        osc = numbers["oscillation"]
        out["oscillation.oscillating"] = float(osc["oscillating"])
        out["oscillation.oscillating_share"] = (osc["oscillating"] / osc["flipping"]
                                                if osc["flipping"] else float("nan"))
        if isinstance(osc.get("in_circuits"), dict):
            out["oscillation.in_circuits.enrichment"] = osc["in_circuits"]["enrichment"]
    rec = numbers.get("recency", {})
    if "probes" in rec:  # else a note says why nothing was probed
        site = rec["sites"][-1]
        for features, probe in rec["probes"][site].items():
            out[f"recency.{features}.spearman"] = probe["spearman"]
        out["recency.loss.spearman"] = rec["loss_probe"]["spearman"]
        out["recency.centroids.rho_mean"] = rec["centroids"][site]["raw"]["rho_mean"]
    if "gradients" in numbers:
        alive = numbers["gradients"]["summary"]["alive"]
        out["gradients.alive.distance_correlation"] = alive["correlation"]
        out["gradients.alive.cosine_at_distance_1"] = alive["by_distance"][1]
    return out


def analyze(run: Run, what: tuple[str, ...] = WHAT, per_tensor: bool = False,
            checkpoints: str | list[int | str] | None = None, steps: int | None = None,
            sites: list[str] | None = None, progress: bool | None = None) -> dict[str, Any]:
    """The analyses named in ``what`` (of :data:`WHAT` and :data:`ON_DEMAND`) on one run, as
    JSON-ready numbers. ``checkpoints`` (:meth:`Run.select`) chooses where the per-checkpoint
    analyses look (default: the recency probes the last cycle, the gradient cosine all
    checkpoints, the recovery matrix the newest); ``steps`` how many steps each recovery row
    trains (:mod:`sparsecircuits.transfer`); ``sites`` the hook sites the recency probes read
    (:mod:`sparsecircuits.recency`)."""
    unknown = [w for w in what if w not in WHAT + ON_DEMAND]
    if unknown:
        raise ValueError(f"--what: unknown analysis {', '.join(unknown)}; choose among "
                         f"{', '.join(WHAT + ON_DEMAND)}")
    from sparsecircuits import transfer  # it imports this module
    from sparsecircuits.recency import recency

    needs_weights = {"trajectory", "similarity", "oscillation"} & set(what)
    weights = run_weights(run) if needs_weights else None
    out: dict[str, Any] = {"steps": list(run.steps)}
    if "trajectory" in what:
        out["trajectory"] = trajectory(run, per_tensor=per_tensor, weights=weights)
    if "similarity" in what:
        out["similarity"] = similarity(run, weights=weights)
    if "oscillation" in what:
        out["oscillation"] = oscillation(run, weights=weights)
    if "recency" in what:
        out["recency"] = recency(run, checkpoints, sites)
    if "gradients" in what:
        out["gradients"] = transfer.gradients(run, checkpoints, progress=progress)
    if "recovery" in what:
        out["recovery"] = transfer.recovery(run, checkpoints, steps, progress=progress)
    return out
