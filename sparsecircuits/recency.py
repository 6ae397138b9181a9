"""Recency probes: do a model's activations encode how recently each source was trained?
(issue 16; Krasheninnikov et al. 2025, ``shared/notes/cyclic_training.md`` §2)

**Recency.** At a checkpoint that ends block ``b``, a source last trained in block ``b'`` has
recency ``b - b'`` blocks (0: the block just trained). Only blocks of one source count: the
warm-up mixture (and every block of an ``iid`` or ``interleave`` schedule) trains all sources a
little and none in particular, so a source without a block of its own yet has no recency at
that checkpoint; its examples there are left out, and listed (``left_out``).

**Examples.** A task's held-out evaluation prompts (``eval_set``: never trained on); a
document's fixed windows (those ``evals.jsonl`` scores: a document has no held-out text, these
are the windows it trains on). Activations are read at the last position, at hook sites
(default: the residual stream after each block, ``blocks.<l>.hook_resid_post``).

**The identity confound, and the design that keeps it out.** At one checkpoint every source
has one recency, so anything that tells the sources apart "decodes" recency: the tasks look
different, and a probe trained and tested on examples of the same sources scores high with no
recency in the model at all. Three things keep identity out of the score:

1. *Pooling checkpoints.* The examples at ``K`` checkpoints (default: the latest cycle's
   blocks) are pooled, each checkpoint's own model applied to them. Across a cycle one source
   takes different recencies (under round robin every one), so its identity predicts nothing.
2. *Holding out whole sources.* The probe is trained on every source but one and tested on
   that one, each source in turn: what it learnt must carry over to a source it never saw. The
   test examples are held out with it (no example of that source, at any checkpoint, is in
   the training fold).
3. *Two-way centring, fitted without the held-out source.* In each fold every feature is
   centred per checkpoint (the model's drift, shared by all sources) and per source (its
   identity): a least-squares fit on checkpoint and source indicators to the training rows;
   the held-out rows lose that fit's checkpoint effects and then their own mean. Features
   only, no labels. Under round robin recency belongs to neither the source nor the
   checkpoint but to the pair, so the centring removes none of it. Centring all rows at once
   would leak: at each checkpoint the sources' residuals would sum to zero, making the
   held-out source's minus the sum of the others', which the probe is fitted to.

**The probe.** Ridge regression (standardised features, penalty ``alpha`` times the training
rows) of the relative recency: an example's recency minus its source's mean over the pooled
checkpoints. What a source's identity could explain is thus left out of the labels as it is
out of the features; under round robin over whole cycles every source has the same mean, so
it is only a shift. Without it, pooling the folds' predictions would set each fold's
intercept (the other sources' mean recency) against the held-out source's own: under the
shuffled demo's last cycle, features of pure noise gave Spearman's rho -0.4 on average.
Scored over the held-out predictions of all folds: R², Spearman's rho, rounded accuracy (the
prediction within half a block of the truth) and early-vs-late AUC (the chance that an
example trained longer ago than the median gets the higher prediction; 0.5 at chance also
when the classes are unequal or the prediction is shrunk). Krasheninnikov's ~90 % is an
early-vs-late accuracy of a logistic probe on equal classes; here early vs late is read off
the same regression.

**Controls.** The same probe on other features: ``direction`` (the activations over their L2
norm: what is left without the norm), ``norm`` (the activation's norm alone), ``loss`` (the
example's loss alone) and ``norm+loss``. And a shuffled-label null: the recency table's rows
permuted across the pooled checkpoints (at each checkpoint the recencies of another, for all
sources at once; the same folds, the same features), ``permutations`` times; every score gets
the null's mean, 95 % interval and a one-sided p-value. Read a score beside its null's
interval: the p-value tests that the features know nothing of which checkpoint is which for
each source, so features that drift per source over the cycle can beat the null with a score
near zero.

**Centroid projection** (notes §2). Per checkpoint, each source's mean activation at the last
position, L2-normalised; ``x`` along the normalised (latest - earliest) direction (latest: the
smallest recency), ``y`` the top principal component of what is orthogonal to ``x``. The
centroids fall in training order when ``x`` falls as recency grows: ``rho`` = Spearman(x,
recency) = -1. Its null permutes recency among the sources at every checkpoint. Done on the
raw centroids (as in the paper, where the stages are alike; here identity dominates) and on
source-centred ones (each source's mean over the pooled checkpoints removed first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from sparsecircuits.data.tasks import TASKS, contrast_loss, eval_set
from sparsecircuits.progress import progress_bar
from sparsecircuits.schedules import build_schedule

if TYPE_CHECKING:
    from sparsecircuits.run import Run

FEATURES = ("activations", "direction", "norm", "norm+loss")
"""The feature sets probed at every site (``loss``, the same at every site, is probed once)."""

METRICS = ("r2", "spearman", "rounded_accuracy", "early_late_auc")


# -- recency from the schedule -------------------------------------------------------------


def recency_table(block_sources: Sequence[str], blocks: Sequence[int], sources: Sequence[str]
                  ) -> np.ndarray:
    """Recency (``len(blocks)`` x ``len(sources)``): at the checkpoint ending block
    ``blocks[k]``, how many blocks ago ``sources[j]`` was last trained in a block of its own
    (``block_sources[i]`` is block ``i``'s source); nan where it has none yet."""
    out = np.full((len(blocks), len(sources)), np.nan)
    column = {s: j for j, s in enumerate(sources)}
    last: dict[str, int] = {}
    order = sorted(range(len(blocks)), key=lambda k: blocks[k])
    upto = 0
    for k in order:
        for i in range(upto, blocks[k] + 1):
            last[block_sources[i]] = i
        upto = max(upto, blocks[k] + 1)
        for s, i in last.items():
            if s in column:
                out[k, column[s]] = blocks[k] - i
    return out


# -- the probe -----------------------------------------------------------------------------


def _indicators(labels: np.ndarray, levels: np.ndarray) -> np.ndarray:
    return np.equal.outer(labels, levels).astype(np.float64)


def centre_fold(x: np.ndarray, checkpoint: np.ndarray, source: np.ndarray, test: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Two-way centring for one fold (rows ``test`` held out): the training rows minus their
    least-squares fit on checkpoint and source indicators; the test rows minus the checkpoint
    effects of that fit, then minus their own mean. Nothing of the test rows enters the
    training rows (centring on all rows would: at each checkpoint the sources' residuals sum
    to zero, so the held-out source's would be minus the others')."""
    x = np.asarray(x, dtype=np.float64)
    train = ~test
    checkpoints, sources = np.unique(checkpoint), np.unique(source[train])
    design = np.concatenate([_indicators(checkpoint[train], checkpoints),
                             _indicators(source[train], sources)], axis=1)
    fit, *_ = np.linalg.lstsq(design, x[train], rcond=None)
    held = x[test] - _indicators(checkpoint[test], checkpoints) @ fit[:len(checkpoints)]
    return x[train] - design @ fit, held - held.mean(axis=0)


def loso_ridge(x: np.ndarray, y: np.ndarray, checkpoint: np.ndarray, source: np.ndarray,
               alpha: float = 1.0) -> np.ndarray:
    """Held-out predictions of ridge regression, leaving out one source at a time: for its
    rows, the fit on all other rows after :func:`centre_fold` (features standardised on the
    training rows, intercept unpenalised, penalty ``alpha`` x their count). ``y`` is a vector
    or a matrix of label columns (fitted at once)."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.empty_like(y)
    for g in np.unique(source):
        test = source == g
        xt, xs = centre_fold(x, checkpoint, source, test)
        sd = xt.std(axis=0)
        sd[sd == 0] = 1.0
        xt, xs = (xt - xt.mean(axis=0)) / sd, (xs - xt.mean(axis=0)) / sd
        ym = y[~test].mean(axis=0)
        gram = xt.T @ xt + alpha * len(xt) * np.eye(x.shape[1])
        pred[test] = xs @ np.linalg.solve(gram, xt.T @ (y[~test] - ym)) + ym
    return pred


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of a vector from 1, ties given their average rank."""
    _, inverse, counts = np.unique(np.asarray(x), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (ties averaged); nan when either side is constant."""
    ra, rb = ranks(a) - (len(a) + 1) / 2, ranks(b) - (len(b) + 1) / 2
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """R², Spearman, rounded accuracy (the prediction within half a block of ``y``, so it
    rounds to it when ``y`` is a recency) and early-vs-late AUC: the chance that an example
    trained longer ago (``y`` above its median) gets a higher prediction than one trained more
    recently (ties count half; 0.5: chance, whatever the classes' sizes and the prediction's
    scale)."""
    pred, y = np.asarray(pred, dtype=np.float64), np.asarray(y, dtype=np.float64)
    total = ((y - y.mean()) ** 2).sum()
    early = y > np.median(y)
    n_early, n_late = early.sum(), (~early).sum()
    auc = ((ranks(pred)[early].sum() - n_early * (n_early + 1) / 2) / (n_early * n_late)
           if n_early and n_late else float("nan"))
    return {
        "r2": float(1 - ((y - pred) ** 2).sum() / total) if total > 0 else float("nan"),
        "spearman": spearman(pred, y),
        "rounded_accuracy": float((np.abs(pred - y) < 0.5).mean()),
        "early_late_auc": float(auc),
    }


def permuted_tables(table: np.ndarray, permutations: int, seed: int = 0) -> np.ndarray:
    """``permutations`` copies of a recency table (checkpoints x sources) with its rows (the
    checkpoints) permuted: at every checkpoint the recencies of another, for all sources at
    once, so each checkpoint keeps a set of recencies a checkpoint had and each source its
    own. Rows are permuted only among rows with the same sources defined (nan cells stay)."""
    table = np.asarray(table, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.repeat(table[None], permutations, axis=0)
    patterns = [tuple(row) for row in np.isfinite(table)]
    groups = [np.flatnonzero([q == p for q in patterns]) for p in sorted(set(patterns))]
    for p in range(permutations):
        for rows in groups:
            out[p, rows] = table[rng.permutation(rows)]
    return out


def null_summary(observed: float, null: np.ndarray, lower_is_better: bool = False
                 ) -> dict[str, Any]:
    """The null's mean, its 2.5-97.5 % interval and the one-sided p-value of ``observed``
    ((1 + null draws at least as good) / (1 + draws))."""
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    if not len(null) or not np.isfinite(observed):
        return {"mean": float("nan"), "interval": [float("nan")] * 2, "p": float("nan")}
    good = null <= observed if lower_is_better else null >= observed
    return {"mean": float(null.mean()),
            "interval": np.quantile(null, [0.025, 0.975]).tolist(),
            "p": float((1 + good.sum()) / (1 + len(null)))}


def relative(y: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``y`` (rows, or rows x columns) minus each source's mean over its rows."""
    y = np.asarray(y, dtype=np.float64)
    out = y.copy()
    for j in np.unique(source):
        out[source == j] -= y[source == j].mean(axis=0)
    return out


def probe(features: np.ndarray, table: np.ndarray, checkpoint: np.ndarray, source: np.ndarray,
          alpha: float = 1.0, permutations: int = 200, seed: int = 0) -> dict[str, Any]:
    """The recency probe of the module doc on ``features`` (rows x features): row ``i`` is an
    example of source ``source[i]`` at checkpoint ``checkpoint[i]`` (indices into ``table``,
    checkpoints x sources, every row's entry defined). Leave-one-source-out ridge
    (:func:`loso_ridge`) of the relative recency (:func:`relative`), :func:`scores`, and each
    score's shuffled-label null (:func:`null_summary`)."""
    x = np.asarray(features).reshape(len(checkpoint), -1)
    y = table[checkpoint, source]
    nulls = permuted_tables(table, permutations, seed)[:, checkpoint, source].T
    labels = relative(np.concatenate([y[:, None], nulls], axis=1), source)
    pred = loso_ridge(x, labels, checkpoint, source, alpha)
    out: dict[str, Any] = scores(pred[:, 0], labels[:, 0])
    drawn = [scores(pred[:, p], labels[:, p]) for p in range(1, permutations + 1)]
    out["null"] = {m: null_summary(out[m], np.array([d[m] for d in drawn])) for m in METRICS}
    return out


# -- the centroid projection ---------------------------------------------------------------


def centroid_projection(centroids: np.ndarray, recency: np.ndarray) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """``x`` and ``y`` of each centroid (rows of ``centroids``, L2-normalised and centred):
    ``x`` along the normalised (latest - earliest) direction (latest: the smallest
    ``recency``, earliest: the largest; the first of ties), ``y`` along the top principal
    component of the part orthogonal to it."""
    c = np.asarray(centroids, dtype=np.float64)
    norm = np.linalg.norm(c, axis=1, keepdims=True)
    c = c / np.where(norm > 0, norm, 1.0)
    c = c - c.mean(axis=0)
    axis = c[np.argmin(recency)] - c[np.argmax(recency)]
    length = np.linalg.norm(axis)
    if length == 0:
        return np.zeros(len(c)), np.zeros(len(c))
    axis /= length
    x = c @ axis
    rest = c - np.outer(x, axis)
    _, _, vt = np.linalg.svd(rest, full_matrices=False)
    return x, rest @ vt[0]


def centroid_order(cells: np.ndarray, table: np.ndarray, permutations: int = 200,
                   seed: int = 0) -> dict[str, Any]:
    """:func:`centroid_projection` at every checkpoint of ``cells`` (checkpoints x sources x
    features: each cell's centroid; nan where the cell is left out) with Spearman(x, recency)
    per checkpoint (``rho``, -1: in training order) and its mean, against a null that permutes
    recency among the sources at each checkpoint."""
    rng = np.random.default_rng(seed)
    xs, ys, rhos = [], [], []
    null = np.zeros(permutations)
    counted = 0
    for k in range(len(table)):
        keep = np.flatnonzero(np.isfinite(table[k]))
        x, y = np.full(table.shape[1], np.nan), np.full(table.shape[1], np.nan)
        rho = float("nan")
        if len(keep) >= 2:
            r = table[k, keep]
            x[keep], y[keep] = centroid_projection(cells[k, keep], r)
            rho = spearman(x[keep], r)
            counted += 1
            for p in range(permutations):
                shuffled = rng.permutation(r)
                null[p] += spearman(centroid_projection(cells[k, keep], shuffled)[0], shuffled)
        xs.append(x.tolist())
        ys.append(y.tolist())
        rhos.append(rho)
    mean = float(np.nanmean(rhos)) if counted else float("nan")
    return {"x": xs, "y": ys, "rho": rhos, "rho_mean": mean,
            "null": null_summary(mean, null / max(counted, 1), lower_is_better=True)}


def source_centred(cells: np.ndarray) -> np.ndarray:
    """Each source's cell centroids minus their mean over the checkpoints (nan cells ignored)."""
    return cells - np.nanmean(cells, axis=0, keepdims=True)


# -- on a run ------------------------------------------------------------------------------


def default_sites(model: torch.nn.Module) -> list[str]:
    """The residual stream after each block."""
    return model.hook_names("hook_resid_post")


def check_sites(model: torch.nn.Module, sites: Sequence[str]) -> list[str]:
    """``sites`` if each is a channel-site hook of ``model``, else a ValueError naming it."""
    names = model.hook_names()
    for site in sites:
        if site not in names:
            raise ValueError(f"--sites: no hook point {site!r}; hook names look like "
                             f"{', '.join(default_sites(model))}")
        if site.endswith("hook_pattern"):
            raise ValueError(f"--sites: {site} is an attention pattern, not a site of "
                             f"channels; choose a residual, attention or MLP site")
    return list(sites)


def _examples(run: Run, source: str, count: int | None, documents: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, Any, bool]:
    """The tokens of a source's examples, ``loss(logits, rows)`` (the loss of those rows, an
    index tensor, from their logits) and whether the loss needs only the last position."""
    if source in TASKS:
        batch = eval_set(source, run.config.model.n_ctx, count or run.config.data.eval_examples)
        return batch.tokens, lambda logits, rows: contrast_loss(
            logits[:, -1], batch.correct[rows], batch.wrong[rows]), True
    windows = documents[source][:count]
    return windows[:, :-1], lambda logits, rows: F.cross_entropy(
        logits.transpose(1, 2), windows[rows, 1:], reduction="none").mean(dim=1), False


def run_table(run: Run, steps: Sequence[int]) -> np.ndarray:
    """:func:`recency_table` of the run's schedule at the checkpoints ``steps``, for the
    schedule's sources in its order."""
    blocks = build_schedule(run.config.schedule).blocks()
    info = {c.step: c for c in run.checkpoints}
    return recency_table([b.source for b in blocks], [info[s].block for s in steps],
                         run.config.schedule.sources)


def why_not(table: np.ndarray) -> str | None:
    """Why a recency table (pooled checkpoints x sources) cannot be probed, or None."""
    if np.isfinite(table).any(axis=0).sum() < 2:
        return ("fewer than two sources have a block of their own by these checkpoints: "
                "nothing to probe")
    if not any(np.ptp(col[np.isfinite(col)]) > 0 for col in table.T if np.isfinite(col).any()):
        return ("no source's recency differs between the pooled checkpoints, so recency "
                "cannot be told from the source's identity; pool more checkpoints "
                "(--checkpoints all, or a whole cycle)")
    return None


@torch.no_grad()
def collect(run: Run, steps: Sequence[int], table: np.ndarray, sites: Sequence[str],
            examples: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Activations at the last position at ``sites`` (``acts[site]``, rows x channels),
    their norms, and the loss of every example of every source with a recency in ``table``
    (:func:`run_table` of ``steps``), each checkpoint's own model applied; ``checkpoint`` and
    ``source`` index each row into ``table``; ``left_out`` names the cells without one."""
    sources = list(run.config.schedule.sources)
    documents = {}
    if any(name not in TASKS for name in sources):
        from sparsecircuits.train import load_sources  # the corpus: only for documents

        documents = load_sources(run.config).documents
    data = {name: _examples(run, name, examples, documents) for name in sources}
    acts: dict[str, list[np.ndarray]] = {site: [] for site in sites}
    loss, ck, src, left_out = [], [], [], []
    for k, step in enumerate(progress_bar(steps, desc="recency", unit="ckpt", show=progress)):
        model = run.model(step)
        device = model.W_E.device
        for j, name in enumerate(sources):
            if not np.isfinite(table[k, j]):
                left_out.append(f"{name} at step {step}")
                continue
            tokens, loss_of, last_only = data[name]
            for rows in torch.split(torch.arange(len(tokens)), 64):
                logits, cache = model.run_with_cache(tokens[rows].to(device), list(sites),
                                                     last_only=last_only)
                for site in sites:
                    acts[site].append(cache[site][:, -1].float().cpu().numpy())
                loss.append(loss_of(logits.float().cpu(), rows).numpy())
            ck.append(np.full(len(tokens), k))
            src.append(np.full(len(tokens), j))
    stacked = {site: np.concatenate(a).astype(np.float64) for site, a in acts.items()}
    return {"acts": stacked, "norm": {s: np.linalg.norm(a, axis=1) for s, a in stacked.items()},
            "loss": np.concatenate(loss), "checkpoint": np.concatenate(ck),
            "source": np.concatenate(src), "left_out": left_out,
            "examples": {name: len(tokens) for name, (tokens, _, _) in data.items()}}


def cell_means(x: np.ndarray, checkpoint: np.ndarray, source: np.ndarray,
               shape: tuple[int, int]) -> np.ndarray:
    """The mean row of ``x`` per (checkpoint, source) cell: ``shape`` + (features,), nan
    where a cell has no row."""
    out = np.full((*shape, x.shape[1]), np.nan)
    for k, j in set(zip(checkpoint.tolist(), source.tolist(), strict=True)):
        out[k, j] = x[(checkpoint == k) & (source == j)].mean(axis=0)
    return out


def recency(run: Run, checkpoints: str | Sequence[int | str] | None = None,
            sites: Sequence[str] | None = None, examples: int | None = None,
            alpha: float = 1.0, permutations: int = 200, seed: int = 0,
            progress: bool | None = None) -> dict[str, Any]:
    """The recency probes and centroid projections of the module doc at the checkpoints
    ``checkpoints`` names (:meth:`Run.select`, default ``last-cycle``), at ``sites``
    (default: :func:`default_sites`),
    on ``examples`` examples per source (default: the run's ``data.eval_examples`` for a task,
    every fixed window for a document), as JSON-ready numbers: ``probes[site][features]`` and
    ``loss_probe`` (:func:`probe`), ``centroids[site]["raw" | "centred"]``
    (:func:`centroid_order`), the pooled ``steps``, the ``recency`` table (steps x
    ``sources``; None: no block of its own yet) and the cells ``left_out``. A table that
    cannot be probed (:func:`why_not`: an ``iid`` schedule, a single checkpoint) gives only
    the steps, the table and a ``note`` saying why."""
    steps = run.select(checkpoints, "last-cycle")
    model = run.model(steps[-1])
    sites = check_sites(model, sites) if sites else default_sites(model)
    table = run_table(run, steps)
    out: dict[str, Any] = {
        "steps": list(steps), "sources": list(run.config.schedule.sources),
        "sites": list(sites),
        "recency": [[None if np.isnan(v) else int(v) for v in row] for row in table]}
    note = why_not(table)
    if note:
        return {**out, "note": note}
    data = collect(run, steps, table, sites, examples, progress)
    ck, src, loss = data["checkpoint"], data["source"], data["loss"]

    def run_probe(features: np.ndarray) -> dict[str, Any]:
        return probe(features, table, ck, src, alpha, permutations, seed)

    probes, centroids = {}, {}
    for site in sites:
        acts, norm = data["acts"][site], data["norm"][site]
        features = {"activations": acts,
                    "direction": acts / np.where(norm > 0, norm, 1.0)[:, None],
                    "norm": norm[:, None], "norm+loss": np.stack([norm, loss], axis=1)}
        probes[site] = {name: run_probe(features[name]) for name in FEATURES}
        cells = cell_means(acts, ck, src, table.shape)
        centroids[site] = {"raw": centroid_order(cells, table, permutations, seed),
                           "centred": centroid_order(source_centred(cells), table,
                                                     permutations, seed)}
    return {
        **out, "left_out": data["left_out"],
        "rows": len(ck), "examples": data["examples"],
        "alpha": alpha, "permutations": permutations,
        "probes": probes, "loss_probe": run_probe(loss[:, None]), "centroids": centroids,
    }
