"""Choose a ``sparse_linear`` backend per device, dtype, shape and density, from timings.

Each device type and weight dtype has a table (``tables/<device>_<dtype>.json``, package data)
written by ``python benchmarks/kernels_bench.py --write-table [--dtype ...]`` on that device: the
time
of a layer's forward+backward (dense weight gradient) on the dense backend and on the device's
sparse backend (``"torch"`` on a CPU, ``"triton"`` on CUDA), for a grid of shapes and
densities. The dtype matters: on an H100 a bf16 dense product runs on tensor cores and beats
the sparse kernels, while an fp32 one (what the trainer computes) does not.

A weight takes the sparse backend only where it took at most ``SPARSE_MARGIN`` of the dense
time at the nearest measured point (distance in log in-features, log out-features and log
density): between grid points the guess can be wrong, and a wrong guess for sparse costs more
than one for dense. A device and dtype without a table, or with an empty one, take ``"dense"``.
Decisions are cached per (device, dtype, shape, nonzeros); call ``forget_decisions()`` after
changing ``TABLES``.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

Timings = list[tuple[int, int, float, float, float]]
"""Rows ``(in_features, out_features, density, dense ms, sparse ms)``."""

TABLE_DIR = Path(__file__).parent / "tables"


def table_path(device_type: str, dtype_name: str) -> Path:
    """Where the table of a device type and dtype name lives."""
    return TABLE_DIR / f"{device_type}_{dtype_name}.json"


def read_tables() -> dict[tuple[str, str], tuple[Literal["torch", "triton"], Timings]]:
    """Every table in :data:`TABLE_DIR`, by (device type, dtype name)."""
    tables = {}
    for path in sorted(TABLE_DIR.glob("*_*.json")):
        device, _, dtype = path.stem.partition("_")
        data = json.loads(path.read_text())
        tables[device, dtype] = (data["sparse_backend"], [tuple(r) for r in data["rows"]])
    return tables


TABLES = read_tables()
"""Per (device type, dtype name): the sparse backend and its measured table."""

_MIN_DENSITY = 1e-4  # an all-zero weight is looked up as this density
SPARSE_MARGIN = 0.9


def table_key(device_type: str, dtype: torch.dtype) -> tuple[str, str]:
    """The ``TABLES`` key of a device type and dtype, e.g. ``("cuda", "float32")``."""
    return device_type, str(dtype).removeprefix("torch.")


def choose_backend(weight: Tensor, nnz: int | None = None) -> Literal["torch", "triton", "dense"]:
    """The backend ``sparse_linear(..., backend="auto")`` uses for ``weight`` (``[out, in]``).

    ``nnz`` (e.g. the top-k budget) gives the density without counting; otherwise the nonzeros
    are counted (a host synchronisation on CUDA).
    """
    key = table_key(weight.device.type, weight.dtype)
    if weight.dim() != 2 or weight.numel() == 0 or not TABLES.get(key, ("", []))[1]:
        return "dense"
    nonzero = int(weight.count_nonzero()) if nnz is None else nnz
    return _choose(key, weight.shape[1], weight.shape[0], nonzero)


@lru_cache(maxsize=4096)
def _choose(key: tuple[str, str], in_features: int, out_features: int, nonzero: int) -> str:
    sparse, timings = TABLES[key]
    density = max(nonzero / (in_features * out_features), _MIN_DENSITY)
    return sparse if sparse_is_faster(timings, in_features, out_features, density) else "dense"


def forget_decisions() -> None:
    """Drop the cached decisions (call after changing ``TABLES``)."""
    _choose.cache_clear()


def sparse_is_faster(timings: Timings, in_features: int, out_features: int, density: float) -> bool:
    """Whether the sparse backend took at most ``SPARSE_MARGIN`` of the dense time at the
    measured point nearest to this one."""
    point = (math.log(in_features), math.log(out_features), math.log(density))

    def distance(row: tuple[int, int, float, float, float]) -> float:
        return math.dist(point, (math.log(row[0]), math.log(row[1]), math.log(row[2])))

    _, _, _, dense_ms, sparse_ms = min(timings, key=distance)
    return sparse_ms <= SPARSE_MARGIN * dense_ms
