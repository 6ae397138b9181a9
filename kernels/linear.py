"""``sparse_linear``: ``F.linear`` with the zeros of the weight treated as absent, autograd-capable.

Forward and input gradient run on compressed copies of the weight (``compress(W)`` and
``compress(Wᵀ)``, built once per call) with the kernels of the chosen backend. The weight
gradient is dense by default, as in the circuit-sparsity recipe, so pruned weights can regrow;
``weight_grad="mask"`` samples it at the nonzeros only (a Top-KAST-like variant).

Activations go feature-major into the sparse kernels (one transpose of ``x`` and of ``dY``).
The output is ``[T, N]``: row-major on the torch backend (what the ops after a layer run
fastest on, on a CPU), a view of feature-major storage with Triton's default tile (so a
following ``sparse_linear`` needs no copy of its input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .csr import CSR, compress
from .dispatch import choose_backend
from .spmm import feature_major_torch, sddmm_torch, spmm_torch

Backend = Literal["auto", "triton", "torch", "dense"]
WeightGrad = Literal["dense", "mask"]


class SparseOps(NamedTuple):
    """The kernels a sparse backend provides (see ``spmm.py`` for what they compute)."""

    spmm: Callable[[CSR, Tensor], Tensor]
    sddmm: Callable[[CSR, Tensor, Tensor], Tensor]
    feature_major: Callable[[Tensor], Tensor]


def _ops(backend: str, x: Tensor) -> SparseOps:
    if backend == "torch":
        return SparseOps(spmm_torch, sddmm_torch, feature_major_torch)
    from .triton_support import load_triton_module

    module = load_triton_module("triton_spmm", x)
    return SparseOps(module.spmm_triton, module.sddmm_triton, module.feature_major_triton)


class _SparseLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, ops, weight_grad, nnz):
        w = weight.detach().to(x.dtype)
        nnz = int(w.count_nonzero()) if nnz is None else nnz  # one count for both copies
        ctx.rows = compress(w, nnz)
        ctx.cols = compress(w.t(), nnz)
        xt = ops.feature_major(x)  # may share x: saved, so in-place edits are caught
        ctx.save_for_backward(xt)
        ctx.ops, ctx.weight_grad = ops, weight_grad
        ctx.weight_dtype = weight.dtype
        y = ops.spmm(ctx.rows, xt)
        return y if bias is None else y.add_(bias.to(y.dtype))

    @staticmethod
    def backward(ctx, dy):
        (xt,) = ctx.saved_tensors
        dyt = ctx.ops.feature_major(dy)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = ctx.ops.spmm(ctx.cols, dyt)
        if ctx.needs_input_grad[1]:
            if ctx.weight_grad == "dense":
                dw = dyt @ xt.t()
            else:
                values = ctx.ops.sddmm(ctx.rows, dyt, xt) * (ctx.rows.val != 0)  # no padding
                dw = replace(ctx.rows, val=values).to_dense()
            dw = dw.to(ctx.weight_dtype)
        if ctx.needs_input_grad[2]:
            db = dy.sum(dim=0)
        return dx, dw, db, None, None, None


def sparse_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    backend: Backend = "auto",
    weight_grad: WeightGrad = "dense",
    nnz: int | None = None,
) -> Tensor:
    """``F.linear(x, weight, bias)`` computed from the nonzeros of ``weight`` only.

    ``weight`` is ``[out, in]``. Backends: ``"dense"`` is ``F.linear``; ``"torch"`` the torch
    twin (torch's CSR kernels); ``"triton"`` the Triton kernels (CUDA, or CPU under
    ``TRITON_INTERPRET=1``); ``"auto"`` asks ``dispatch.choose_backend``. ``weight_grad="mask"``
    zeroes the weight gradient off the nonzeros. ``nnz`` (optional) is a static capacity of at
    least the number of nonzeros, e.g. the top-k budget; given, the sparse backends need no host
    synchronisation. The weight's values are cast to ``x``'s dtype; gradients come back in the
    dtypes of their inputs. On Triton the result may be a non-contiguous (feature-major) view.
    """
    if weight_grad not in ("dense", "mask"):
        raise ValueError(f"weight_grad must be 'dense' or 'mask', got {weight_grad!r}")
    if backend == "auto":
        backend = choose_backend(weight, nnz)
    if backend == "dense":
        if weight_grad == "mask":
            weight = weight * (weight != 0)
        return F.linear(x, weight, bias)
    if backend not in ("torch", "triton"):
        raise ValueError(f"unknown backend {backend!r} for sparse_linear")
    out_features, in_features = weight.shape
    if x.shape[-1] != in_features:
        raise ValueError(f"x has {x.shape[-1]} features, weight takes {in_features}")
    y = _SparseLinear.apply(
        x.reshape(-1, in_features), weight, bias, _ops(backend, x), weight_grad, nnz
    )
    return y.reshape(*x.shape[:-1], out_features)
