"""Benchmark the sparse kernels against dense and torch.sparse, side by side in one run.

    python benchmarks/kernels_bench.py [--out FILE] [--write-table] [--threads N]

On a CUDA machine, in this order: a correctness sweep (``sparse_linear`` on random ragged
shapes, densities 0 to 1, fp32 and bf16, forward and both gradients, against fp64 ``F.linear``;
``topk_mask``'s radix select against the torch twin, with floors and ties); a sweep of the
forward kernel's tiles (``SpmmConfig``), whose fastest tile the rest of the run uses; then at
T = 65,536 tokens, bf16, shapes (K→N) 1024→4096, 4096→1024, 1024→1024, 2048→8192, 512→2048 and
densities 5, 2, 1, 0.3, 0.1 %: each op (forward, input gradient, weight gradient sampled at the
mask) checked against an fp32 dense product and timed as dense matmul on zero-filled weights,
torch CSR, torch BSR (blocks 16 and 32) and ours (Triton); the mask update (``topk_mask``
against ``torch.topk``, with and without floors, plus the CSR/CSC build, also as a CUDA graph);
a full layer forward+backward, ``sparse_linear`` against ``nn.Linear``; and ``backend="auto"``
against dense at shapes off the measured grid. Each implementation has a time budget, so a slow
``torch.sparse`` path is recorded as skipped rather than eating the run. The JSON is rewritten
after every section.

On a CPU the same comparisons run at CPU sizes (T = 4096, fp32; "ours" is the torch twin): the
ops and mask update at 1024→4096, 1024→1024, 512→2048, and the layer at the pilot model's
shapes up to d 1024 and densities up to 100 %. ``--write-table`` turns the layer timings into
``kernels/tables/cpu_float32.json``, the table the dispatcher reads. A few minutes on 2 idle cores.

Prints ratio tables (dense time ÷ each time: above 1 is faster than dense) and writes JSON
with the device name and the versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from sparsecircuits.kernels.csr import SLOT_FINDERS, compress
from sparsecircuits.kernels.dispatch import table_key, table_path
from sparsecircuits.kernels.linear import sparse_linear
from sparsecircuits.kernels.project import Projection, capacity_of, project, project_torch
from sparsecircuits.kernels.spmm import sddmm_torch, spmm_torch
from sparsecircuits.kernels.topk import topk_mask


@dataclass(frozen=True)
class Setup:
    """What one device benchmarks."""

    device: torch.device
    dtype: torch.dtype
    tokens: int
    shapes: tuple[tuple[int, int], ...]  # (K, N) for the op and mask comparisons
    densities: tuple[float, ...]
    layer_shapes: tuple[tuple[int, int], ...]
    layer_densities: tuple[float, ...]
    ours: str  # the sparse_linear backend measured as "ours"
    mask_backends: tuple[str, ...]  # topk_mask backends; "triton" adds the fused projection
    budget_s: float  # wall time per implementation and section before it is skipped
    layer_rounds: int  # rounds over the layer backends, interleaved; each keeps its fastest


ANCHOR_SHAPES = ((1024, 4096), (4096, 1024), (1024, 1024), (2048, 8192), (512, 2048))
GPU = Setup(
    device=torch.device("cuda"),
    dtype=torch.bfloat16,
    tokens=65_536,
    shapes=ANCHOR_SHAPES,
    densities=(0.05, 0.02, 0.01, 0.003, 0.001),
    layer_shapes=ANCHOR_SHAPES,
    layer_densities=(0.05, 0.02, 0.01, 0.003, 0.001),
    ours="triton",
    mask_backends=("torch", "triton"),
    budget_s=25.0,
    layer_rounds=1,
)
CPU = Setup(
    device=torch.device("cpu"),
    dtype=torch.float32,
    tokens=4096,
    shapes=((1024, 4096), (1024, 1024), (512, 2048)),
    densities=(0.05, 0.02, 0.01, 0.003, 0.001),
    # the pilot model's shapes (d 128, MLP 512) up to d 1024, for the dispatcher's table
    layer_shapes=(
        (128, 128), (128, 512), (512, 128), (256, 1024), (1024, 256), (512, 2048), (1024, 1024)
    ),
    layer_densities=(1.0, 0.25, 0.1, 0.05, 0.02, 0.01, 0.003, 0.001),
    ours="torch",
    mask_backends=("torch",),
    budget_s=float("inf"),
    layer_rounds=3,  # a slow spell of the host then hits every backend alike
)


SLOW_S = 0.05  # a call slower than this is timed once on CUDA, three times on a CPU
CHECK_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}  # ‖out − ref‖ / ‖ref‖


def time_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds per call of ``fn`` after a warm-up call (compilation stays out).

    CUDA: the median of ``do_bench`` (events); a call slower than ``SLOW_S`` is timed once
    (enough, and keeps a short GPU session short). CPU: the fastest of a few runs (3 for calls
    slower than ``SLOW_S``), since other processes and a shared host only ever add time; one
    run of a 60 ms layer varied by up to 1.8x on these machines.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - start
    if device.type == "cuda":
        if first > SLOW_S:
            return first * 1e3
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=10, rep=50, return_mode="median"))
    times = [first]
    for _ in range(2 if first > SLOW_S else min(20, int(0.3 / max(first, 1e-6)))):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


class Stopwatch:
    """``time_ms`` with a wall-time budget per implementation name, and errors recorded.

    An implementation over its budget is recorded as skipped from then on; one that raises
    (an unsupported dtype, say) is recorded with the first line of its error.
    """

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.spent: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], object]) -> float | str:
        if self.spent.get(name, 0.0) > self.setup.budget_s:
            return "skipped: over its time budget"
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.sparse "beta" warnings
                return time_ms(fn, self.setup.device)
        except Exception as error:  # record whatever a path refuses, keep going
            return f"unsupported: {_reason(error)}"
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - start


def _reason(error: Exception) -> str:
    """The first line of an error, short enough for a table cell."""
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__


def masked_weight(out_features: int, in_features: int, density: float, setup: Setup) -> Tensor:
    """A Gaussian weight projected to its top-k magnitudes (k = density × size)."""
    weight = torch.randn(out_features, in_features, device=setup.device)
    k = round(density * weight.numel())
    return weight * topk_mask(weight, k)


def relative_error(value: Tensor, reference: Tensor) -> float:
    """``‖value − reference‖ / ‖reference‖`` in fp64 (NaN if either holds a NaN)."""
    value, reference = value.detach().double(), reference.detach().double()
    scale = float(reference.norm())
    return float((value - reference).norm()) / scale if scale > 0 else float(value.norm())


def _ops_backend(setup: Setup) -> tuple[Callable, Callable]:
    if setup.ours == "triton":
        from sparsecircuits.kernels.triton_spmm import sddmm_triton, spmm_triton

        return spmm_triton, sddmm_triton
    return spmm_torch, sddmm_torch


MASK_SHAPES = ((37, 45, 0), (1024, 4096, 4), (4096, 1024, 4), (300, 7, 2))
"""(rows, cols, floor) of the mask checks."""


def same_projection(a: Projection, b: Projection) -> bool:
    """Whether two projections agree bit for bit: mask and every field of both copies."""
    return torch.equal(a.mask, b.mask) and all(
        x.shape == y.shape and all(torch.equal(getattr(x, f), getattr(y, f))
                                   for f in ("crow", "col", "row", "val"))
        for x, y in ((a.rows, b.rows), (a.cols, b.cols))
    )


def check_correctness(setup: Setup, cases: int = 24, max_size: int = 1500,
                      mask_shapes: tuple[tuple[int, int, int], ...] = MASK_SHAPES) -> dict:
    """Ours on random ragged shapes (sides below ``max_size``) against fp64; the radix select
    and the fused projection against their torch twins."""
    g = torch.Generator().manual_seed(1)
    layers = []
    for case in range(cases):
        out_f, in_f, tokens = (int(n) for n in torch.randint(1, max_size, (3,), generator=g))
        density = [0.0, 1.0, 1e-3, 0.02, 0.3][case % 5] if case < 10 else float(
            torch.rand((), generator=g) ** 3
        )
        dtype = (torch.float32, torch.bfloat16)[case % 2]
        for weight_grad in ("dense", "mask"):
            weight = torch.randn(out_f, in_f, generator=g)
            weight *= torch.rand(out_f, in_f, generator=g) < density
            x, dy = torch.randn(tokens, in_f, generator=g), torch.randn(tokens, out_f, generator=g)
            x, w, dy = (t.to(setup.device, dtype) for t in (x, weight, dy))
            x.requires_grad_()
            w.requires_grad_()
            y = sparse_linear(x, w, backend=setup.ours, weight_grad=weight_grad)
            y.backward(dy)
            xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
            yr = xr @ wr.t()
            yr.backward(dy.double())
            dw = wr.grad if weight_grad == "dense" else wr.grad * (wr != 0)
            errors = [relative_error(a, b) for a, b in ((y, yr), (x.grad, xr.grad), (w.grad, dw))]
            layers.append({
                "shape": [out_f, in_f, tokens], "density": density, "dtype": str(dtype),
                "weight_grad": weight_grad, "errors_y_dx_dw": errors,
                "ok": all(e <= CHECK_TOLERANCE[dtype] for e in errors),  # NaN fails
            })
    masks = []
    for backend in (b for b in setup.mask_backends if b != "torch"):
        for rows, cols, floor in mask_shapes:
            for tied in (False, True):
                weight = torch.randn(rows, cols, generator=g)
                if tied:
                    weight = (weight * 2).round() / 2  # few distinct values, exact zeros
                weight = weight.to(setup.device)
                for k in (0, 1, rows * cols // 100, rows * cols // 3, rows * cols):
                    args = dict(min_per_row=floor, min_per_col=floor)
                    ours = topk_mask(weight, k, backend=backend, **args)
                    twin = topk_mask(weight, k, backend="torch", **args)
                    fused = project(weight, k, backend=backend, **args)
                    masks.append({"shape": [rows, cols], "k": k, "floor": floor, "tied": tied,
                                  "ok": bool(torch.equal(ours, twin)),
                                  "fused_ok": same_projection(fused, project_torch(weight, k,
                                                                                   **args))})
    return {
        "layers": layers,
        "masks": masks,
        "all_ok": all(case["ok"] for case in layers + masks)
        and all(case["fused_ok"] for case in masks),
    }


SPMM_TILES = [  # (block_rows, block_tokens, num_warps, feature_major_out, row_blocks_per_program)
    (32, 64, 4, False, 1), (16, 256, 4, True, 1), (8, 512, 4, True, 1),
    *((r, b, 4, True, g) for b in (32, 64, 128) for r in (16, 32) for g in (0, 16)),
    (16, 64, 2, True, 0), (8, 64, 4, True, 0), (64, 32, 4, True, 0),
]


def sweep_spmm_tiles(setup: Setup, stopwatch: Stopwatch) -> dict:
    """Time every candidate tile of the forward kernel; the fastest becomes ``SPMM_CONFIG``."""
    from sparsecircuits.kernels import triton_spmm

    cases = []
    for in_f, out_f, density in ((1024, 4096, 0.01), (1024, 4096, 0.003), (4096, 1024, 0.01)):
        weight = masked_weight(out_f, in_f, density, setup).to(setup.dtype)
        xt = torch.randn(in_f, setup.tokens, device=setup.device, dtype=setup.dtype)
        cases.append((compress(weight), xt, f"{in_f}→{out_f} ρ={density}"))
    rows = []
    for tile in SPMM_TILES:
        config = triton_spmm.SpmmConfig(*tile)
        ms = {
            name: stopwatch(
                str(config), lambda a=a, xt=xt, c=config: triton_spmm.spmm_triton(a, xt, c)
            )
            for a, xt, name in cases
        }
        rows.append({"config": dataclasses.asdict(config), "ms": ms})
    timed = [r for r in rows if all(isinstance(v, float) for v in r["ms"].values())]
    if timed:
        best = min(timed, key=lambda r: sum(r["ms"].values()))
        triton_spmm.SPMM_CONFIG = triton_spmm.SpmmConfig(**best["config"])
    return {"tiles": rows, "chosen": dataclasses.asdict(triton_spmm.SPMM_CONFIG)}


PROJECT_TILES = [(4, 128, 4), (8, 128, 4), (8, 256, 8), (2, 256, 4)]
"""Candidate ``ProjectTile``s (line_block, element_block, num_warps) of the fused projection."""


def sweep_project_tiles(setup: Setup, stopwatch: Stopwatch) -> dict:
    """Time the fused projection with every candidate tile, at the first shape and 1 %; the
    fastest becomes ``PROJECT_TILE``."""
    from sparsecircuits.kernels import triton_project

    in_f, out_f = setup.shapes[0]
    weight = torch.randn(out_f, in_f, device=setup.device)
    k = round(0.01 * weight.numel())
    default, rows = triton_project.PROJECT_TILE, []
    for tile in (triton_project.ProjectTile(*t) for t in PROJECT_TILES):
        triton_project.PROJECT_TILE = tile
        ms = stopwatch(f"project {tile}", partial(project, weight, k, min_per_row=FLOOR,
                                                  min_per_col=FLOOR, backend="triton"))
        rows.append({"tile": dataclasses.asdict(tile), "ms": ms})
    timed = [r for r in rows if isinstance(r["ms"], float)]
    best = min(timed, key=lambda r: r["ms"])["tile"] if timed else dataclasses.asdict(default)
    triton_project.PROJECT_TILE = triton_project.ProjectTile(**best)
    return {"K": in_f, "N": out_f, "tiles": rows, "chosen": best}


def bench_ops(setup: Setup, stopwatch: Stopwatch, in_f: int, out_f: int, density: float) -> dict:
    """Forward, input gradient and sampled weight gradient, every implementation."""
    device, dtype, tokens = setup.device, setup.dtype, setup.tokens
    weight = masked_weight(out_f, in_f, density, setup)
    x = torch.randn(tokens, in_f, device=device)
    dy = torch.randn(tokens, out_f, device=device)
    w, xs, dys = weight.to(dtype), x.to(dtype), dy.to(dtype)
    xt, dyt = xs.t().contiguous(), dys.t().contiguous()
    rows, cols = compress(w), compress(w.t())
    result: dict = {"K": in_f, "N": out_f, "density": float((weight != 0).float().mean())}

    spmm, sddmm = _ops_backend(setup)
    ops = {}
    ops["ours"] = {
        "fwd": lambda: spmm(rows, xt),
        "dx": lambda: spmm(cols, dyt),
        "dw_mask": lambda: sddmm(rows, dyt, xt),
    }
    ops["dense"] = {
        "fwd": lambda: xs @ w.t(),
        "dx": lambda: dys @ w,
        "dw_mask": lambda: dyt @ xs,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.sparse "beta" warnings
        csr, csc = w.to_sparse_csr(), w.t().contiguous().to_sparse_csr()
        ops["torch_csr"] = {
            "fwd": lambda: torch.sparse.mm(csr, xt),
            "dx": lambda: torch.sparse.mm(csc, dyt),
            "dw_mask": lambda: torch.sparse.sampled_addmm(csr, dyt, xs, beta=0.0),
        }
        for block in (16, 32):
            bsr = w.to_sparse_bsr((block, block))
            bsc = w.t().contiguous().to_sparse_bsr((block, block))
            result[f"bsr{block}_block_fill"] = bsr.values().shape[0] / (
                (out_f // block) * (in_f // block)
            )
            ops[f"torch_bsr{block}"] = {
                "fwd": lambda bsr=bsr: torch.sparse.mm(bsr, xt),
                "dx": lambda bsc=bsc: torch.sparse.mm(bsc, dyt),
                "dw_mask": lambda bsr=bsr: torch.sparse.sampled_addmm(bsr, dyt, xs, beta=0.0),
            }

    reference = {
        "fwd": x @ weight.t(),
        "dx": dy @ weight,
        "dw_mask": ((dy.t() @ x) * (weight != 0))[rows.row.long(), rows.col.long()],
    }
    result["error"] = {op: relative_error(fn(), reference[op]) for op, fn in ops["ours"].items()}
    del reference
    result["ms"] = {
        name: {op: stopwatch(f"ops {name}", fn) for op, fn in impl.items()}
        for name, impl in ops.items()
    }
    return result


FLOOR = 4  # per neuron, as the trainer's default sparsity.min_per_neuron


def mask_update(weight: Tensor, k: int, backend: str) -> None:
    """The per-step update: the top-k mask with the floors, then both compressed copies (the
    unfused composition of ``project_torch``, with ``backend``'s select)."""
    masked = weight * topk_mask(weight, k, min_per_row=FLOOR, min_per_col=FLOOR, backend=backend)
    capacity = capacity_of(weight, k, FLOOR, FLOOR)
    compress(masked, capacity)
    compress(masked.t(), capacity)


def cuda_graph(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` captured once as a CUDA graph (fails if ``fn`` synchronises with the host)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def bench_mask(setup: Setup, stopwatch: Stopwatch, in_f: int, out_f: int, density: float) -> dict:
    """Mask update: ``topk_mask`` against ``torch.topk``, and the whole per-step update, unfused
    (:func:`mask_update`) and, on the Triton backend, fused (``project``), each eagerly and as
    a CUDA graph."""
    weight = torch.randn(out_f, in_f, device=setup.device)
    k = round(density * weight.numel())
    by_topk = torch.zeros(weight.numel(), dtype=torch.bool, device=setup.device)
    by_topk[torch.topk(weight.abs().flatten(), k).indices] = True
    result: dict = {"K": in_f, "N": out_f, "density": density, "ms": {}}
    ms = result["ms"]
    ms["torch.topk"] = stopwatch("mask torch.topk", lambda: torch.topk(weight.abs().flatten(), k))
    for backend in setup.mask_backends:
        try:
            mask = topk_mask(weight, k, backend=backend)
            result[f"{backend}_matches_topk"] = bool((mask.flatten() == by_topk).all())
        except Exception as error:
            result[f"{backend}_matches_topk"] = f"failed: {_reason(error)}"
        ms[f"topk_mask_{backend}"] = stopwatch(
            f"mask {backend}", lambda backend=backend: topk_mask(weight, k, backend=backend)
        )
        # name of the eager timing -> (the update, name of its CUDA-graph timing)
        updates = {f"update_with_floors_{backend}": (partial(mask_update, weight, k, backend),
                                                     f"update_graph_{backend}")}
        if backend == "triton":
            fused = partial(project, weight, k, min_per_row=FLOOR, min_per_col=FLOOR,
                            backend="triton")
            updates["update_fused_triton"] = (fused, "update_fused_graph_triton")
            try:
                twin = project_torch(weight, k, min_per_row=FLOOR, min_per_col=FLOOR)
                result["fused_matches_twin"] = same_projection(fused(), twin)
            except Exception as error:
                result["fused_matches_twin"] = f"failed: {_reason(error)}"
        for name, (update, graph_name) in updates.items():
            ms[name] = stopwatch(name, update)
            if setup.device.type == "cuda":
                try:
                    replay = cuda_graph(update)
                except Exception as error:
                    ms[graph_name] = f"unsupported: {_reason(error)}"
                else:
                    ms[graph_name] = stopwatch(name, replay)
    masked = weight * by_topk.view_as(weight)
    for finder in SLOT_FINDERS:
        ms[f"csr_and_csc_build_{finder}"] = stopwatch(
            f"mask build {finder}",
            lambda finder=finder: (compress(masked, k, finder), compress(masked.t(), k, finder)),
        )
    return result


def profile_table(fn: Callable[[], object], rows: int = 15) -> str:
    """The CUDA kernels of three calls of ``fn``, by total device time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
    averages = prof.key_averages()
    for key in ("device_time_total", "cuda_time_total"):
        try:
            return averages.table(sort_by=key, row_limit=rows)
        except (AttributeError, KeyError, ValueError):
            continue
    return averages.table(row_limit=rows)


def profile_anchor(setup: Setup) -> dict:
    """Where the time goes at the anchor (1024→4096, 1 %): layer step and mask update."""
    in_f, out_f, density = 1024, 4096, 0.01
    weight = masked_weight(out_f, in_f, density, setup).to(setup.dtype).requires_grad_()
    nnz = round(density * weight.numel())
    x = torch.randn(setup.tokens, in_f, device=setup.device, dtype=setup.dtype)
    x.requires_grad_()
    dy = torch.randn(setup.tokens, out_f, device=setup.device, dtype=setup.dtype)
    raw = torch.randn(out_f, in_f, device=setup.device)

    def layer() -> None:
        sparse_linear(x, weight, backend=setup.ours, nnz=nnz).backward(dy)

    from sparsecircuits.kernels.triton_spmm import feature_major_triton

    result: dict = {
        "transpose_dy_matches": bool(torch.equal(feature_major_triton(dy), dy.t().contiguous())),
        "transpose_dy_ms": {
            "torch": time_ms(lambda: dy.t().contiguous(), setup.device),
            "triton": time_ms(lambda: feature_major_triton(dy), setup.device),
        },
    }
    fused = partial(project, raw, nnz, min_per_row=FLOOR, min_per_col=FLOOR, backend="triton")
    for name, fn in (("layer", layer), ("mask_update", partial(mask_update, raw, nnz, setup.ours)),
                     ("mask_update_fused", fused)):
        try:
            result[name] = profile_table(fn)
        except Exception as error:
            result[name] = f"failed: {_reason(error)}"
    return result


def bench_layer(
    setup: Setup, stopwatch: Stopwatch, in_f: int, out_f: int, density: float,
    backends: tuple[str, ...] = ("ours", "ours_dw_mask"),
) -> dict:
    """Full layer forward+backward: ``sparse_linear`` against ``nn.Linear`` (dense weights).

    The sparse backends get the top-k budget as ``nnz``, as in training (no host sync). The
    backends take turns for ``setup.layer_rounds`` rounds and each keeps its fastest time.
    """
    weight = masked_weight(out_f, in_f, density, setup).to(setup.dtype).requires_grad_()
    nnz = round(density * weight.numel())
    bias = torch.zeros(out_f, device=setup.device, dtype=setup.dtype, requires_grad=True)
    x = torch.randn(setup.tokens, in_f, device=setup.device, dtype=setup.dtype)
    x.requires_grad_()
    dy = torch.randn(setup.tokens, out_f, device=setup.device, dtype=setup.dtype)
    linear = torch.nn.Linear(in_f, out_f, device=setup.device, dtype=setup.dtype)

    def step(backend: str, weight_grad: str = "dense") -> Callable[[], None]:
        def run() -> None:
            y = sparse_linear(x, weight, bias, backend=backend, weight_grad=weight_grad, nnz=nnz)
            y.backward(dy)
        return run

    runs = {
        "nn.Linear": lambda: linear(x).backward(dy),
        "dense": step("dense"),
        "ours": step(setup.ours),
        "ours_dw_mask": step(setup.ours, "mask"),
        "auto": step("auto"),
    }
    names = ("nn.Linear", "dense", *backends)
    rounds = [{name: stopwatch(f"layer {name}", runs[name]) for name in names}
              for _ in range(setup.layer_rounds)]
    ms = {name: _fastest([times[name] for times in rounds]) for name in names}
    return {"K": in_f, "N": out_f, "density": density, "ms": ms}


def _fastest(results: list[float | str]) -> float | str:
    """The fastest of a backend's timings, or its first skip or error if it has one."""
    failures = [r for r in results if isinstance(r, str)]
    return failures[0] if failures else min(results)


def ratio_table(rows: list[dict], baseline: str, op: str | None = None) -> str:
    """One line per (shape, density): the baseline's time, then baseline ÷ each other time."""
    lines = []
    for row in rows:
        timings = {name: t[op] for name, t in row["ms"].items()} if op else row["ms"]
        base = timings.get(baseline)
        if not isinstance(base, float):
            lines.append(f"{row['K']:>5}→{row['N']:<5} {op or ''}: {baseline} {base}")
            continue
        cells = [f"{baseline} {base:9.3f} ms"] + [
            f"{name} " + (f"{base / value:6.2f}x" if isinstance(value, float) else "  n/a ")
            for name, value in timings.items()
            if name != baseline
        ]
        shape = f"{row['K']:>5}→{row['N']:<5} ρ={100 * row['density']:6.2f}%"
        lines.append(f"{shape} {op or '':7} " + " | ".join(cells))
    return "\n".join(lines)


def table_rows(layers: list[dict]) -> list[tuple[int, int, float, float, float]]:
    """The dispatcher's rows from layer timings (points where either time is missing drop)."""
    return [
        (r["K"], r["N"], r["density"], round(r["ms"]["dense"], 3), round(r["ms"]["ours"], 3))
        for r in layers
        if isinstance(r["ms"]["dense"], float) and isinstance(r["ms"]["ours"], float)
    ]


def write_table(layers: list[dict], setup: Setup) -> Path:
    """Write the layer timings as the dispatcher's table for this device and dtype."""
    device, dtype = table_key(setup.device.type, setup.dtype)
    path = table_path(device, dtype)
    about = (f"{device.upper()} {dtype} timings for dispatch.py, written by `python "
             f"benchmarks/kernels_bench.py --write-table`. Layer forward+backward, "
             f"T = {setup.tokens}, {setup.dtype}, fastest of {setup.layer_rounds} interleaved "
             f"rounds, torch threads: {torch.get_num_threads()}, {device_name(setup.device)}.")
    rows = ",\n".join(f"  {json.dumps(list(row))}" for row in table_rows(layers))
    path.write_text(
        f'{{\n "about": {json.dumps(about)},\n "sparse_backend": "{setup.ours}",\n'
        ' "columns": ["in_features", "out_features", "density", "dense_ms", "sparse_ms"],\n'
        f' "rows": [\n{rows}\n ]\n}}\n'
    )
    return path


OFF_GRID = ((768, 3072, 0.015), (3072, 768, 0.005), (1536, 6144, 0.0007), (256, 1024, 0.03))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--write-table", action="store_true",
                        help="rewrite the dispatcher's table for this device type")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"],
                        help="activations and weights (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--layers-only", action="store_true",
                        help="only the layer timings (and the dispatcher check): for a table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = GPU if torch.cuda.is_available() else CPU
    if args.dtype:
        setup = dataclasses.replace(setup, dtype=getattr(torch, args.dtype))
    if setup is CPU:
        print(f"No CUDA device: timing the CPU paths (T={setup.tokens}, fp32, ours = torch twin).")
    torch.manual_seed(0)
    default_dtype = (GPU if setup.device.type == "cuda" else CPU).dtype
    _, dtype_name = table_key(setup.device.type, setup.dtype)
    suffix = "" if setup.dtype == default_dtype else f"_{dtype_name}"
    out = args.out or Path("benchmarks/results") / f"kernels_{setup.device.type}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report: dict = {
        "device": device_name(setup.device),
        "versions": {"torch": torch.__version__, "triton": _triton_version(),
                     "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "load_average_before": list(os.getloadavg()),  # other processes skew CPU timings
        "tokens": setup.tokens,
        "dtype": str(setup.dtype),
    }
    stopwatch = Stopwatch(setup)

    def section(name: str, value: object) -> None:
        report[name] = value
        report["seconds"] = round(time.perf_counter() - start, 1)
        report["load_average_after"] = list(os.getloadavg())
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"{name} done ({report['seconds']} s)", flush=True)

    section("correctness", check_correctness(setup))
    print(f"correctness: all_ok={report['correctness']['all_ok']}")
    if setup.ours == "triton" and not args.layers_only:
        section("spmm_tiles", sweep_spmm_tiles(setup, stopwatch))
        print(f"spmm tile: {report['spmm_tiles']['chosen']}")
    if "triton" in setup.mask_backends and not args.layers_only:
        section("project_tiles", sweep_project_tiles(setup, stopwatch))
        print(f"projection tile: {report['project_tiles']['chosen']}")
    ops: list[dict] = []
    masks: list[dict] = []
    for k, n in [] if args.layers_only else setup.shapes:
        ops += [bench_ops(setup, stopwatch, k, n, d) for d in setup.densities]
        masks += [bench_mask(setup, stopwatch, k, n, d) for d in setup.densities]
        section("ops", ops)
        section("mask_update", masks)
    layers: list[dict] = []
    for k, n in setup.layer_shapes:
        layers += [bench_layer(setup, stopwatch, k, n, d) for d in setup.layer_densities]
        section("layer", layers)
    # The dispatcher on this run's own table, at shapes and densities it has not measured.
    from sparsecircuits.kernels import dispatch

    dispatch.TABLES[table_key(setup.device.type, setup.dtype)] = (setup.ours, table_rows(layers))
    dispatch.forget_decisions()
    section("auto_off_grid", [
        bench_layer(setup, stopwatch, k, n, d, backends=("ours", "auto")) for k, n, d in OFF_GRID
    ])
    if setup.device.type == "cuda" and not args.layers_only:
        section("profile", profile_anchor(setup))
        for name, table in report["profile"].items():
            print(f"\n== profile: {name}\n{table}")

    print("\n== ops (dense ÷ time; correctness: relative error of ours vs fp32 dense)")
    for op in ("fwd", "dx", "dw_mask"):
        print(ratio_table(ops, "dense", op))
    worst = max((max(row["error"].values()) for row in ops), default=float("nan"))
    print(f"worst relative error of ours over all ops: {worst:.2e}")
    print("\n== mask update (torch.topk ÷ time)")
    print(ratio_table(masks, "torch.topk"))
    print("\n== layer forward+backward (nn.Linear ÷ time)")
    print(ratio_table(layers, "nn.Linear"))
    print("\n== dispatcher off the measured grid (nn.Linear ÷ time)")
    print(ratio_table(report["auto_off_grid"], "nn.Linear"))
    print(f"\ncorrectness sweep all ok: {report['correctness']['all_ok']}")
    print(f"wrote {out} ({report['seconds']} s)")
    if args.write_table:
        print(f"wrote {write_table(layers, setup)}")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if line.startswith("model name")
    ]
    name = models[0] if models else platform.processor() or platform.machine()
    return f"{name} ({os.cpu_count()} cores)"


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


if __name__ == "__main__":
    main()
