"""Top-k magnitude masks with a per-neuron floor (the per-step projection of a sparse weight).

The rule, for a weight of shape ``[out, in]`` (``F.linear`` layout) and a budget ``k``:

1. protect the ``min_per_row`` largest ``|w|`` of every row (a neuron's fan-in) and the
   ``min_per_col`` largest of every column (a neuron's fan-out);
2. fill the rest of the budget with the largest ``|w|`` among the unprotected entries.

Every ranking breaks ties by flat index (the lower index wins), so exactly ``k`` entries
survive whenever the floors need no more than ``k``; if they need more, the floors win and the
mask holds more than ``k`` entries. 1-D tensors (biases) take the plain global top-k. Weights
must be finite.

Each selection is a threshold select (the k-th largest value, then a comparison), not a sort.
Only finding that k-th largest value differs between backends: ``torch.kthvalue`` here, a radix
select in ``triton_topk``. Nothing synchronises with the host, so the mask and a CSR built from
it with capacity ``k`` have static sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from .triton_support import triton_available

KthLargest = Callable[[Tensor, int], Tensor]
"""``(scores [rows, width], count) -> [rows, 1]``: the ``count``-th largest value of each row."""


def kth_largest_torch(scores: Tensor, count: int) -> Tensor:
    """Torch twin of the radix select: ``torch.kthvalue`` from the other end."""
    return torch.kthvalue(scores, scores.shape[-1] - count + 1, dim=-1, keepdim=True).values


def _top_along_last(scores: Tensor, count: int, kth_largest: KthLargest) -> Tensor:
    """Boolean mask of the ``count`` largest entries along the last dim, ties to lower index."""
    width = scores.shape[-1]
    if count <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if count >= width:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = kth_largest(scores.reshape(-1, width), count).view(*scores.shape[:-1], 1)
    above = scores > threshold
    ties = scores == threshold
    need = count - above.sum(dim=-1, keepdim=True)
    return above | (ties & (ties.cumsum(dim=-1) <= need))


def _topk_mask(
    weight: Tensor,
    k: int,
    min_per_row: int,
    min_per_col: int,
    kth_largest: KthLargest,
    batched: bool,
) -> Tensor:
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    magnitude = weight.detach().abs().float()
    if not batched:
        magnitude = magnitude.unsqueeze(0)
    if magnitude.dim() not in (2, 3):
        shape = tuple(weight.shape)
        raise ValueError(f"topk_mask takes a 1-D or 2-D tensor (a batch of them with "
                         f"batched=True), got shape {shape}")
    protected = torch.zeros_like(magnitude, dtype=torch.bool)
    if magnitude.dim() == 3:
        if min_per_row > 0:
            protected |= _top_along_last(magnitude, min_per_row, kth_largest)
        if min_per_col > 0:
            cols = _top_along_last(magnitude.transpose(1, 2), min_per_col, kth_largest)
            protected |= cols.transpose(1, 2)
    # Protected entries rank first (+inf), so the global top-k is "floors, then the largest of
    # the rest" with a static count; or-ing the floors back in keeps them all if they exceed k.
    scores = magnitude.masked_fill(protected, float("inf")).flatten(1)
    chosen = _top_along_last(scores, k, kth_largest)
    mask = protected | chosen.view_as(magnitude)
    return mask if batched else mask[0]


def topk_mask_torch(
    weight: Tensor, k: int, *, min_per_row: int = 0, min_per_col: int = 0, batched: bool = False
) -> Tensor:
    """Boolean mask of the entries of ``weight`` that survive a top-``k`` projection."""
    return _topk_mask(weight, k, min_per_row, min_per_col, kth_largest_torch, batched)


def topk_mask(
    weight: Tensor,
    k: int,
    *,
    min_per_row: int = 0,
    min_per_col: int = 0,
    backend: Literal["auto", "torch", "triton"] = "auto",
    batched: bool = False,
) -> Tensor:
    """Boolean mask of the ``k`` largest ``|weight|`` with per-neuron floors (see module doc).

    ``batched=True`` projects a stack of same-shaped tensors (dim 0 indexes them), each to its
    own ``k``, in one pass: fewer, larger operations, which is what small models need on a CPU.

    ``backend="auto"`` takes the Triton radix select for CUDA tensors when triton is installed
    (on an H100 it was 10-60x faster than the torch twin, whose ``torch.kthvalue`` handles one
    long row slowly: benchmarks/results/kernels_cuda.json) and the torch twin otherwise.
    ``backend="triton"`` runs the radix select (CUDA, or CPU under ``TRITON_INTERPRET=1``).
    """
    if backend == "auto":
        backend = "triton" if weight.is_cuda and triton_available() else "torch"
    if backend == "torch":
        kth_largest = kth_largest_torch
    elif backend == "triton":
        from .triton_support import load_triton_module

        kth_largest = load_triton_module("triton_topk", weight).kth_largest_triton
    else:
        raise ValueError(f"unknown backend {backend!r} for topk_mask")
    return _topk_mask(weight, k, min_per_row, min_per_col, kth_largest, batched)
