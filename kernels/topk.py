"""Top-k magnitude masks with a per-neuron floor: the torch twin of the mask-update kernel.

The rule, for a weight of shape ``[out, in]`` (``F.linear`` layout) and a budget ``k``:

1. protect the ``min_per_row`` largest ``|w|`` of every row (a neuron's fan-in) and the
   ``min_per_col`` largest of every column (a neuron's fan-out);
2. fill the rest of the budget with the largest ``|w|`` among the unprotected entries.

Every ranking breaks ties by flat index (the lower index wins), so exactly ``k`` entries
survive whenever the floors need no more than ``k``; if they need more, the floors win and the
mask holds more than ``k`` entries. 1-D tensors (biases) take the plain global top-k.

Each selection is a threshold select (``kthvalue``), not a sort.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _top_along_last(scores: Tensor, count: int) -> Tensor:
    """Boolean mask of the ``count`` largest entries along the last dim, ties to lower index."""
    width = scores.shape[-1]
    if count <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if count >= width:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores, width - count + 1, dim=-1, keepdim=True).values
    above = scores > threshold
    ties = scores == threshold
    need = count - above.sum(dim=-1, keepdim=True)
    return above | (ties & (ties.cumsum(dim=-1) <= need))


def topk_mask_torch(
    weight: Tensor, k: int, *, min_per_row: int = 0, min_per_col: int = 0
) -> Tensor:
    """Boolean mask of the entries of ``weight`` that survive a top-``k`` projection."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    magnitude = weight.detach().abs().float()
    protected = torch.zeros_like(magnitude, dtype=torch.bool)
    if magnitude.dim() == 2:
        if min_per_row > 0:
            protected |= _top_along_last(magnitude, min_per_row)
        if min_per_col > 0:
            protected |= _top_along_last(magnitude.t(), min_per_col).t()
    elif magnitude.dim() != 1:
        raise ValueError(f"topk_mask takes a 1-D or 2-D tensor, got shape {tuple(weight.shape)}")
    flat_protected = protected.flatten()
    # Unprotected magnitudes are >= 0, so -1 ranks every protected entry below all of them.
    scores = magnitude.flatten().masked_fill(flat_protected, -1.0)
    remaining = k - int(flat_protected.sum())
    chosen = _top_along_last(scores, min(remaining, scores.numel() - int(flat_protected.sum())))
    return (flat_protected | chosen).view_as(magnitude)
