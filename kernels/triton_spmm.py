"""Triton kernels for the sparse products of a linear layer; twins of ``spmm.py``.

Gathers of individual nonzeros on CUDA cores (top-k masks are not block-sparse, so tiles
cannot be skipped; ``benchmarks/results/kernels_cuda.md`` has the roofline). Activations are
feature-major, so each nonzero reads a contiguous run of tokens. No ``tl.dot`` (wrong in bf16
under the interpreter), fp32 accumulation, int64 offsets. ``SPMM_CONFIG`` holds the forward
kernel's tile; the kernel benchmark sweeps the candidates on a GPU and uses the fastest for the
rest of its run.

This module imports triton; the package imports it only when a Triton backend is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from .csr import CSR


@dataclass(frozen=True)
class SpmmConfig:
    """A tile of the sparse product: output rows × tokens per step, warps, output layout.

    A program computes ``row_blocks_per_program`` consecutive row blocks over one slice of
    tokens (0: all of them). ``feature_major_out`` stores the ``[T, rows]`` result as a
    transposed ``[rows, T]`` buffer (as the torch twin does), so each program writes contiguous
    runs of tokens.
    """

    block_rows: int = 32
    block_tokens: int = 64
    num_warps: int = 4
    feature_major_out: bool = False
    row_blocks_per_program: int = 1


SPMM_CONFIG = SpmmConfig(block_rows=8, block_tokens=512, num_warps=4, feature_major_out=True)
"""The fastest tile of ``bench.py``'s sweep on an H100 (benchmarks/results/kernels_cuda.json)."""

TRANSPOSE_BLOCK = 64
SDDMM_BLOCK_SLOTS = 32
SDDMM_BLOCK_TOKENS = 64
SDDMM_TARGET_PROGRAMS = 2048  # split the token axis until about this many programs run


@triton.jit
def _spmm_kernel(
    crow, col, val, bt, out,
    n_rows, n_tokens, row_blocks_per_program,
    stride_bt_feature, stride_bt_token, stride_out_token, stride_out_row,
    BLOCK_ROWS: tl.constexpr, BLOCK_TOKENS: tl.constexpr,
):
    # A program walks a group of row blocks over one slice of tokens, so repeated gathers of a
    # column could hit the L1 cache. On an H100 they did not (benchmarks/results/
    # kernels_cuda.md): the tuned tile walks one block per program.
    tokens = tl.program_id(1) * BLOCK_TOKENS + tl.arange(0, BLOCK_TOKENS)
    token_ok = tokens < n_tokens
    first_block = tl.program_id(0) * row_blocks_per_program
    last_block = tl.minimum(first_block + row_blocks_per_program, tl.cdiv(n_rows, BLOCK_ROWS))
    for block in range(first_block, last_block):
        rows = block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < n_rows
        start = tl.load(crow + rows, mask=row_ok, other=0)
        length = tl.load(crow + rows + 1, mask=row_ok, other=0) - start
        acc = tl.zeros((BLOCK_ROWS, BLOCK_TOKENS), dtype=tl.float32)
        for j in range(0, tl.max(length, axis=0)):
            live = j < length
            c = tl.load(col + start + j, mask=live, other=0).to(tl.int64)
            v = tl.load(val + start + j, mask=live, other=0.0).to(tl.float32)
            x = tl.load(
                bt + c[:, None] * stride_bt_feature + tokens[None, :] * stride_bt_token,
                mask=live[:, None] & token_ok[None, :],
                other=0.0,
            )
            acc += v[:, None] * x.to(tl.float32)
        offsets = (
            tokens[None, :].to(tl.int64) * stride_out_token
            + rows[:, None].to(tl.int64) * stride_out_row
        )
        tl.store(
            out + offsets,
            acc.to(out.dtype.element_ty),
            mask=row_ok[:, None] & token_ok[None, :],
        )


@triton.jit
def _sddmm_kernel(
    row, col, at, bt, partial,
    nnz, n_tokens, tokens_per_split,
    stride_at_feature, stride_at_token, stride_bt_feature, stride_bt_token,
    BLOCK_SLOTS: tl.constexpr, BLOCK_TOKENS: tl.constexpr,
):
    slots = tl.program_id(0) * BLOCK_SLOTS + tl.arange(0, BLOCK_SLOTS)
    split = tl.program_id(1)
    slot_ok = slots < nnz
    r = tl.load(row + slots, mask=slot_ok, other=0).to(tl.int64)
    c = tl.load(col + slots, mask=slot_ok, other=0).to(tl.int64)
    acc = tl.zeros((BLOCK_SLOTS,), dtype=tl.float32)
    first = split * tokens_per_split
    last = tl.minimum(first + tokens_per_split, n_tokens)
    for t0 in range(first, last, BLOCK_TOKENS):
        tokens = t0 + tl.arange(0, BLOCK_TOKENS)
        ok = slot_ok[:, None] & (tokens < last)[None, :]
        a = tl.load(
            at + r[:, None] * stride_at_feature + tokens[None, :] * stride_at_token,
            mask=ok, other=0.0,
        )
        b = tl.load(
            bt + c[:, None] * stride_bt_feature + tokens[None, :] * stride_bt_token,
            mask=ok, other=0.0,
        )
        acc += tl.sum(a.to(tl.float32) * b.to(tl.float32), axis=1)
    tl.store(partial + split.to(tl.int64) * nnz + slots, acc, mask=slot_ok)


@triton.jit
def _transpose_kernel(
    x, out, n_rows, n_cols, stride_x_row, stride_out_row,
    BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    ok = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    tile = tl.load(x + rows[:, None].to(tl.int64) * stride_x_row + cols[None, :], mask=ok)
    tl.store(out + cols[None, :].to(tl.int64) * stride_out_row + rows[:, None], tile, mask=ok)


def feature_major_triton(x: Tensor) -> Tensor:
    """``x.t().contiguous()`` for a 2-D ``[T, features]`` tensor, as a tiled Triton copy
    (torch's generic strided copy is the slowest part of a layer step on an H100)."""
    if x.t().is_contiguous():
        return x.t()
    x = x if x.stride(1) == 1 else x.contiguous()
    n_rows, n_cols = x.shape
    out = torch.empty((n_cols, n_rows), dtype=x.dtype, device=x.device)
    if out.numel() > 0:
        grid = (triton.cdiv(n_rows, TRANSPOSE_BLOCK), triton.cdiv(n_cols, TRANSPOSE_BLOCK))
        _transpose_kernel[grid](
            x, out, n_rows, n_cols, x.stride(0), out.stride(0),
            BLOCK_ROWS=TRANSPOSE_BLOCK, BLOCK_COLS=TRANSPOSE_BLOCK,
        )
    return out


def spmm_triton(a: CSR, bt: Tensor, config: SpmmConfig | None = None) -> Tensor:
    """Triton twin of ``spmm_torch``: ``[T, rows]`` in ``bt``'s dtype, tiled by ``config``
    (``SPMM_CONFIG`` when left out)."""
    config = config or SPMM_CONFIG
    rows, features = a.shape
    if bt.shape[0] != features:
        raise ValueError(f"bt has {bt.shape[0]} features, the matrix has {features} columns")
    n_tokens = bt.shape[1]
    if config.feature_major_out:
        out = torch.empty((rows, n_tokens), dtype=bt.dtype, device=bt.device).t()
    else:
        out = torch.empty((n_tokens, rows), dtype=bt.dtype, device=bt.device)
    row_blocks = triton.cdiv(rows, config.block_rows)
    group = config.row_blocks_per_program or row_blocks
    grid = (triton.cdiv(row_blocks, group), triton.cdiv(n_tokens, config.block_tokens))
    if out.numel() > 0:
        _spmm_kernel[grid](
            a.crow, a.col, a.val, bt, out,
            rows, n_tokens, group,
            bt.stride(0), bt.stride(1), out.stride(0), out.stride(1),
            BLOCK_ROWS=config.block_rows, BLOCK_TOKENS=config.block_tokens,
            num_warps=config.num_warps,
        )
    return out


def sddmm_triton(a: CSR, at: Tensor, bt: Tensor) -> Tensor:
    """Triton twin of ``sddmm_torch``: fp32 per-slot dot products, token axis split for width."""
    n_tokens = at.shape[1]
    if a.nnz == 0 or n_tokens == 0:
        return torch.zeros(a.nnz, dtype=torch.float32, device=at.device)
    slot_blocks = triton.cdiv(a.nnz, SDDMM_BLOCK_SLOTS)
    token_blocks = triton.cdiv(n_tokens, SDDMM_BLOCK_TOKENS)
    wanted_splits = max(1, min(token_blocks, SDDMM_TARGET_PROGRAMS // slot_blocks))
    tokens_per_split = triton.cdiv(token_blocks, wanted_splits) * SDDMM_BLOCK_TOKENS
    splits = triton.cdiv(n_tokens, tokens_per_split)
    partial = torch.empty((splits, a.nnz), dtype=torch.float32, device=at.device)
    _sddmm_kernel[(slot_blocks, splits)](
        a.row, a.col, at, bt, partial,
        a.nnz, n_tokens, tokens_per_split,
        at.stride(0), at.stride(1), bt.stride(0), bt.stride(1),
        BLOCK_SLOTS=SDDMM_BLOCK_SLOTS, BLOCK_TOKENS=SDDMM_BLOCK_TOKENS,
    )
    return partial.sum(dim=0)
