"""Radix select of the k-th largest value per row: the Triton twin of ``kth_largest_torch``.

Each fp32 value maps to a 32-bit key that sorts like the value. Four passes each settle the
next 8 bits of the answer: a histogram kernel counts, per row, the digits of the keys that
still match the prefix chosen so far (each program sums its share of the row in registers,
then adds it into the row's 256 bins with one atomic per bin); a pick kernel (one program per
row) finds the bin holding the k-th largest, extends the prefix, updates how many are still
needed and clears the bins for the next pass. Two launches per pass, no sort, no host
synchronisation (CUDA-graph safe).

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
PROGRAMS_PER_ROW = 128  # enough to fill a GPU for one long row, few atomics per bin


@triton.jit
def _radix_histogram_kernel(
    scores, prefix, hist, width, stride_row, blocks_per_program,
    SHIFT: tl.constexpr, BITS: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(1)
    wanted = tl.load(prefix + row)
    counts = tl.zeros((1 << BITS,), dtype=tl.int32)
    first_block = tl.program_id(0) * blocks_per_program
    for block in range(first_block, first_block + blocks_per_program):
        offsets = block * BLOCK + tl.arange(0, BLOCK)
        ok = offsets < width
        x = tl.load(scores + row.to(tl.int64) * stride_row + offsets, mask=ok, other=0.0)
        bits = x.to(tl.int32, bitcast=True)
        # Flip the magnitude bits of negatives: signed order of the result is float order;
        # then shift into [0, 2**32) so every 8-bit digit compares as unsigned.
        key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(tl.int64) + 2147483648
        match = ok & ((key >> (SHIFT + BITS)) == wanted)
        digit = ((key >> SHIFT) & ((1 << BITS) - 1)).to(tl.int32)
        counts += tl.histogram(digit, 1 << BITS, mask=match)
    tl.atomic_add(hist + row * (1 << BITS) + tl.arange(0, 1 << BITS), counts)


@triton.jit
def radix_pick_kernel(hist, prefix, remaining, BITS: tl.constexpr):
    row = tl.program_id(0)
    rank = tl.arange(0, 1 << BITS)  # 0 is the largest digit
    bins = hist + row * (1 << BITS) + (1 << BITS) - 1 - rank
    counts = tl.load(bins)
    at_or_above = tl.cumsum(counts, axis=0)  # keys whose digit ranks at or above each rank
    need = tl.load(remaining + row)
    index = tl.sum((at_or_above < need).to(tl.int32), axis=0)  # rank of the bin holding it
    above = tl.sum(tl.where(rank < index, counts, 0), axis=0)
    tl.store(remaining + row, need - above)
    tl.store(prefix + row, tl.load(prefix + row) * (1 << BITS) + (1 << BITS) - 1 - index)
    tl.store(bins, tl.zeros((1 << BITS,), dtype=tl.int32))


def kth_largest_triton(scores: Tensor, count: int) -> Tensor:
    """``[rows, 1]``: the ``count``-th largest value of each row of a 2-D ``scores``."""
    scores = scores.float().contiguous()
    rows, width = scores.shape
    prefix = torch.zeros(rows, dtype=torch.int64, device=scores.device)
    remaining = torch.full((rows,), count, dtype=torch.int32, device=scores.device)
    hist = torch.zeros((rows, BINS), dtype=torch.int32, device=scores.device)
    blocks = triton.cdiv(width, BLOCK)
    programs = min(blocks, PROGRAMS_PER_ROW)
    blocks_per_program = triton.cdiv(blocks, programs)
    for shift in range(32 - BITS, -1, -BITS):
        _radix_histogram_kernel[(programs, rows)](
            scores, prefix, hist, width, scores.stride(0), blocks_per_program,
            SHIFT=shift, BITS=BITS, BLOCK=BLOCK,
        )
        radix_pick_kernel[(rows,)](hist, prefix, remaining, BITS=BITS)
    key = (prefix - 2**31).to(torch.int32)
    bits = key ^ ((key >> 31) & 0x7FFFFFFF)
    return bits.view(torch.float32).unsqueeze(-1)
