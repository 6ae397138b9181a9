"""Benchmark the sparse kernels against dense and torch.sparse, side by side in one run.

    python -m sparsecircuits.kernels.bench [--out FILE] [--write-table] [--threads N]

On a CUDA machine: T = 65,536 tokens, bf16, shapes (K→N) 1024→4096, 4096→1024, 1024→1024,
2048→8192, 512→2048 at densities 5, 2, 1, 0.3, 0.1 %. For each op (forward, input gradient,
weight gradient sampled at the mask) it checks correctness against an fp32 dense product and
times dense matmul on zero-filled weights, torch CSR, torch BSR (blocks 16 and 32) and ours
(Triton); then the mask update (``topk_mask`` against ``torch.topk``, plus the CSR/CSC build);
then a full layer forward+backward, ``sparse_linear`` against ``nn.Linear``.

On a CPU the same comparisons run at CPU sizes (T = 4096, fp32; "ours" is the torch twin): the
ops and mask update at 1024→4096, 1024→1024, 512→2048, and the layer at the pilot model's
shapes up to d 1024 and densities up to 100 %. ``--write-table`` turns the layer timings into
``cpu_table.py``, the table the dispatcher reads. A few minutes on 2 idle cores.

Prints ratio tables (dense time ÷ each time: above 1 is faster than dense) and writes JSON
with the device name and the versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pprint
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .csr import compress
from .linear import sparse_linear
from .spmm import sddmm_torch, spmm_torch
from .topk import topk_mask

TABLE_PATH = Path(__file__).with_name("cpu_table.py")


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
)


def time_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of ``fn`` in milliseconds: ``do_bench`` on CUDA; on a CPU the fastest of a few
    warm runs, since other processes on a shared machine only ever add time."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=10, rep=50)
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > 0.3:  # slow paths (BSR on a CPU): one warm measurement is enough
        return first * 1e3
    times = [first]
    for _ in range(max(2, min(20, int(0.3 / max(first, 1e-6))))):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def masked_weight(out_features: int, in_features: int, density: float, setup: Setup) -> Tensor:
    """A Gaussian weight projected to its top-k magnitudes (k = density × size)."""
    weight = torch.randn(out_features, in_features, device=setup.device)
    k = round(density * weight.numel())
    return weight * topk_mask(weight, k)


def relative_error(value: Tensor, reference: Tensor) -> float:
    scale = reference.abs().max().clamp(min=1e-30)
    return float((value.float() - reference).abs().max() / scale)


def attempt(fn: Callable[[], float]) -> float | str:
    """The measurement, or the reason it could not be taken (e.g. an unsupported dtype)."""
    try:
        return fn()
    except Exception as error:  # record whatever a torch.sparse path refuses, keep going
        return f"unsupported: {str(error).splitlines()[0][:120]}"


def bench_ops(setup: Setup, in_f: int, out_f: int, density: float) -> dict:
    """Forward, input gradient and sampled weight gradient, every implementation."""
    device, dtype, tokens = setup.device, setup.dtype, setup.tokens
    weight = masked_weight(out_f, in_f, density, setup)
    x = torch.randn(tokens, in_f, device=device)
    dy = torch.randn(tokens, out_f, device=device)
    w, xs, dys = weight.to(dtype), x.to(dtype), dy.to(dtype)
    xt, dyt = xs.t().contiguous(), dys.t().contiguous()
    rows, cols = compress(w), compress(w.t())
    result: dict = {"K": in_f, "N": out_f, "density": float((weight != 0).float().mean())}

    if setup.ours == "triton":
        from .triton_spmm import sddmm_triton, spmm_triton

        spmm, sddmm = spmm_triton, sddmm_triton
    else:
        spmm, sddmm = spmm_torch, sddmm_torch
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result["ms"] = {
            name: {op: attempt(lambda fn=fn: time_ms(fn, device)) for op, fn in impl.items()}
            for name, impl in ops.items()
        }
    return result


def bench_mask(setup: Setup, in_f: int, out_f: int, density: float) -> dict:
    """Mask update: ``topk_mask`` (torch twin, and Triton on CUDA) against ``torch.topk``."""
    weight = torch.randn(out_f, in_f, device=setup.device)
    k = round(density * weight.numel())
    by_topk = torch.zeros(weight.numel(), dtype=torch.bool, device=setup.device)
    by_topk[torch.topk(weight.abs().flatten(), k).indices] = True
    backends = ["torch", "triton"] if setup.device.type == "cuda" else ["torch"]
    result: dict = {"K": in_f, "N": out_f, "density": density, "ms": {}}
    result["ms"]["torch.topk"] = time_ms(
        lambda: torch.topk(weight.abs().flatten(), k), setup.device
    )
    for backend in backends:
        mask = topk_mask(weight, k, backend=backend)
        result[f"{backend}_matches_topk"] = bool((mask.flatten() == by_topk).all())
        result["ms"][f"topk_mask_{backend}"] = time_ms(
            lambda backend=backend: topk_mask(weight, k, backend=backend), setup.device
        )
    masked = weight * by_topk.view_as(weight)
    result["ms"]["csr_and_csc_build"] = time_ms(
        lambda: (compress(masked, k), compress(masked.t(), k)), setup.device
    )
    return result


def bench_layer(setup: Setup, in_f: int, out_f: int, density: float) -> dict:
    """Full layer forward+backward: ``sparse_linear`` against ``nn.Linear`` (dense weights)."""
    weight = masked_weight(out_f, in_f, density, setup).to(setup.dtype).requires_grad_()
    bias = torch.zeros(out_f, device=setup.device, dtype=setup.dtype, requires_grad=True)
    x = torch.randn(setup.tokens, in_f, device=setup.device, dtype=setup.dtype)
    x.requires_grad_()
    dy = torch.randn(setup.tokens, out_f, device=setup.device, dtype=setup.dtype)
    linear = torch.nn.Linear(in_f, out_f, device=setup.device, dtype=setup.dtype)

    def step(forward: Callable[[], Tensor]) -> Callable[[], None]:
        return lambda: forward().backward(dy)

    runs = {
        "nn.Linear": step(lambda: linear(x)),
        "dense": step(lambda: sparse_linear(x, weight, bias, backend="dense")),
        "ours": step(lambda: sparse_linear(x, weight, bias, backend=setup.ours)),
        "ours_dw_mask": step(
            lambda: sparse_linear(x, weight, bias, backend=setup.ours, weight_grad="mask")
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ms = {name: time_ms(run, setup.device) for name, run in runs.items()}
    return {"K": in_f, "N": out_f, "density": density, "ms": ms}


def ratio_table(rows: list[dict], baseline: str, op: str | None = None) -> str:
    """One line per (shape, density): the baseline's time, then baseline ÷ each other time."""
    lines = []
    for row in rows:
        timings = {name: t[op] for name, t in row["ms"].items()} if op else row["ms"]
        base = timings[baseline]
        cells = [f"{baseline} {base:9.2f} ms"] + [
            f"{name} " + (f"{base / value:6.2f}x" if isinstance(value, float) else "  n/a ")
            for name, value in timings.items()
            if name != baseline
        ]
        shape = f"{row['K']:>5}→{row['N']:<5} ρ={100 * row['density']:6.2f}%"
        lines.append(f"{shape} {op or '':7} " + " | ".join(cells))
    return "\n".join(lines)


def write_table(layers: list[dict], setup: Setup) -> None:
    """Write the CPU layer timings as ``cpu_table.py`` for the dispatcher."""
    timings = [
        (r["K"], r["N"], r["density"], round(r["ms"]["dense"], 3), round(r["ms"]["ours"], 3))
        for r in layers
    ]
    TABLE_PATH.write_text(
        '"""CPU timings for ``dispatch.py``, written by\n'
        "``python -m sparsecircuits.kernels.bench --write-table``.\n\n"
        f"Layer forward+backward, T = {setup.tokens}, {setup.dtype}, "
        f"torch threads: {torch.get_num_threads()}, {_device_name(setup.device)}.\n"
        'Rows: (in_features, out_features, density, dense ms, torch ms).\n"""\n\n'
        "TIMINGS_MS = "
        + pprint.pformat(timings, width=84, compact=True)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--write-table", action="store_true", help="CPU: rewrite cpu_table.py")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = GPU if torch.cuda.is_available() else CPU
    if setup is CPU:
        print(f"No CUDA device: timing the CPU paths (T={setup.tokens}, fp32, ours = torch twin).")
    torch.manual_seed(0)
    load_before = list(os.getloadavg())  # other processes skew CPU timings; say how busy it was
    start = time.perf_counter()
    ops, masks, layers = [], [], []
    for k, n in setup.shapes:
        print(f"ops and mask update {k}→{n} ({time.perf_counter() - start:.0f} s)", flush=True)
        ops += [bench_ops(setup, k, n, d) for d in setup.densities]
        masks += [bench_mask(setup, k, n, d) for d in setup.densities]
    for k, n in setup.layer_shapes:
        print(f"layer {k}→{n} ({time.perf_counter() - start:.0f} s)", flush=True)
        layers += [bench_layer(setup, k, n, d) for d in setup.layer_densities]
    print("\n== ops (dense ÷ time; correctness: max relative error of ours vs fp32 dense)")
    for op in ("fwd", "dx", "dw_mask"):
        print(ratio_table(ops, "dense", op))
    for row in ops:
        print(f"{row['K']}→{row['N']} ρ={row['density']:.4f} error {row['error']}")
    print("\n== mask update (torch.topk ÷ time)")
    print(ratio_table(masks, "torch.topk"))
    print("\n== layer forward+backward (nn.Linear ÷ time)")
    print(ratio_table(layers, "nn.Linear"))
    report = {
        "device": _device_name(setup.device),
        "versions": {"torch": torch.__version__, "triton": _triton_version(),
                     "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "load_average_before_and_after": [load_before, list(os.getloadavg())],
        "tokens": setup.tokens,
        "dtype": str(setup.dtype),
        "seconds": round(time.perf_counter() - start, 1),
        "ops": ops,
        "mask_update": masks,
        "layer": layers,
    }
    out = args.out or Path("benchmarks/results") / f"kernels_{setup.device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {out} ({report['seconds']} s)")
    if args.write_table and setup is CPU:
        write_table(layers, setup)
        print(f"wrote {TABLE_PATH}")


def _device_name(device: torch.device) -> str:
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
