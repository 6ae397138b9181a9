"""Ablation of nodes and edges, mean activations over a reference distribution, evaluation.

A node (``"blocks.0.mlp.hook_post:180"``, see :mod:`sparsecircuits.circuits.graph`) is ablated
at its hook point, at every position:

- ``zero``: the channel is set to 0;
- ``mean``: the channel is set to its mean over a *reference* distribution: by default over
  positions and examples, or, with ``per_position=True``, per position (this hands the ablated
  model position-specific information for free: a pilot's circuits kept no query channel);
- ``resample``: the channel takes its value on another example of the reference (drawn with a
  fixed seed), at the same position.

A reference is a task name (the first :data:`REFERENCE_EXAMPLES` prompts of the task's fixed
evaluation set), ``"corpus"`` (:data:`REFERENCE_EXAMPLES` fixed windows of the held-out standard
library corpus), or a ``[n, position]`` token tensor. Means of named references are cached per
model object and recomputed whenever a parameter has changed, so they are cached per
checkpoint.

An edge ``(source id, target id)`` is one weight; ablating it sets that weight to 0 for the
duration of the block, whatever the method (residual and qk edges carry no weight of their own
and cannot be ablated).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor

from sparsecircuits.circuits.circuit import Circuit
from sparsecircuits.circuits.graph import channel_sites, split_node, weight_site
from sparsecircuits.data.corpus import lm_windows, load_corpus
from sparsecircuits.data.tasks import contrast_accuracy, contrast_loss, eval_set
from sparsecircuits.hooks import HookFn, HookPoint
from sparsecircuits.model import SparseGPT

Method = Literal["zero", "mean", "resample"]
Reference = str | Tensor
Target = str | tuple[str, str]

REFERENCE_EXAMPLES = 64
"""Examples (task prompts or corpus windows) in a named reference distribution."""
EVAL_EXAMPLES = 64
"""Evaluation prompts :func:`evaluate` and circuit extraction score a task on by default."""

_MEANS: weakref.WeakKeyDictionary[SparseGPT, dict[tuple, dict[str, Tensor]]] = (
    weakref.WeakKeyDictionary()
)


def reference_tokens(reference: Reference, ctx: int) -> Tensor:
    """The ``[n, ctx]`` tokens of a reference (see module doc)."""
    if isinstance(reference, Tensor):
        return reference
    if reference == "corpus":
        windows = lm_windows(load_corpus().heldout, REFERENCE_EXAMPLES, ctx,
                             torch.Generator().manual_seed(0))
        return windows[:, :-1]
    return eval_set(reference, ctx, REFERENCE_EXAMPLES).tokens


def _version(model: SparseGPT) -> tuple[int, ...]:
    return tuple(p._version for p in model.parameters())


@torch.no_grad()
def mean_activations(
    model: SparseGPT, reference: Reference, *, per_position: bool = False
) -> dict[str, Tensor]:
    """Mean of every ``[batch, position, channel]`` hook over the reference: ``[channel]``, or
    ``[position, channel]`` with ``per_position``."""
    version = _version(model)
    key = (reference, per_position, version)
    cached = _MEANS.setdefault(model, {}) if isinstance(reference, str) else {}
    for stale in [k for k in cached if k[2] != version]:
        del cached[stale]
    if key not in cached:
        means: dict[str, Tensor] = {}

        def record(x: Tensor, hook: HookPoint) -> None:
            means[hook.name] = x.mean(0) if per_position else x.mean((0, 1))

        sites = model.hook_names(lambda name: not name.endswith("hook_pattern"))
        model.run_with_hooks(reference_tokens(reference, model.cfg.n_ctx), [(sites, record)])
        cached[key] = means
    return cached[key]


def masked_hook(keep: Tensor, replacement: Tensor) -> HookFn:
    """A hook for a batch of ``groups`` consecutive row groups: channel ``c`` of group ``g``
    is kept where ``keep[g, c]`` is 1 and replaced where it is 0 (in between, mixed; this is
    what makes a learned mask differentiable).

    ``keep`` is ``[groups, channel]``; ``replacement`` broadcasts against
    ``[groups, rows, position, channel]``. Where the hook sees fewer positions than a
    per-position replacement holds (a ``last_only`` forward), they are the last ones."""

    def fn(x: Tensor, hook: HookPoint) -> Tensor:
        grouped = x.reshape(len(keep), len(x) // len(keep), *x.shape[1:])
        value = replacement
        if value.dim() >= 2 and value.shape[-2] > grouped.shape[-2]:
            value = value[..., -grouped.shape[-2]:, :]
        return torch.lerp(value.expand_as(grouped), grouped, keep[:, None, None, :]
                          ).reshape(x.shape)

    return fn


def _node_hooks(
    model: SparseGPT, nodes: list[str], method: Method, reference: Reference | None,
    per_position: bool, seed: int,
) -> list[tuple[str, HookFn]]:
    by_site: dict[str, list[int]] = {}
    widths = hook_widths(model)
    for node in nodes:
        site, index = _parse_node(node)
        if site not in widths:
            raise ValueError(f"{node}: {site} is not a channel hook point; only channels can be "
                             "ablated (see model.hook_names())")
        if not 0 <= index < widths[site]:
            raise ValueError(f"{node}: channel {index} is out of range; {site} has channels "
                             f"0..{widths[site] - 1}")
        by_site.setdefault(site, []).append(index)
    if not by_site:
        return []
    if method != "zero" and reference is None:
        raise ValueError(f"method {method!r} needs a reference distribution")
    if method == "mean":
        means = mean_activations(model, reference, per_position=per_position)
    elif method == "resample":
        _, activations = model.run_with_cache(
            reference_tokens(reference, model.cfg.n_ctx), list(by_site))

    def replacement(site: str, x: Tensor) -> Tensor:
        if method == "zero":
            return x.new_zeros(())
        if method == "mean":
            return means[site].reshape(1, 1, -1, x.shape[-1])
        rows = torch.randint(len(activations[site]), (x.shape[0],),
                             generator=torch.Generator().manual_seed(seed))
        return activations[site][rows].unsqueeze(0)

    def hook(site: str, indices: list[int]) -> HookFn:
        def fn(x: Tensor, point: HookPoint) -> Tensor:
            keep = torch.ones(1, x.shape[-1], dtype=x.dtype)
            keep[0, indices] = 0.0
            return masked_hook(keep, replacement(site, x))(x, point)

        return fn

    return [(site, hook(site, indices)) for site, indices in by_site.items()]


def hook_widths(model: SparseGPT) -> dict[str, int]:
    """Channels of every ``[batch, position, channel]`` hook point of ``model``."""
    cfg = model.cfg
    heads, widths = cfg.n_heads * cfg.d_head, {}
    for name in model.hook_names(lambda name: not name.endswith("hook_pattern")):
        last = name.rsplit(".", 1)[-1]
        widths[name] = (heads if last in ("hook_q", "hook_k", "hook_v", "hook_z")
                        else cfg.d_mlp if last in ("hook_pre", "hook_post") and ".mlp." in name
                        else cfg.d_model)
    return widths


def _parse_node(node: str) -> tuple[str, int]:
    try:
        return split_node(node)
    except ValueError:
        raise ValueError(f"{node!r} is not a node id: <hook name>:<channel>, e.g. "
                         "'blocks.0.mlp.hook_post:3'") from None


@contextmanager
def _zeroed_weights(model: SparseGPT, edges: list[tuple[str, str]]) -> Iterator[None]:
    saved: list[tuple[Tensor, tuple[int, int], Tensor]] = []
    with torch.no_grad():
        for source, target in edges:
            (s_site, s), (t_site, t) = split_node(source), split_node(target)
            site = weight_site(model.cfg, s_site, t_site)
            param, index = model.get_parameter(site.param), site.index(s, t)
            saved.append((param, index, param[index].clone()))
            param[index] = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for param, index, value in reversed(saved):
                param[index] = value


@contextmanager
def ablate(
    model: SparseGPT,
    targets: Circuit | str | Iterable[Target] = (),
    method: Method | None = None,
    reference: Reference | None = None,
    *,
    keep: Circuit | Iterable[str] | None = None,
    per_position: bool | None = None,
    seed: int = 0,
) -> Iterator[None]:
    """Ablate nodes (ids) and edges (``(source, target)`` id pairs) inside the block.

    ``targets`` may be one node id, a list of nodes and edges, or a :class:`Circuit` (its
    nodes: necessity). ``keep=`` instead ablates every channel node *not* kept (sufficiency),
    as circuit extraction does. A circuit supplies its own ``method``, ``reference`` and
    ``per_position`` (those it was extracted with) unless given here; otherwise ``method``
    defaults to ``zero``. ``method`` and ``reference`` apply to nodes (see module doc); edges
    are always zeroed and restored on exit."""
    source = keep if isinstance(keep, Circuit) else targets
    if isinstance(source, Circuit):
        method = method or source.attrs.get("method", "mean")
        reference = reference if reference is not None else source.attrs.get("reference")
        if per_position is None:
            per_position = bool(source.attrs.get("per_position", False))
    method, per_position = method or "zero", bool(per_position)
    if method not in ("zero", "mean", "resample"):
        raise ValueError(f"unknown ablation method {method!r}: zero, mean or resample")
    if isinstance(targets, Circuit):
        targets = targets.nodes
    elif isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if keep is not None:
        kept = set(keep.nodes if isinstance(keep, Circuit) else keep)
        targets += [f"{site}:{c}" for site, n in channel_sites(model.cfg).items()
                    for c in range(n) if f"{site}:{c}" not in kept]
    nodes = [t for t in targets if isinstance(t, str)]
    edges = [t for t in targets if not isinstance(t, str)]
    hooks = _node_hooks(model, nodes, method, reference, per_position, seed)
    with _zeroed_weights(model, edges), model.hooks(hooks):
        yield


@torch.no_grad()
def evaluate(model: SparseGPT, task: str, n: int = EVAL_EXAMPLES) -> tuple[float, float]:
    """Contrast loss and accuracy of ``model`` (with whatever hooks are attached) on the first
    ``n`` prompts of the task's fixed evaluation set (by default those circuit extraction
    scores a circuit on, so inside ``ablate(model, keep=circuit)`` this reproduces the
    circuit's stored ``loss_circuit``)."""
    batch = eval_set(task, model.cfg.n_ctx, n)
    last = model(batch.tokens, last_only=True)[:, -1]
    return (float(contrast_loss(last, batch.correct, batch.wrong).mean()),
            float(contrast_accuracy(last, batch.correct, batch.wrong)))

