"""Every Triton kernel the CPU tests run under the interpreter also compiles for an H100/H200.

The interpreter runs kernels as Python, so it accepts code that triton's compiler refuses (a
loop variable reused with another type, say) and that would first fail on a lent GPU, in its
few minutes. Here the public entry points run once under the interpreter while every kernel
launch is recorded, with its argument types and constexpr values; a subprocess without
``TRITON_INTERPRET`` then compiles each recorded launch for sm_90 (``sm90_compile.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsecircuits.kernels import project, sparse_linear, topk_mask, triton_available

pytestmark = [
    pytest.mark.skipif(not triton_available(), reason="triton is not installed"),
    pytest.mark.interpreter,
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]

TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
         torch.int64: "i64", torch.int32: "i32", torch.int8: "i8", torch.bool: "i1"}


def triton_type(value: object) -> str:
    """The Triton signature type of a launch argument."""
    if isinstance(value, torch.Tensor):
        return "*" + TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for {type(value).__name__}")


def record_launches(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The distinct kernel launches of the public entry points on small fp32 and bf16 inputs."""
    from triton.runtime.interpreter import InterpretedFunction

    seen: dict[str, dict] = {}
    run = InterpretedFunction.run

    def recording(self, *args, grid, warmup, **kwargs):
        named = dict(zip(self.arg_names, args, strict=False)) | kwargs
        constexprs = {p for p, a in self.fn.__annotations__.items() if "constexpr" in str(a)}
        constexprs |= {"num_warps", "num_stages"}  # launch options: kept as values
        types = {name: value if name in constexprs else triton_type(value)
                 for name, value in named.items()}
        launch = {"module": self.fn.__module__, "kernel": self.fn.__name__, "args": types}
        seen.setdefault(json.dumps(launch, sort_keys=True), launch)
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", recording)
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        weight = torch.randn(24, 20, generator=g)
        weight *= torch.rand(24, 20, generator=g) < 0.2
        for weight_grad in ("dense", "mask"):
            x = torch.randn(9, 20, generator=g).to(dtype).requires_grad_()
            w = weight.to(dtype).requires_grad_()
            sparse_linear(x, w, backend="triton", weight_grad=weight_grad).sum().backward()
        project(weight.to(dtype), 40, min_per_row=2, min_per_col=1, backend="triton")
    topk_mask(weight, 40, min_per_row=2, min_per_col=2, backend="triton")
    monkeypatch.undo()
    return list(seen.values())


def test_every_kernel_launch_compiles_for_sm90(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    launches = record_launches(monkeypatch)
    kernels = {launch["kernel"] for launch in launches}
    assert {"_spmm_kernel", "_sddmm_kernel", "_transpose_kernel", "_radix_histogram_kernel",
            "radix_pick_kernel", "_floor_kernel", "_score_histogram_kernel",
            "_copy_kernel"} <= kernels
    spec = tmp_path / "launches.json"
    spec.write_text(json.dumps(launches))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("sm90_compile.py")),
                           str(spec)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(launches)} of {len(launches)} launches compile" in done.stdout
