"""Choose a ``sparse_linear`` backend per device, shape and density, from measured timings.

Each device type has a table written by ``python -m sparsecircuits.kernels.bench --write-table``
on that device: the time of a layer's forward+backward (dense weight gradient) on the dense
backend and on the device's sparse backend (``"torch"`` on a CPU, ``"triton"`` on CUDA), for a
grid of shapes and densities. A weight takes the faster backend at the nearest measured point
(distance in log in-features, log out-features and log density). A device without a table, or
with an empty one, takes ``"dense"``.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor

from .cpu_table import TIMINGS_MS as CPU_TIMINGS_MS
from .cuda_table import TIMINGS_MS as CUDA_TIMINGS_MS

Timings = list[tuple[int, int, float, float, float]]
"""Rows ``(in_features, out_features, density, dense ms, sparse ms)``."""

TABLES: dict[str, tuple[Literal["torch", "triton"], Timings]] = {
    "cpu": ("torch", CPU_TIMINGS_MS),
    "cuda": ("triton", CUDA_TIMINGS_MS),
}
"""Per device type: its sparse backend and its measured table."""

_MIN_DENSITY = 1e-4  # an all-zero weight is looked up as this density


def choose_backend(weight: Tensor, nnz: int | None = None) -> Literal["torch", "triton", "dense"]:
    """The backend ``sparse_linear(..., backend="auto")`` uses for ``weight`` (``[out, in]``).

    ``nnz`` (e.g. the top-k budget) gives the density without counting; otherwise the nonzeros
    are counted (a host synchronisation on CUDA).
    """
    sparse, timings = TABLES.get(weight.device.type, ("torch", []))
    if not timings or weight.dim() != 2 or weight.numel() == 0:
        return "dense"
    out_features, in_features = weight.shape
    nonzero = int(weight.count_nonzero()) if nnz is None else nnz
    density = max(nonzero / weight.numel(), _MIN_DENSITY)
    return sparse if sparse_is_faster(timings, in_features, out_features, density) else "dense"


def sparse_is_faster(timings: Timings, in_features: int, out_features: int, density: float) -> bool:
    """Whether the sparse backend was faster at the measured point nearest to this one."""
    point = (math.log(in_features), math.log(out_features), math.log(density))

    def distance(row: tuple[int, int, float, float, float]) -> float:
        return math.dist(point, (math.log(row[0]), math.log(row[1]), math.log(row[2])))

    _, _, _, dense_ms, sparse_ms = min(timings, key=distance)
    return sparse_ms < dense_ms
