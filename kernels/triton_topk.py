"""Radix select of the k-th largest value per row: the Triton twin of ``kth_largest_torch``.

Each fp32 value maps to a 32-bit key that sorts like the value. Four passes over the data each
histogram the next 8 bits of the keys that still match the chosen prefix (``tl.histogram`` per
block, then atomics into one 256-bin histogram per row); a few torch ops on the device pick the
bin holding the k-th largest and carry the prefix on. No sort, no host synchronisation.

This module imports triton; the package imports it only when a Triton backend is asked for.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK = 2048
BITS = 8
BINS = 1 << BITS


@triton.jit
def _radix_histogram_kernel(
    scores, prefix, hist, width, stride_row,
    SHIFT: tl.constexpr, BITS: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(1)
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offsets < width
    x = tl.load(scores + row.to(tl.int64) * stride_row + offsets, mask=ok, other=0.0)
    bits = x.to(tl.int32, bitcast=True)
    # Flip the magnitude bits of negatives: signed order of the result is float order; then
    # shift into [0, 2**32) so every 8-bit digit compares as unsigned.
    key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(tl.int64) + 2147483648
    wanted = tl.load(prefix + row)
    match = ok & ((key >> (SHIFT + BITS)) == wanted)
    digit = ((key >> SHIFT) & ((1 << BITS) - 1)).to(tl.int32)
    counts = tl.histogram(digit, 1 << BITS, mask=match)
    tl.atomic_add(hist + row * (1 << BITS) + tl.arange(0, 1 << BITS), counts)


def kth_largest_triton(scores: Tensor, count: int) -> Tensor:
    """``[rows, 1]``: the ``count``-th largest value of each row of a 2-D ``scores``."""
    scores = scores.float().contiguous()
    rows, width = scores.shape
    prefix = torch.zeros(rows, dtype=torch.int64, device=scores.device)
    remaining = torch.full((rows, 1), count, dtype=torch.int64, device=scores.device)
    for shift in range(32 - BITS, -1, -BITS):
        hist = torch.zeros((rows, BINS), dtype=torch.int32, device=scores.device)
        _radix_histogram_kernel[(triton.cdiv(width, BLOCK), rows)](
            scores, prefix, hist, width, scores.stride(0),
            SHIFT=shift, BITS=BITS, BLOCK=BLOCK,
        )
        at_or_above = hist.flip(-1).cumsum(-1)  # [:, i]: keys whose digit is >= BINS - 1 - i
        index = (at_or_above < remaining).sum(-1, keepdim=True)  # bin of the remaining-th
        above = at_or_above.gather(-1, (index - 1).clamp(min=0)).masked_fill(index == 0, 0)
        remaining = remaining - above
        prefix = prefix * BINS + (BINS - 1 - index.squeeze(-1))
    key = (prefix - 2**31).to(torch.int32)
    bits = key ^ ((key >> 31) & 0x7FFFFFFF)
    return bits.view(torch.float32).unsqueeze(-1)
