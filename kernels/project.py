"""The whole per-step projection of a weight matrix: its top-k mask with the per-neuron floors,
and the two compressed copies of the masked weight the sparse products read.

``project_torch`` is the definition: ``topk_mask_torch`` (rule in ``topk.py``), then
``compress(W · mask)`` and ``compress((W · mask)ᵀ)`` (``csr.py``). ``project(...,
backend="triton")`` computes the same outputs, bit for bit, with the fused kernels of
``triton_project`` (a fixed number of launches, no host synchronisation).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from torch import Tensor

from .csr import CSR, compress
from .topk import topk_mask_torch
from .triton_support import load_triton_module


class Projection(NamedTuple):
    """A projected weight: the boolean ``mask`` and the CSR copies of ``W · mask``
    (``rows``) and of its transpose (``cols``)."""

    mask: Tensor
    rows: CSR
    cols: CSR


def capacity_of(weight: Tensor, k: int, min_per_row: int, min_per_col: int) -> int:
    """Slots that always hold the projection's nonzeros: the budget plus both floors."""
    rows, cols = weight.shape
    return min(weight.numel(), k + min_per_row * rows + min_per_col * cols)


def _checked_capacity(weight: Tensor, k: int, min_per_row: int, min_per_col: int,
                      capacity: int | None) -> int:
    """``capacity``, or :func:`capacity_of` when None, once the arguments are known good."""
    if weight.dim() != 2:
        raise ValueError(f"project takes a 2-D weight, got shape {tuple(weight.shape)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return capacity_of(weight, k, min_per_row, min_per_col) if capacity is None else capacity


def project_torch(
    weight: Tensor, k: int, *, min_per_row: int = 0, min_per_col: int = 0,
    capacity: int | None = None,
) -> Projection:
    """The projection of a 2-D ``weight`` (see module doc); ``capacity`` slots per CSR copy
    (default :func:`capacity_of`)."""
    capacity = _checked_capacity(weight, k, min_per_row, min_per_col, capacity)
    mask = topk_mask_torch(weight, k, min_per_row=min_per_row, min_per_col=min_per_col)
    masked = weight * mask
    return Projection(mask, compress(masked, capacity), compress(masked.t(), capacity))


def project(
    weight: Tensor, k: int, *, min_per_row: int = 0, min_per_col: int = 0,
    capacity: int | None = None, backend: Literal["torch", "triton"] = "torch",
) -> Projection:
    """:func:`project_torch`, or its fused Triton twin (``backend="triton"``: CUDA, or CPU
    under ``TRITON_INTERPRET=1``)."""
    if backend == "torch":
        return project_torch(weight, k, min_per_row=min_per_row, min_per_col=min_per_col,
                             capacity=capacity)
    if backend != "triton":
        raise ValueError(f"unknown backend {backend!r} for project: torch or triton")
    capacity = _checked_capacity(weight, k, min_per_row, min_per_col, capacity)
    module = load_triton_module("triton_project", weight)
    return Projection(*module.project_triton(weight, k, min_per_row, min_per_col, capacity))
