"""Sparse products of a linear layer, torch twins (the CPU path and the test oracle).

Both take activations feature-major (``[features, T]``), the layout the Triton kernels in
``triton_spmm`` gather from, and compute exactly what those kernels compute:

- ``spmm(a, bt)``: ``out[t, r] = Σ_c a[r, c] · bt[c, t]``, returned as ``[T, rows]``. With
  ``a = compress(W)`` and ``bt = Xᵀ`` it is the forward ``X Wᵀ``; with ``a = compress(Wᵀ)`` and
  ``bt = dYᵀ`` it is the input gradient ``dY W``.
- ``sddmm(a, at, bt)``: for every slot ``j`` of ``a``,
  ``out[j] = Σ_t at[a.row[j], t] · bt[a.col[j], t]``: the weight gradient ``dYᵀ X`` sampled at
  the nonzeros (padding slots give values too; callers drop them).

Half-precision inputs are computed in fp32 (torch's CPU CSR kernels take no bf16) and the
products are returned in the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .csr import CSR


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def feature_major_torch(x: Tensor) -> Tensor:
    """``[features, T]`` storage of a 2-D ``[T, features]`` tensor (a view if it already is)."""
    return x.t().contiguous()


def spmm_torch(a: CSR, bt: Tensor) -> Tensor:
    """``[T, rows]`` product of CSR ``a`` with feature-major ``bt``, stored row-major.

    torch's CSR product gives ``[rows, T]``; it is copied to ``[T, rows]`` storage because the
    ops after a layer run slowly on the transposed layout: on 2 CPU cores a GELU after the
    layer, forward and backward, took 5-9x as long as after ``F.linear`` (T = 4096, the
    ``small`` and ``tiny`` presets' MLP shapes), more than the sparse product saves."""
    dtype = _compute_dtype(bt.dtype)
    out = torch.sparse.mm(a.to_torch(dtype), bt.to(dtype))
    return out.t().contiguous().to(bt.dtype)


def sddmm_torch(a: CSR, at: Tensor, bt: Tensor) -> Tensor:
    """Per-slot dot products ``at[row] · bt[col]`` over the token axis, in fp32 or wider."""
    dtype = _compute_dtype(at.dtype)
    pattern = torch.sparse_csr_tensor(
        a.crow, a.col, torch.zeros(a.nnz, dtype=dtype, device=at.device), a.shape,
        check_invariants=False,
    )
    sampled = torch.sparse.sampled_addmm(pattern, at.to(dtype), bt.to(dtype).t(), beta=0.0)
    return sampled.values()
