"""Weight sparsity: the annealed top-k projection, the sharkfin learning rate, mask churn.

After every optimizer step each sparse tensor keeps its k largest magnitudes, with a floor of
``min_per_neuron`` nonzeros on every row and column of a matrix
(:func:`sparsecircuits.kernels.topk_mask`). The budget k anneals from dense to the target
density. Weights are stored dense, so a zeroed weight keeps its gradient and AdamW moments and
can come back.

Churn is counted per tensor and step: *births* (dead -> alive), *deaths* (alive -> dead) and
*revivals*, the births of weights that were alive before. Every weight is alive in the dense
start, so the record of who has been alive starts when a tensor first reaches its target
density: a revival is a weight that was alive at or after that point, died, and came back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sparsecircuits.config import OptimizerConfig, SparsityConfig
from sparsecircuits.kernels import topk_mask
from sparsecircuits.model import SparseGPT


def anneal_progress(step: int, total_steps: int, cfg: SparsityConfig) -> float:
    """0 before the anneal, 1 after it, linear in steps between."""
    start, end = cfg.anneal_start * total_steps, cfg.anneal_end * total_steps
    if step >= end:
        return 1.0
    if step <= start:
        return 0.0
    return (step - start) / (end - start)


def density_at(target: float, step: int, total_steps: int, cfg: SparsityConfig) -> float:
    """Density of a tensor whose final density is ``target``, at ``step``."""
    if not cfg.enabled:
        return 1.0
    frac = anneal_progress(step, total_steps, cfg)
    if cfg.anneal_shape == "loglinear":
        return target**frac
    return 1.0 + (target - 1.0) * frac


def learning_rate(
    step: int, total_steps: int, opt: OptimizerConfig, sparsity: SparsityConfig
) -> float:
    """The sharkfin: linear warm-up, linear decay to zero (or constant after the anneal),
    times sqrt(final matrix density / current matrix density)."""
    warmup_steps = opt.warmup * total_steps
    scale = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if opt.decay == "linear":
        scale *= 1.0 - step / total_steps
    if opt.sharkfin and sparsity.enabled:
        target = sparsity.matrix_density
        scale *= math.sqrt(target / density_at(target, step, total_steps, sparsity))
    return opt.lr * scale


def normalize_grad_rms(params: list[Tensor]) -> float:
    """Rescale all gradients together to unit RMS; return the RMS before rescaling."""
    grads = [p.grad for p in params if p.grad is not None]
    total = sum(g.square().sum() for g in grads)
    count = sum(g.numel() for g in grads)
    rms = math.sqrt(float(total) / max(count, 1))
    if rms > 0:
        torch._foreach_mul_(grads, 1.0 / rms)
    return rms


@dataclass(frozen=True)
class Churn:
    """Mask changes of one tensor at one step."""

    births: int
    deaths: int
    revivals: int
    alive: int


class Sparsifier:
    """Projects a model's sparse tensors to their annealed budgets and counts churn."""

    def __init__(self, model: SparseGPT, cfg: SparsityConfig, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        params = dict(model.named_parameters())
        kinds = model.sparse_parameters() if cfg.enabled else {}
        self.params = {name: params[name] for name in kinds}
        self.targets = {
            name: cfg.matrix_density if kind == "matrix" else cfg.embed_density
            for name, kind in kinds.items()
        }
        self.masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in self.params.items()}
        self.ever: dict[str, Tensor] = {}

    def budget(self, name: str, step: int) -> int:
        """How many entries of tensor ``name`` survive the projection after ``step``."""
        numel = self.params[name].numel()
        density = density_at(self.targets[name], step, self.total_steps, self.cfg)
        return min(numel, round(density * numel))

    @torch.no_grad()
    def project(self, step: int) -> dict[str, Churn]:
        """Apply the top-k projection for ``step`` in place; return each tensor's churn.

        Tensors of one shape and budget are projected together in one batched call."""
        floor = self.cfg.min_per_neuron
        groups: dict[tuple[tuple[int, ...], int], list[str]] = {}
        for name, param in self.params.items():
            k = self.budget(name, step)
            if k < param.numel():
                groups.setdefault((tuple(param.shape), k), []).append(name)
        masks = dict(self.masks)
        for (_, k), names in groups.items():
            stacked = torch.stack([self.params[name] for name in names])
            batch = topk_mask(stacked, k, min_per_row=floor, min_per_col=floor, batched=True)
            for name, mask in zip(names, batch, strict=True):
                self.params[name].mul_(mask)
                masks[name] = mask
        return {name: self._churn(name, mask, step) for name, mask in masks.items()}

    def _churn(self, name: str, mask: Tensor, step: int) -> Churn:
        """Count what changed from the previous mask, and update the alive-record."""
        previous = self.masks[name]
        born = mask & ~previous
        revived = born & self.ever[name] if name in self.ever else None
        if name in self.ever:
            self.ever[name] |= mask
        elif self.budget(name, step) == round(self.targets[name] * mask.numel()):
            self.ever[name] = mask.clone()
        self.masks[name] = mask
        births, alive = int(born.sum()), int(mask.sum())
        return Churn(
            births=births,
            deaths=int(previous.sum()) - alive + births,
            revivals=int(revived.sum()) if revived is not None else 0,
            alive=alive,
        )

    def state_dict(self) -> dict[str, Tensor]:
        """Masks and alive-records, for an exact resume."""
        state = {f"mask/{n}": m for n, m in self.masks.items()}
        state.update({f"ever/{n}": m for n, m in self.ever.items()})
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for key, value in state.items():
            kind, name = key.split("/", 1)
            if name not in self.params:
                raise KeyError(f"sparsifier state names unknown tensor {name!r}")
            device = self.params[name].device
            (self.masks if kind == "mask" else self.ever)[name] = value.to(device, torch.bool,
                                                                           copy=True)
