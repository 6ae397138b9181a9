"""Choose a ``sparse_linear`` backend per device, shape and density, from measured timings.

CPU: ``cpu_table.py``, written by ``python -m sparsecircuits.kernels.bench --write-table``, holds
the time of a layer's forward+backward on the dense and on the torch (CSR) backend for a grid
of shapes and densities. A weight takes the faster backend at the nearest measured point
(distance in log in-features, log out-features and log density).

CUDA: no GPU timings have been measured yet, so CUDA weights take ``"dense"`` (cuBLAS on the
zero-filled weight). Run ``kernels/bench.py`` on a GPU and add its table before letting "auto"
pick Triton there. Other devices take ``"dense"`` too.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor

from .cpu_table import TIMINGS_MS

_MIN_DENSITY = 1e-4  # an all-zero weight is looked up as this density


def choose_backend(weight: Tensor) -> Literal["torch", "dense"]:
    """The backend ``sparse_linear(..., backend="auto")`` uses for ``weight`` (``[out, in]``).

    Counts the nonzeros only on a CPU (where that costs no synchronisation).
    """
    if weight.device.type != "cpu" or weight.dim() != 2 or weight.numel() == 0:
        return "dense"
    out_features, in_features = weight.shape
    density = max(int(weight.count_nonzero()) / weight.numel(), _MIN_DENSITY)
    return choose_cpu_backend(in_features, out_features, density)


def choose_cpu_backend(
    in_features: int, out_features: int, density: float
) -> Literal["torch", "dense"]:
    """The faster CPU backend at the measured point nearest to this shape and density."""
    point = (math.log(in_features), math.log(out_features), math.log(density))

    def distance(row: tuple[int, int, float, float, float]) -> float:
        measured = (math.log(row[0]), math.log(row[1]), math.log(row[2]))
        return math.dist(point, measured)

    _, _, _, dense_ms, torch_ms = min(TIMINGS_MS, key=distance)
    return "torch" if torch_ms < dense_ms else "dense"
