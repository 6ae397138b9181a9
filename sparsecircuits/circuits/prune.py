"""Task circuits: the smallest set of nodes whose ablated complement still solves a task.

The method of Gao et al. (2025, Appendix A.5), with fixed hyper-parameters
(:class:`PruneConfig`) so that every checkpoint is pruned the same way:

1. Every node at the channel sites (:func:`~sparsecircuits.circuits.graph.channel_sites`:
   residual reads, q/k/v, MLP neurons, residual writes) gets a mask logit. The forward pass
   keeps a node where its logit is positive (Heaviside) and replaces it by its reference mean
   otherwise (:mod:`~sparsecircuits.circuits.ablate`); the backward pass uses the derivative of
   the sigmoid instead of the Heaviside's.
2. The logits are trained with Adam on the task's contrast loss plus ``penalty`` times the
   number of kept nodes, on fresh training rows. The logits start from the previous
   checkpoint's (``warm``, ``steps``) or from N(0.1, 0.01²) (cold, ``cold_steps``).
3. The nodes are sorted by logit and a search on their number finds the smallest top-k
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

Every task is extracted on its own, from its own random stream (of ``seed`` and its name), so a
task's circuit does not depend on which other tasks are extracted with it; ``find_circuits``
runs ``workers`` tasks at once, in threads, each on its own copy of the model with one torch
thread (on two cores, two one-thread tasks side by side take 0.75 of the time of one
two-thread pass over all of them).
"""

from __future__ import annotations

import copy
import math
import queue
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import networkx as nx
import torch
from torch import Tensor

from sparsecircuits.circuits.ablate import (
    EVAL_EXAMPLES,
    evaluate,
    masked_hook,
    mean_activations,
)
from sparsecircuits.circuits.circuit import Circuit
from sparsecircuits.circuits.graph import channel_sites, site_layer, split_node
from sparsecircuits.data.tasks import TaskBatch, contrast_loss, eval_set, train_batch
from sparsecircuits.hooks import HookFn, HookPoint
from sparsecircuits.model import Linear, SparseGPT, restricted_mlps


@dataclass(frozen=True)
class PruneConfig:
    """Fixed hyper-parameters of circuit extraction."""

    target_loss: float = 0.15
    steps: int = 12
    """Mask-training steps from a warm start."""
    cold_steps: int = 60
    """Mask-training steps from a cold start."""
    lr: float = 0.01
    """Adam's learning rate on the mask logits. At 0.02 (30 cold steps) masks collapsed: Adam
    moves every logit the penalty alone pushes by the same step, they cross zero together, the
    trained mask's own node set sits near chance loss and the search climbs to 1,000-2,900
    nodes. On a fresh ``tiny`` run (19 checkpoints, 3 seeds) 21 of 105 solved extractions
    ended above 1,000 nodes at 0.02, 3 at 0.01 with 60 cold steps; the mean node Jaccard
    between seeds rose from 0.50 to 0.64."""
    penalty: float = 3e-4
    """Added to the loss per kept node."""
    rows: int = 16
    """Training rows per task per step."""
    eval_examples: int = EVAL_EXAMPLES
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
    """Distribution of the means: ``task`` (its evaluation prompts) or ``corpus`` (held-out
    corpus windows, Gao et al.'s pretraining mean). On a demo run the corpus mean gave 13 %
    larger circuits (median 296 against 263 nodes) that a random node set of their size came
    closer to (loss 0.98 against 1.16): see ``docs/gao2025_deviations.md``."""
    per_position: bool = False
    max_rows: int = 512
    """Rows per forward pass when many masks are evaluated at once."""
    size_tolerance: float = 0.02
    """The bisection stops once its bracket spans at most this fraction of the upper end (and
    at least one node): the circuit found is at most that much larger than the smallest top-k
    meeting the target, well inside the seed-to-seed spread of circuit sizes."""

    def reference_of(self, task: str) -> str:
        """What the means of ``task``'s circuit are taken over, as :func:`ablate` takes it:
        the task's name (its first ``ablate.REFERENCE_EXAMPLES`` evaluation prompts) or
        ``"corpus"``."""
        if self.reference not in ("task", "corpus"):
            raise ValueError(f"unknown reference {self.reference!r}: task or corpus")
        return task if self.reference == "task" else "corpus"


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
        means = mean_activations(self.model, c.reference_of(task), per_position=c.per_position)
        return torch.cat([means[site] for site in self.sites], dim=-1)

    def losses(self, groups: list[tuple[TaskBatch, Tensor]], baseline: Tensor,
               start: tuple[str, list[Tensor]] | None = None) -> Tensor:
        """Mean contrast loss of every ``(batch, keep [nodes])`` group, pruned nodes replaced
        by ``baseline``, in chunks of at most ``max_rows`` rows (all in one pass when
        gradients are needed). ``start`` (a residual hook and one residual stream per group)
        skips the model up to that hook."""
        per_chunk = max(1, self.config.max_rows // len(groups[0][0].tokens))
        if torch.is_grad_enabled():
            per_chunk = len(groups)
        return torch.cat([
            self._losses(groups[i:i + per_chunk], baseline,
                         None if start is None else (start[0], start[1][i:i + per_chunk]))
            for i in range(0, len(groups), per_chunk)
        ])

    def _hooks(self, keep: Tensor, baseline: Tensor,
               neurons: dict[str, Tensor]) -> list[tuple[str, HookFn]]:
        """Masked hooks for groups with ``keep [groups, nodes]``; at a site in ``neurons``
        only those channels (a restricted MLP's)."""
        hooks = []
        for site, k, b in zip(self.sites, keep.split(self.widths, -1),
                              baseline.split(self.widths, -1), strict=True):
            if site in neurons:
                k, b = k[:, neurons[site]], b[..., neurons[site]]
            positions = b.shape[0] if b.dim() == 2 else 1
            hooks.append((site, masked_hook(k, b.reshape(1, 1, positions, b.shape[-1]))))
        return hooks

    def _restriction(self, keep: Tensor, baseline: Tensor) -> dict[int, tuple[Tensor, Tensor]]:
        """For :func:`~sparsecircuits.model.restricted_mlps`: per block, the neurons some
        group keeps, the others held at their baseline. Empty while gradients are recorded
        (a pruned neuron's mask logit still needs its value); a block whose neurons are
        activation-sparse is left out (which neurons survive depends on all of them)."""
        if torch.is_grad_enabled():
            return {}
        held = {}
        for layer, block in enumerate(self.model.blocks):
            if block.mlp.hook_post.keep:
                continue
            site = f"blocks.{layer}.mlp.hook_post"
            kept = self._site_keep(keep, site).amax(0).nonzero().flatten()
            held[layer] = (kept, self._site_baseline(baseline, site))
        return held

    def _losses(self, groups: list[tuple[TaskBatch, Tensor]], baseline: Tensor,
                start: tuple[str, list[Tensor]] | None) -> Tensor:
        batches, keeps = zip(*groups, strict=True)
        keep = torch.stack(keeps)
        held = self._restriction(keep, baseline)
        neurons = {f"blocks.{layer}.mlp.hook_post": kept for layer, (kept, _) in held.items()}
        tokens = torch.cat([b.tokens for b in batches])
        begin = None if start is None else (start[0], torch.cat(start[1]))
        with restricted_mlps(self.model, held):
            last = self.model.run_with_hooks(tokens, self._hooks(keep, baseline, neurons),
                                             last_only=True, start=begin)[:, -1]
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

        hooks = [*self._hooks(keep[None], baseline, {}), ([*starts, *writes], record)]
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

    def train_logits(self, task: str, start: Tensor, steps: int, generator: torch.Generator,
                     baseline: Tensor) -> Tensor:
        """Mask logits ``[nodes]`` after ``steps`` Adam steps from ``start``, the training rows
        of ``task`` drawn from ``generator``."""
        c = self.config
        logits = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([logits], lr=c.lr)
        for _ in range(steps):
            keep = _Heaviside.apply(logits)
            batch = train_batch(task, c.rows, self.model.cfg.n_ctx, generator)
            loss = self.losses([(batch, keep)], baseline).sum()
            optimizer.zero_grad()
            (loss + c.penalty * keep.sum()).backward()
            optimizer.step()
            with torch.no_grad():
                logits.clamp_(-1.0, 1.0)
        return logits.detach()

    @torch.no_grad()
    def smallest(self, batch: TaskBatch, logits: Tensor, baseline: Tensor,
                 loss_full: float) -> tuple[Tensor, float]:
        """The smallest top-k of ``logits`` meeting the target loss, as a keep vector, and its
        loss. The whole model (k = all nodes, loss ``loss_full``) meets the target by
        assumption, and the loss is taken to fall as k grows.

        The first size tried is the number of positive logits, the trained mask's own size;
        while every size tried has met the target, the next is three quarters of the last
        (trained masks keep 0.6 to 0.85 of the nodes the search settles on); after that, a
        bisection (:func:`_midpoint`) until the bracket is within ``size_tolerance``."""
        order = logits.argsort(descending=True, stable=True)
        lo, hi, hi_loss = 0, len(order), loss_full
        k = max(1, int((logits > 0).sum()))
        while hi - lo > max(1, math.floor(self.config.size_tolerance * hi)):
            if not lo < k < hi:
                k = _midpoint(lo, hi)
            loss = float(self.losses([(batch, _top(order, k))], baseline))
            if loss <= self.config.target_loss:
                hi, hi_loss = k, loss
            else:
                lo = k
            k = 3 * hi // 4 if lo == 0 else _midpoint(lo, hi)
        return _top(order, hi), hi_loss


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
    workers: int = 1,
    on_found: Callable[[Circuit], None] | None = None,
) -> dict[str, Circuit]:
    """The circuit of every task (:func:`find_circuit`), ``workers`` tasks at a time.

    ``warm`` maps tasks to the mask logits of the previous checkpoint. With ``workers`` > 1
    the tasks run in that many threads, each on its own copy of the model, with torch's
    thread count set to one meanwhile (restored after). ``on_found`` is called with each
    circuit as soon as it is found, in the thread that found it (to write it to disk while
    the other tasks run)."""
    warm = warm or {}

    def extract(on: SparseGPT, task: str) -> Circuit:
        circuit = find_circuit(on, task, weight_graph, seed=seed, warm=warm.get(task),
                               config=config)
        if on_found is not None:
            on_found(circuit)
        return circuit

    workers = min(workers, len(tasks))
    if workers <= 1:
        return {task: extract(model, task) for task in tasks}
    copies: queue.SimpleQueue[SparseGPT] = queue.SimpleQueue()
    for _ in range(workers):
        copies.put(copy.deepcopy(model))

    def on_a_copy(task: str) -> Circuit:
        mine = copies.get()
        try:
            return extract(mine, task)
        finally:
            copies.put(mine)

    longest_first = sorted(tasks, key=lambda task: task in warm)  # cold tasks train longer
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            found = dict(zip(longest_first, pool.map(on_a_copy, longest_first), strict=True))
    finally:
        torch.set_num_threads(threads)
    return {task: found[task] for task in tasks}


def find_circuit(
    model: SparseGPT,
    task: str,
    weight_graph: nx.DiGraph,
    *,
    seed: int = 0,
    warm: Tensor | None = None,
    config: PruneConfig | None = None,
) -> Circuit:
    """The circuit of ``task`` (see module doc). ``warm``: the mask logits of the previous
    checkpoint (``steps`` of training); without, a cold start (``cold_steps``)."""
    config = config or PruneConfig()
    pruner = _Pruner(model, config)
    nodes = node_ids(model)
    with _frozen(model):
        loss_full = evaluate(model, task, config.eval_examples)[0]
        if loss_full > config.target_loss:
            return Circuit(task, _circuit_graph(weight_graph, [], config, task, seed, False,
                                                loss_full), None)
        evals = eval_set(task, model.cfg.n_ctx, config.eval_examples)
        baseline = pruner.baseline(task)
        generator = _task_generator(seed, task)
        start, steps = warm, config.steps
        if start is None:
            start = 0.1 + 0.01 * torch.randn(len(nodes), generator=generator)
            steps = config.cold_steps
        logits = pruner.train_logits(task, start, steps, generator, baseline)
        keep, loss_circuit = pruner.smallest(evals, logits, baseline, loss_full)
        importances = _importances(pruner, task, keep, logits, baseline, nodes)
        with torch.no_grad():
            control = _random_like(keep, generator)
            loss_ablated, loss_random = pruner.losses(
                [(evals, 1 - keep), (evals, control)], baseline).tolist()
    kept = [nodes[j] for j in keep.nonzero().flatten().tolist()]
    graph = _circuit_graph(weight_graph, kept, config, task, seed, True, loss_full,
                           loss_circuit=loss_circuit, loss_ablated=loss_ablated,
                           loss_random=loss_random)
    nx.set_node_attributes(graph, None, "importance")
    nx.set_node_attributes(graph, importances, "importance")
    return Circuit(task, graph, logits)


@torch.no_grad()
def _importances(pruner: _Pruner, task: str, keep: Tensor, logits: Tensor, baseline: Tensor,
                 nodes: list[str]) -> dict[str, float]:
    """Loss increase, on ``importance_examples`` prompts, when one node leaves its circuit
    (for at most ``max_importance_nodes`` of them, those with the largest logits).

    Each ablation starts where the node can first change anything
    (:meth:`_Pruner.ablation_start`), from one masked pass of the circuit."""
    c = pruner.config
    batch = eval_set(task, pruner.model.cfg.n_ctx, c.importance_examples)
    run = pruner.circuit_pass(batch, keep, baseline)
    members = keep.nonzero().flatten()
    ranked = members[logits[members].argsort(descending=True, stable=True)]
    by_start: dict[str | None, list[tuple[int, Tensor | None]]] = {}
    for j in ranked[: c.max_importance_nodes].tolist():
        start = pruner.ablation_start(nodes[j], run)
        name, resid = (None, None) if start is None else start
        by_start.setdefault(name, []).append((j, resid))
    out: dict[str, float] = {}
    for name, here in by_start.items():
        groups = []
        for j, _ in here:
            without = keep.clone()
            without[j] = 0.0
            groups.append((batch, without))
        begin = None if name is None else (name, [resid for _, resid in here])
        losses = pruner.losses(groups, baseline, begin).tolist()
        for (j, _), loss in zip(here, losses, strict=True):
            out[nodes[j]] = loss - run.loss
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
        method=config.method, reference=config.reference_of(task),
        per_position=config.per_position, n_eval=config.eval_examples,
    )
    return graph
