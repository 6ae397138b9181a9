"""Task circuits: the smallest set of nodes whose ablated complement still solves a task.

The method of Gao et al. (2025, Appendix A.5; ``notes/circuit_sparsity.md`` §2), with fixed
hyper-parameters (:class:`PruneConfig`) so that every checkpoint is pruned the same way:

1. Every node at the channel sites (:func:`~sparsecircuits.circuits.graph.channel_sites`:
   residual reads, q/k/v, MLP neurons, residual writes) gets a mask logit. The forward pass
   keeps a node where its logit is positive (Heaviside) and replaces it by its reference mean
   otherwise (:mod:`~sparsecircuits.circuits.ablate`); the backward pass uses the derivative of
   the sigmoid instead of the Heaviside's.
2. The logits are trained with Adam on the task's contrast loss plus ``penalty`` times the
   number of kept nodes, on fresh training rows. The logits start from the previous
   checkpoint's (``warm``, ``steps``) or from N(0.1, 0.01²) (cold, ``cold_steps``). Tasks
   with the same number of steps train in one batched pass, each a group of rows with its own
   masks; every task draws from its own random stream (of ``seed`` and its name), so a task's
   circuit does not depend on which other tasks are extracted with it.
3. The nodes are sorted by logit and a bisection on their number finds the smallest top-k
   whose contrast loss on the task's fixed evaluation prompts is at most ``target_loss`` (to
   within ``size_tolerance``). A task the whole model misses is returned *unsolved*, with no
   circuit.
4. Each circuit node's importance is the loss increase when that node alone is removed from
   the circuit. Faithfulness: the loss with only the circuit kept (sufficiency), with the
   circuit ablated and the rest kept (necessity), and with a random node set of the same size
   kept (control).

The reference distribution of the means is the task's evaluation prompts (``reference="task"``)
or the held-out corpus (``"corpus"``); means are over positions and examples unless
``per_position``. ``method="zero"`` replaces pruned nodes by 0 instead.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import networkx as nx
import torch
from torch import Tensor

from sparsecircuits.circuits.ablate import (
    REFERENCE_EXAMPLES,
    masked_hook,
    mean_activations,
)
from sparsecircuits.circuits.graph import channel_sites, site_layer, split_node
from sparsecircuits.data.tasks import TaskBatch, contrast_loss, eval_set, train_batch
from sparsecircuits.hooks import HookFn, HookPoint
from sparsecircuits.model import Linear, SparseGPT


@dataclass(frozen=True)
class PruneConfig:
    """Fixed hyper-parameters of circuit extraction."""

    target_loss: float = 0.15
    steps: int = 12
    """Mask-training steps from a warm start."""
    cold_steps: int = 30
    """Mask-training steps from a cold start."""
    lr: float = 0.02
    penalty: float = 3e-4
    """Added to the loss per kept node."""
    rows: int = 16
    """Training rows per task per step."""
    eval_examples: int = 64
    """Evaluation prompts for the bisection and the faithfulness losses."""
    importance_examples: int = 8
    """Evaluation prompts for the per-node importances."""
    max_importance_nodes: int = 512
    """Importance is measured for at most this many circuit nodes (those with the largest
    mask logits); the others get ``importance`` None. A circuit this large is no longer
    sparse, and each importance costs a forward pass."""
    method: str = "mean"
    """How pruned nodes are replaced: ``mean`` or ``zero``."""
    reference: str = "task"
    """Distribution of the means: ``task`` (its evaluation prompts) or ``corpus``."""
    per_position: bool = False
    max_rows: int = 512
    """Rows per forward pass when many masks are evaluated at once."""
    size_tolerance: float = 0.02
    """The bisection stops once its bracket spans at most this fraction of the upper end (and
    at least one node): the circuit found is at most that much larger than the smallest top-k
    meeting the target, well inside the seed-to-seed spread of circuit sizes."""

    def describe_reference(self) -> str:
        """The ablation baseline in words, as stored with every circuit."""
        if self.method == "zero":
            return "zero"
        where = ("the task's first {n} evaluation prompts" if self.reference == "task"
                 else "{n} held-out corpus windows").format(n=REFERENCE_EXAMPLES)
        per = "per position" if self.per_position else "over positions and examples"
        return f"mean {per} of {where}"


@dataclass
class Circuit:
    """A task's circuit at one checkpoint; ``graph`` is the circuit subgraph of the weight
    graph, with node attribute ``importance`` and the faithfulness numbers as graph
    attributes (``solved``, ``loss_full``, ``loss_circuit``, ...). ``logits`` are the trained
    mask logits over :func:`node_ids`, for a warm start (None when unsolved)."""

    task: str
    graph: nx.DiGraph
    logits: Tensor | None


@dataclass
class CircuitPass:
    """What one masked forward pass of a circuit keeps for its single-node ablations: the
    loss, the values at the residual hooks a pass can start from and at the residual writes
    and MLP neurons (after masking), and the mask and baseline used."""

    loss: float
    values: dict[str, Tensor]
    keep: Tensor
    baseline: Tensor


class _Heaviside(torch.autograd.Function):
    """1 where x > 0, else 0; backward: the sigmoid's derivative."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1 - s)


def node_ids(model: SparseGPT) -> list[str]:
    """The prunable nodes, in the order of the mask logits."""
    return [f"{site}:{c}" for site, n in channel_sites(model.cfg).items() for c in range(n)]


@contextmanager
def _frozen(model: SparseGPT) -> Iterator[None]:
    """No weight gradients, and dense products: on CPU at these sizes the dense product is
    several times faster than the sparse kernels, and computes the same function."""
    flags = [p.requires_grad for p in model.parameters()]
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    backends = [m.backend for m in linears]
    model.requires_grad_(False)
    for m in linears:
        m.backend = "dense"
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        for m, backend in zip(linears, backends, strict=True):
            m.backend = backend


class _Pruner:
    """Masked forward passes over groups of rows, each group a task with its own node mask."""

    def __init__(self, model: SparseGPT, config: PruneConfig) -> None:
        self.model, self.config = model, config
        self.widths = list(channel_sites(model.cfg).values())
        self.sites = list(channel_sites(model.cfg))

    def baseline(self, task: str) -> Tensor:
        """What a pruned node of ``task`` becomes: ``[nodes]`` or ``[position, nodes]``."""
        c = self.config
        if c.method == "zero":
            return torch.zeros(sum(self.widths))
        if c.reference not in ("task", "corpus"):
            raise ValueError(f"unknown reference {c.reference!r}: task or corpus")
        reference = task if c.reference == "task" else "corpus"
        means = mean_activations(self.model, reference, per_position=c.per_position)
        return torch.cat([means[site] for site in self.sites], dim=-1)

    def losses(self, groups: list[tuple[TaskBatch, Tensor, Tensor]],
               start: tuple[str, list[Tensor]] | None = None) -> Tensor:
        """Mean contrast loss of every ``(batch, keep [nodes], baseline)`` group, in chunks
        of at most ``max_rows`` rows (all in one pass when gradients are needed). ``start``
        (a residual hook and one residual stream per group) skips the model up to that hook."""
        per_chunk = max(1, self.config.max_rows // len(groups[0][0].tokens))
        if torch.is_grad_enabled():
            per_chunk = len(groups)
        return torch.cat([
            self._losses(groups[i:i + per_chunk],
                         None if start is None else (start[0], start[1][i:i + per_chunk]))
            for i in range(0, len(groups), per_chunk)
        ])

    def _hooks(self, keep: Tensor, baseline: Tensor) -> list[tuple[str, HookFn]]:
        """Masked hooks for groups with ``keep [groups, nodes]`` and stacked baselines."""
        baseline = baseline.reshape(len(keep), 1, -1, baseline.shape[-1])
        return [
            (site, masked_hook(k, b))
            for site, k, b in zip(self.sites, keep.split(self.widths, -1),
                                  baseline.split(self.widths, -1), strict=True)
        ]

    def _losses(self, groups: list[tuple[TaskBatch, Tensor, Tensor]],
                start: tuple[str, list[Tensor]] | None) -> Tensor:
        batches, keeps, baselines = zip(*groups, strict=True)
        hooks = self._hooks(torch.stack(keeps), torch.stack(baselines))
        tokens = torch.cat([b.tokens for b in batches])
        begin = None if start is None else (start[0], torch.cat(start[1]))
        last = self.model.run_with_hooks(tokens, hooks, last_only=True, start=begin)[:, -1]
        correct = torch.cat([b.correct for b in batches])
        wrong = torch.cat([b.wrong for b in batches])
        return contrast_loss(last, correct, wrong).reshape(len(groups), -1).mean(1)

    @torch.no_grad()
    def circuit_pass(self, batch: TaskBatch, keep: Tensor, baseline: Tensor) -> CircuitPass:
        """One masked forward pass, keeping what single-node ablations can start from."""
        n = self.model.cfg.n_layers
        starts = list(self.model.residual_starts())
        writes = [f"blocks.{i}.{site}" for i in range(n)
                  for site in ("hook_attn_out", "mlp.hook_post", "hook_mlp_out")]
        values: dict[str, Tensor] = {}

        def record(x: Tensor, hook: HookPoint) -> None:
            values[hook.name] = x  # after masking: a circuit node's own value

        hooks = [*self._hooks(keep[None], baseline[None]), ([*starts, *writes], record)]
        last = self.model.run_with_hooks(batch.tokens, hooks, last_only=True)[:, -1]
        loss = float(contrast_loss(last, batch.correct, batch.wrong).mean())
        return CircuitPass(loss, values, keep, baseline)

    def ablation_start(self, node: str, run: CircuitPass) -> tuple[str, Tensor] | None:
        """Where the forward pass of ``run``'s circuit without ``node`` can start: a residual
        hook and the stream there (None: from the tokens).

        Nothing before a node changes. A residual write (attention or MLP output channel) or
        an MLP neuron changes the stream linearly, by a known amount, up to the next
        nonlinearity, so its ablation starts after it with that change added: at the middle
        of the block for attention output, at the next block for the MLP (unless the MLP
        output is activation-sparse, for a neuron). A read into the MLP starts at the middle
        of its block."""
        cfg = self.model.cfg
        site, index = split_node(node)
        layer = site_layer(site, cfg)
        if layer >= cfg.n_layers:  # ln_final
            return self._start(run, cfg.n_layers - 1, "post")
        block = self.model.blocks[layer]
        prefix = f"blocks.{layer}"
        if site == f"{prefix}.ln2.hook_normalized":
            return self._start(run, layer, "mid")
        if site == f"{prefix}.hook_attn_out":
            return self._start(run, layer, "mid", site, index, self._unit(index))
        if site == f"{prefix}.hook_mlp_out":
            return self._start(run, layer, "post", site, index, self._unit(index))
        if site == f"{prefix}.mlp.hook_post" and not block.hook_mlp_out.keep:
            kept = self._site_keep(run.keep, f"{prefix}.hook_mlp_out")
            return self._start(run, layer, "post", site, index, block.mlp.fc_out.W[:, index] * kept)
        return None if layer == 0 else self._start(run, layer, "pre")

    def _start(self, run: CircuitPass, layer: int, where: str, site: str | None = None,
               index: int = 0, direction: Tensor | None = None) -> tuple[str, Tensor]:
        """Block ``layer``'s residual hook ``where`` (``pre``, ``mid``, or ``post``: entering
        the next block or ``ln_final``) and the circuit's stream there, moved by replacing
        ``site:index`` with its baseline along ``direction`` when a site is given."""
        n = self.model.cfg.n_layers
        if where != "post":
            name = f"blocks.{layer}.hook_resid_{where}"
        elif layer + 1 < n:
            name = f"blocks.{layer + 1}.hook_resid_pre"
        else:
            name = f"blocks.{n - 1}.hook_resid_post"
        resid = run.values[name]
        if site is None or direction is None:
            return name, resid
        value = run.values[site][..., index]
        replacement = self._site_baseline(run.baseline, site)[..., index]
        if replacement.dim():  # per position: the positions this pass computed are the last
            replacement = replacement[-value.shape[-1]:]
        return name, resid + (replacement - value)[..., None] * direction

    def _unit(self, index: int) -> Tensor:
        unit = torch.zeros(self.model.cfg.d_model)
        unit[index] = 1.0
        return unit

    def _site_keep(self, keep: Tensor, site: str) -> Tensor:
        return keep.split(self.widths, -1)[self.sites.index(site)]

    def _site_baseline(self, baseline: Tensor, site: str) -> Tensor:
        return baseline.split(self.widths, -1)[self.sites.index(site)]

    def train_logits(self, tasks: list[str], start: Tensor, steps: list[int],
                     generators: list[torch.Generator], baselines: list[Tensor]) -> Tensor:
        """Mask logits ``[tasks, nodes]`` after ``steps[i]`` Adam steps of task ``i`` from
        ``start``, its training rows drawn from ``generators[i]``."""
        logits = start.clone()
        for count in sorted(set(steps)):
            group = [i for i, n in enumerate(steps) if n == count]
            logits[group] = self._train_group([tasks[i] for i in group], start[group], count,
                                              [generators[i] for i in group],
                                              [baselines[i] for i in group])
        return logits

    def _train_group(self, tasks: list[str], start: Tensor, steps: int,
                     generators: list[torch.Generator], baselines: list[Tensor]) -> Tensor:
        c = self.config
        logits = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([logits], lr=c.lr)
        ctx = self.model.cfg.n_ctx
        for _ in range(steps):
            keep = _Heaviside.apply(logits)
            batches = [train_batch(task, c.rows, ctx, generator)
                       for task, generator in zip(tasks, generators, strict=True)]
            loss = self.losses(list(zip(batches, keep, baselines, strict=True))).sum()
            optimizer.zero_grad()
            (loss + c.penalty * keep.sum()).backward()
            optimizer.step()
            with torch.no_grad():
                logits.clamp_(-1.0, 1.0)
        return logits.detach()

    @torch.no_grad()
    def smallest(self, batches: list[TaskBatch], logits: Tensor, baselines: list[Tensor],
                 full_losses: list[float]) -> tuple[list[Tensor], list[float]]:
        """Per task, the smallest top-k of the logits meeting the target loss, as a keep
        vector, and its loss; all tasks bisect in lockstep, one pass per round. The whole
        model (k = all nodes, loss ``full_losses``) meets the target by assumption."""
        n_tasks, n_nodes = logits.shape
        order = logits.argsort(dim=1, descending=True, stable=True)
        lo, hi = [0] * n_tasks, [n_nodes] * n_tasks
        hi_loss = list(full_losses)
        guess = [int(k) for k in (logits > 0).sum(1).clamp(min=1).tolist()]
        while True:
            slack = [max(1, math.floor(self.config.size_tolerance * h)) for h in hi]
            trying = [t for t in range(n_tasks) if hi[t] - lo[t] > slack[t]]
            if not trying:
                break
            ks = {t: guess[t] if lo[t] < guess[t] < hi[t] else _midpoint(lo[t], hi[t])
                  for t in trying}
            losses = self.losses([(batches[t], _top(order[t], ks[t]), baselines[t])
                                  for t in trying])
            for t, loss in zip(trying, losses.tolist(), strict=True):
                if loss <= self.config.target_loss:
                    hi[t], hi_loss[t] = ks[t], loss
                else:
                    lo[t] = ks[t]
        return [_top(order[t], hi[t]) for t in range(n_tasks)], hi_loss


def _midpoint(lo: int, hi: int) -> int:
    """Geometric midpoint while the bracket spans more than a factor 2, else arithmetic."""
    if hi > 2 * max(lo, 1):
        return min(hi - 1, max(lo + 1, round(math.sqrt(max(lo, 1) * hi))))
    return (lo + hi) // 2


def _top(order: Tensor, k: int) -> Tensor:
    keep = torch.zeros(len(order))
    keep[order[:k]] = 1.0
    return keep


def find_circuits(
    model: SparseGPT,
    tasks: list[str],
    weight_graph: nx.DiGraph,
    *,
    seed: int = 0,
    warm: dict[str, Tensor] | None = None,
    config: PruneConfig | None = None,
) -> dict[str, Circuit]:
    """The circuit of every task (see module doc), the tasks batched together.

    ``warm`` maps tasks to the mask logits of the previous checkpoint (``steps`` of training);
    tasks without one start cold (``cold_steps``)."""
    config = config or PruneConfig()
    warm = warm or {}
    pruner = _Pruner(model, config)
    nodes = node_ids(model)
    ctx = model.cfg.n_ctx
    with _frozen(model):
        evals = {t: eval_set(t, ctx, config.eval_examples) for t in tasks}
        baselines = {t: pruner.baseline(t) for t in tasks}
        everything = torch.ones(len(nodes))
        with torch.no_grad():
            full = pruner.losses([(evals[t], everything, baselines[t]) for t in tasks]).tolist()
        loss_full = dict(zip(tasks, full, strict=True))
        solved = [t for t in tasks if loss_full[t] <= config.target_loss]
        circuits = {
            t: Circuit(t, _circuit_graph(weight_graph, [], config, t, seed, False, loss_full[t]),
                       None)
            for t in tasks if t not in solved
        }
        if not solved:
            return circuits
        generators = [_task_generator(seed, t) for t in solved]
        start = torch.stack([
            warm[t].clone() if t in warm else 0.1 + 0.01 * torch.randn(len(nodes), generator=g)
            for t, g in zip(solved, generators, strict=True)
        ])
        steps = [config.steps if t in warm else config.cold_steps for t in solved]
        solved_baselines = [baselines[t] for t in solved]
        logits = pruner.train_logits(solved, start, steps, generators, solved_baselines)
        keeps, circuit_losses = pruner.smallest([evals[t] for t in solved], logits,
                                                solved_baselines, [loss_full[t] for t in solved])
        importances = _importances(pruner, solved, keeps, logits, solved_baselines, nodes)
        with torch.no_grad():
            controls = [_random_like(keep, g) for keep, g in zip(keeps, generators, strict=True)]
            checks = pruner.losses(
                [(evals[t], 1 - keep, baselines[t]) for t, keep in zip(solved, keeps, strict=True)]
                + [(evals[t], r, baselines[t]) for t, r in zip(solved, controls, strict=True)]
            ).tolist()
    for i, t in enumerate(solved):
        kept = [nodes[j] for j in keeps[i].nonzero().flatten().tolist()]
        graph = _circuit_graph(weight_graph, kept, config, t, seed, True, loss_full[t],
                               loss_circuit=circuit_losses[i], loss_ablated=checks[i],
                               loss_random=checks[len(solved) + i])
        nx.set_node_attributes(graph, None, "importance")
        nx.set_node_attributes(graph, importances[i], "importance")
        circuits[t] = Circuit(t, graph, logits[i])
    return circuits


@torch.no_grad()
def _importances(pruner: _Pruner, tasks: list[str], keeps: list[Tensor], logits: Tensor,
                 baselines: list[Tensor], nodes: list[str]) -> list[dict[str, float]]:
    """Loss increase, on ``importance_examples`` prompts, when one node leaves its circuit.

    Each ablation starts where the node can first change anything
    (:meth:`_Pruner.ablation_start`), from one masked pass of the circuit per task."""
    c, cfg = pruner.config, pruner.model.cfg
    out: list[dict[str, float]] = [{} for _ in tasks]
    for t, (task, keep, baseline) in enumerate(zip(tasks, keeps, baselines, strict=True)):
        batch = eval_set(task, cfg.n_ctx, c.importance_examples)
        run = pruner.circuit_pass(batch, keep, baseline)
        members = keep.nonzero().flatten()
        ranked = members[logits[t, members].argsort(descending=True, stable=True)]
        by_start: dict[str | None, list[tuple[int, Tensor | None]]] = {}
        for j in ranked[: c.max_importance_nodes].tolist():
            start = pruner.ablation_start(nodes[j], run)
            name, resid = (None, None) if start is None else start
            by_start.setdefault(name, []).append((j, resid))
        for name, members_here in by_start.items():
            groups = []
            for j, _ in members_here:
                without = keep.clone()
                without[j] = 0.0
                groups.append((batch, without, baseline))
            begin = None if name is None else (name, [resid for _, resid in members_here])
            losses = pruner.losses(groups, begin).tolist()
            for (j, _), loss in zip(members_here, losses, strict=True):
                out[t][nodes[j]] = loss - run.loss
    return out


def _task_generator(seed: int, task: str) -> torch.Generator:
    """The random stream of one task's extraction: a function of the seed and the task name."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(task.encode()))


def _random_like(keep: Tensor, generator: torch.Generator) -> Tensor:
    """A random keep vector with as many nodes as ``keep``."""
    return _top(torch.randperm(len(keep), generator=generator), int(keep.sum()))


def _circuit_graph(
    weight_graph: nx.DiGraph, kept: list[str], config: PruneConfig, task: str, seed: int,
    solved: bool, loss_full: float, **losses: float,
) -> nx.DiGraph:
    graph = weight_graph.subgraph(kept).copy()
    graph.graph.update(
        task=task, seed=seed, target_loss=config.target_loss, solved=solved,
        loss_full=loss_full, loss_circuit=losses.get("loss_circuit"),
        loss_ablated=losses.get("loss_ablated"), loss_random=losses.get("loss_random"),
        n_nodes=graph.number_of_nodes(), n_edges=graph.number_of_edges(),
        ablation=config.method, reference=config.describe_reference(),
    )
    return graph
