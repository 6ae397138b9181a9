"""Sparse-weight kernels: Triton kernels, their torch twins, and a measured dispatcher.

Public entry points: ``sparse_linear`` (``F.linear`` with the zeros of the weight absent) and
``topk_mask`` (the per-step top-k projection mask). ``compress``/``CSR`` build the compressed
copies the sparse kernels read; ``project`` does the whole per-step projection (mask and both
copies), fused into a few kernels on its Triton backend. Triton is imported only when a Triton
backend is used, so this package imports without it. Nothing here imports the rest of
``sparsecircuits``.
"""

from .csr import CSR, compress
from .dispatch import choose_backend
from .linear import sparse_linear
from .project import Projection, project, project_torch
from .topk import topk_mask, topk_mask_torch
from .triton_support import triton_available

__all__ = [
    "CSR",
    "Projection",
    "choose_backend",
    "compress",
    "project",
    "project_torch",
    "sparse_linear",
    "topk_mask",
    "topk_mask_torch",
    "triton_available",
]
