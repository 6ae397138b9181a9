"""The per-step projection fused into a fixed number of kernels: the Triton twin of
``project_torch`` (``project.py``), equal to it bit for bit.

Every entry of a ``[rows, cols]`` weight gets one 64-bit order key: the fp32 bits of ``|w|``
(which sort like the magnitude), then the complement of its flat index, so that of two equal
magnitudes the lower index ranks higher, as every ranking of ``topk.py`` breaks ties. Keys are
distinct, so every selection below is a threshold on keys and keeps exactly its count.

1. Floors (two launches, one over rows, one over columns): each program walks whole lines and
   finds the ``floor``-th largest key of each by ``floor`` passes of "largest key below the
   last one". An entry is protected when its key reaches its row's or its column's threshold.
2. Budget (two launches per 8-bit digit, the histogram and ``triton_topk``'s pick): a radix
   select of the ``k``-th largest score, where the score is the key, raised above every
   magnitude for protected entries (they rank first, lower index first: the twin's ``+inf``).
   The mask is "protected, or key at least that score".
3. Copies (a count and a scatter per copy): each program walks whole lines of the mask (rows
   for ``compress(W · mask)``, columns for ``compress((W · mask)ᵀ)``), counts their nonzeros,
   and, after a cumulative sum, writes each nonzero to its slot; the row scatter also writes
   the mask. Slots past the capacity are dropped and unused slots padded, as ``compress`` does.

Nothing is sorted and nothing waits for the host, so the whole projection can be captured in
a CUDA graph. The mask is recomputed from the weight and three small threshold arrays in each
kernel instead of being stored between them. This module imports triton; the package imports
it only when a Triton backend is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from .csr import CSR, row_pointers
from .triton_topk import BINS, BITS, radix_pick_kernel

MAX_KEY = 2**63 - 1  # above every key: no entry reaches it
_MAX_KEY = tl.constexpr(MAX_KEY)
INF_BITS = 0x7F800000  # the bits of fp32 +inf: above every finite magnitude


@dataclass(frozen=True)
class ProjectTile:
    """What one program of every projection kernel covers: ``line_block`` lines (rows or
    columns), ``element_block`` entries of each per loop step, with ``num_warps`` warps."""

    line_block: int = 4
    element_block: int = 128
    num_warps: int = 4


PROJECT_TILE = ProjectTile()
"""Unmeasured on a GPU; chosen as the largest candidate of ``bench.PROJECT_TILES`` whose
kernels all compile to at most 96 registers per thread for sm_90 (8 × 256 needed up to 255:
low occupancy for kernels that stream the weight). ``bench.py`` sweeps the candidates on a
GPU and uses the fastest for the rest of its run."""


@triton.jit
def _tile(w, lines, elements, n_lines, n_elements, n_cols, n, index_bits,
          ROW_LINES: tl.constexpr):
    """A tile of ``lines`` × ``elements`` (rows × columns, or columns × rows): where it lies
    inside the weight, its row and column indices, values and order keys."""
    ok = (lines < n_lines)[:, None] & (elements < n_elements)[None, :]
    if ROW_LINES:
        row, col = tl.broadcast(lines[:, None], elements[None, :])
    else:
        col, row = tl.broadcast(lines[:, None], elements[None, :])
    flat = row.to(tl.int64) * n_cols + col
    value = tl.load(w + flat, mask=ok, other=0.0)
    bits = tl.abs(value.to(tl.float32)).to(tl.int32, bitcast=True).to(tl.int64)
    key = (bits << index_bits) | (n - 1 - flat)
    return ok, row, col, flat, value, key


@triton.jit
def _protected(key, row, col, ok, row_floor, col_floor):
    return ((key >= tl.load(row_floor + row, mask=ok, other=_MAX_KEY))
            | (key >= tl.load(col_floor + col, mask=ok, other=_MAX_KEY)))


@triton.jit
def _floor_kernel(w, out, n_lines, n_elements, n_cols, n, index_bits,
                  FLOOR: tl.constexpr, ROW_LINES: tl.constexpr,
                  LINE_BLOCK: tl.constexpr, ELEMENT_BLOCK: tl.constexpr):
    lines = tl.program_id(0) * LINE_BLOCK + tl.arange(0, LINE_BLOCK)
    last = tl.full((LINE_BLOCK,), _MAX_KEY, tl.int64)
    for _pass in tl.static_range(FLOOR):
        best = tl.full((LINE_BLOCK,), -1, tl.int64)  # below every key: a short line keeps all
        for start in range(0, n_elements, ELEMENT_BLOCK):
            elements = start + tl.arange(0, ELEMENT_BLOCK)
            ok, _row, _col, _flat, _value, key = _tile(w, lines, elements, n_lines, n_elements,
                                                       n_cols, n, index_bits, ROW_LINES)
            below = tl.where(ok & (key < last[:, None]), key, -1)
            best = tl.maximum(best, tl.max(below, axis=1))
        last = best
    tl.store(out + lines, last, mask=lines < n_lines)


@triton.jit
def _score_histogram_kernel(w, row_floor, col_floor, prefix, hist, n_rows, n_cols, n,
                            index_bits, protected_base, SHIFT: tl.constexpr, BITS: tl.constexpr,
                            LINE_BLOCK: tl.constexpr, ELEMENT_BLOCK: tl.constexpr):
    lines = tl.program_id(0) * LINE_BLOCK + tl.arange(0, LINE_BLOCK)
    wanted = tl.load(prefix)
    counts = tl.zeros((1 << BITS,), dtype=tl.int32)
    for start in range(0, n_cols, ELEMENT_BLOCK):
        elements = start + tl.arange(0, ELEMENT_BLOCK)
        ok, row, col, flat, _value, key = _tile(w, lines, elements, n_rows, n_cols, n_cols, n,
                                                index_bits, True)
        protected = _protected(key, row, col, ok, row_floor, col_floor)
        score = tl.where(protected, protected_base | (n - 1 - flat), key)
        match = ok & ((score >> (SHIFT + BITS)) == wanted)
        digit = ((score >> SHIFT) & ((1 << BITS) - 1)).to(tl.int32)
        counts += tl.histogram(tl.reshape(digit, (LINE_BLOCK * ELEMENT_BLOCK,)), 1 << BITS,
                               mask=tl.reshape(match, (LINE_BLOCK * ELEMENT_BLOCK,)))
    tl.atomic_add(hist + tl.arange(0, 1 << BITS), counts)


@triton.jit
def _copy_kernel(w, row_floor, col_floor, threshold, starts, counts, slot_col, slot_row,
                 slot_val, mask_out, n_lines, n_elements, n_cols, n, index_bits, capacity,
                 SCATTER: tl.constexpr, ROW_LINES: tl.constexpr,
                 LINE_BLOCK: tl.constexpr, ELEMENT_BLOCK: tl.constexpr):
    """Per line: count its nonzeros (``SCATTER`` False), or write each to its slot."""
    lines = tl.program_id(0) * LINE_BLOCK + tl.arange(0, LINE_BLOCK)
    line_ok = lines < n_lines
    cut = tl.load(threshold)
    slot = tl.load(starts + lines, mask=line_ok, other=0)  # unused when counting
    total = tl.zeros((LINE_BLOCK,), dtype=tl.int64)
    for start in range(0, n_elements, ELEMENT_BLOCK):
        elements = start + tl.arange(0, ELEMENT_BLOCK)
        ok, row, col, flat, value, key = _tile(w, lines, elements, n_lines, n_elements, n_cols,
                                               n, index_bits, ROW_LINES)
        kept = ok & (_protected(key, row, col, ok, row_floor, col_floor) | (key >= cut))
        present = (kept & (value != 0)).to(tl.int64)
        if SCATTER:
            at = slot[:, None] + tl.cumsum(present, axis=1) - present
            write = (present != 0) & (at < capacity)
            line_at, element_at = tl.broadcast(lines[:, None], elements[None, :])
            tl.store(slot_col + at, element_at, mask=write)
            tl.store(slot_row + at, line_at, mask=write)
            tl.store(slot_val + at, value, mask=write)
            if ROW_LINES:
                tl.store(mask_out + flat, kept.to(tl.int8), mask=ok)
            slot += tl.sum(present, axis=1)
        else:
            total += tl.sum(present, axis=1)
    if not SCATTER:
        tl.store(counts + lines, total, mask=line_ok)


def _grid(n_lines: int) -> tuple[int]:
    return (triton.cdiv(n_lines, PROJECT_TILE.line_block),)


def _blocks() -> dict[str, int]:
    tile = PROJECT_TILE
    return dict(LINE_BLOCK=tile.line_block, ELEMENT_BLOCK=tile.element_block,
                num_warps=tile.num_warps)


def _select(weight: Tensor, row_floor: Tensor, col_floor: Tensor, k: int,
            index_bits: int) -> Tensor:
    """``[1]``: the ``k``-th largest score (1 <= k <= numel), by radix select."""
    n_rows, n_cols = weight.shape
    device = weight.device
    prefix = torch.zeros(1, dtype=torch.int64, device=device)
    remaining = torch.full((1,), k, dtype=torch.int32, device=device)
    hist = torch.zeros((1, BINS), dtype=torch.int32, device=device)
    digits = triton.cdiv(31 + index_bits, BITS)  # scores lie below 2**(31 + index_bits)
    for shift in range((digits - 1) * BITS, -1, -BITS):
        _score_histogram_kernel[_grid(n_rows)](
            weight, row_floor, col_floor, prefix, hist, n_rows, n_cols, weight.numel(),
            index_bits, INF_BITS << index_bits, SHIFT=shift, BITS=BITS, **_blocks(),
        )
        radix_pick_kernel[(1,)](hist, prefix, remaining, BITS=BITS)
    return prefix


def _floors(weight: Tensor, floor: int, index_bits: int, row_lines: bool) -> Tensor:
    """The ``floor``-th largest key of every row (``row_lines``) or column; ``MAX_KEY`` (no
    entry protected) for no floor."""
    n_rows, n_cols = weight.shape
    n_lines, n_elements = (n_rows, n_cols) if row_lines else (n_cols, n_rows)
    out = torch.full((n_lines,), MAX_KEY, dtype=torch.int64, device=weight.device)
    if floor > 0:
        _floor_kernel[_grid(n_lines)](
            weight, out, n_lines, n_elements, n_cols, weight.numel(), index_bits,
            FLOOR=floor, ROW_LINES=row_lines, **_blocks(),
        )
    return out


def project_triton(weight: Tensor, k: int, min_per_row: int, min_per_col: int,
                   capacity: int) -> tuple[Tensor, CSR, CSR]:
    """``(mask, rows, cols)`` of ``project_torch`` for a 2-D ``weight`` (finite values)."""
    weight = weight.detach().contiguous()
    n_rows, n_cols = weight.shape
    n = weight.numel()
    if n >= 2**31:
        raise ValueError(f"project_triton takes fewer than 2**31 entries, got {n}")
    device = weight.device
    index_bits = max(1, (n - 1).bit_length())
    row_floor = _floors(weight, min_per_row, index_bits, row_lines=True)
    col_floor = _floors(weight, min_per_col, index_bits, row_lines=False)
    if k <= 0:
        threshold = torch.full((1,), MAX_KEY, dtype=torch.int64, device=device)
    elif k >= n:
        threshold = torch.full((1,), -1, dtype=torch.int64, device=device)
    else:
        threshold = _select(weight, row_floor, col_floor, k, index_bits)
    mask = torch.empty(n_rows, n_cols, dtype=torch.int8, device=device)
    copies = []
    for row_lines in (True, False):
        n_lines, n_elements = (n_rows, n_cols) if row_lines else (n_cols, n_rows)
        grid = _grid(n_lines)
        counts = torch.empty(n_lines, dtype=torch.int64, device=device)
        slot_col = torch.zeros(capacity, dtype=torch.int32, device=device)
        slot_row = torch.full((capacity,), n_lines - 1, dtype=torch.int32, device=device)
        slot_val = torch.zeros(capacity, dtype=weight.dtype, device=device)
        args = (weight, row_floor, col_floor, threshold)
        sizes = (n_lines, n_elements, n_cols, n, index_bits, capacity)
        blocks = dict(ROW_LINES=row_lines, **_blocks())
        _copy_kernel[grid](*args, counts, counts, slot_col, slot_row, slot_val, mask, *sizes,
                           SCATTER=False, **blocks)
        ends = counts.cumsum(0)
        _copy_kernel[grid](*args, ends - counts, counts, slot_col, slot_row, slot_val, mask,
                           *sizes, SCATTER=True, **blocks)
        copies.append(CSR(crow=row_pointers(ends, capacity), col=slot_col, row=slot_row,
                          val=slot_val, shape=(n_lines, n_elements)))
    return mask.view(torch.bool), copies[0], copies[1]
