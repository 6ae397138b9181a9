"""Compressed copies of a weight: its rows as CSR, built with static sizes.

A weight ``W`` of shape ``[out, in]`` is stored twice per step: ``compress(W)`` (rows of W, for
the forward ``Y = X Wᵀ``) and ``compress(W.t())`` (rows of Wᵀ, i.e. columns of W, for the input
gradient ``dX = dY W``). The zeros of ``W`` are the absent entries.

The build is pure torch and has no data-dependent shapes: given ``nnz`` (a static capacity, e.g.
the top-k budget) it needs no host synchronisation, so it runs inside CUDA graphs. Unused slots
are appended to the last row with value 0 and column 0; they add nothing to a product.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CSR:
    """Rows of a ``[rows, cols]`` matrix: ``val[crow[r]:crow[r+1]]`` at columns ``col[...]``.

    ``row`` holds each slot's row (for the sampled weight gradient). Indices are int32, column
    order within a row is ascending except for the padding slots at the end.
    """

    crow: Tensor
    col: Tensor
    row: Tensor
    val: Tensor
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        """Number of slots (the static capacity, padding included)."""
        return self.col.numel()

    def to_torch(self, dtype: torch.dtype | None = None) -> Tensor:
        """The same matrix as a ``torch.sparse_csr_tensor`` (values cast to ``dtype``)."""
        val = self.val if dtype is None else self.val.to(dtype)
        with warnings.catch_warnings():  # torch calls its CSR support "beta" on every build
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                self.crow, self.col, val, self.shape, check_invariants=False
            )

    def to_dense(self) -> Tensor:
        """The matrix as a dense tensor (padding slots add zeros)."""
        dense = torch.zeros(self.shape, dtype=self.val.dtype, device=self.val.device)
        return dense.index_put_((self.row.long(), self.col.long()), self.val, accumulate=True)


def _slots_by_nonzero(present: Tensor, nnz: int) -> Tensor:
    return torch.nonzero_static(present, size=nnz, fill_value=present.numel()).squeeze(1)


def _slots_by_search(present: Tensor, nnz: int) -> Tensor:
    count = present.cumsum(0)  # count[i]: nonzeros at flat indices <= i
    slots = torch.arange(1, nnz + 1, device=present.device)
    return torch.searchsorted(count, slots)  # where the count first reaches j + 1


SLOT_FINDERS = {"nonzero": _slots_by_nonzero, "search": _slots_by_search}
"""Two ways to find the flat index of each of the first ``nnz`` nonzeros (``present.numel()``
for padding slots): ``torch.nonzero_static``, or a running count and a binary search."""


def row_pointers(ends: Tensor, nnz: int) -> Tensor:
    """``crow`` (int32) of a CSR with ``nnz`` slots whose rows end at the running nonzero
    counts ``ends`` (an inclusive cumulative sum): clipped at ``nnz``, and the last row holds
    the padding slots. No host tensor (graph-safe)."""
    crow = torch.zeros(len(ends) + 1, dtype=torch.int64, device=ends.device)
    crow[1:] = ends
    crow = crow.clamp(max=nnz)
    crow[-1:].fill_(nnz)
    return crow.to(torch.int32)


def compress(matrix: Tensor, nnz: int | None = None, finder: str = "nonzero") -> CSR:
    """CSR copy of the nonzeros of a 2-D ``matrix``.

    ``nnz`` is the number of slots. Left out, it is the exact count (a host synchronisation on
    CUDA). Given, it must be at least the number of nonzeros (a top-k budget plus any floors);
    extra slots are padding. Too small a capacity drops the trailing nonzeros (never reads out
    of bounds). ``finder`` picks a ``SLOT_FINDERS`` entry; ``bench.py`` times both, and
    ``nonzero`` was as fast or faster on the CPU here and on an H100.
    """
    if matrix.dim() != 2:
        raise ValueError(f"compress takes a 2-D tensor, got shape {tuple(matrix.shape)}")
    rows, cols = matrix.shape
    present = (matrix != 0).flatten()
    per_row = present.view(rows, cols).sum(dim=1)
    if nnz is None:
        nnz = int(per_row.sum())
    flat = SLOT_FINDERS[finder](present, nnz) if present.numel() else torch.zeros(
        nnz, dtype=torch.int64, device=matrix.device
    )
    padding = flat >= present.numel()
    flat = flat.clamp(max=max(present.numel() - 1, 0))
    row = torch.where(padding, rows - 1, flat // max(cols, 1))
    col = torch.where(padding, 0, flat % max(cols, 1))
    # Gather the values through the (possibly transposed) view: no copy of the whole matrix.
    val = matrix[row, col] if present.numel() else matrix.new_zeros(nnz)
    return CSR(
        crow=row_pointers(per_row.cumsum(0), nnz),
        col=col.to(torch.int32),
        row=row.to(torch.int32),
        val=val.masked_fill(padding, 0),
        shape=(rows, cols),
    )
