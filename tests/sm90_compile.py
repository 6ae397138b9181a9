"""Compile recorded Triton kernel launches for an H100/H200 (CUDA, sm_90) without a GPU.

    python tests/sm90_compile.py LAUNCHES.json

Run without ``TRITON_INTERPRET`` (``test_kernels_compile.py`` records the launches under the
interpreter and runs this in a subprocess). Each launch is ``{"module", "kernel", "args"}``,
``args`` mapping every parameter to a Triton type (``*fp32``, ``i32``, ...) or, for a
``tl.constexpr`` parameter, its value. Triton's own compiler lowers each to PTX and, with the
``ptxas`` it ships, to a cubin; this catches what the interpreter lets through (it runs the
kernels as Python). Prints one line per launch and exits 1 if any fails.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)  # H100 and H200


def compile_launch(launch: dict) -> None:
    """Compile one recorded launch for ``TARGET`` (raises on failure)."""
    kernel = getattr(importlib.import_module(launch["module"]), launch["kernel"])
    constexprs = {p.name: launch["args"][p.name] for p in kernel.params if p.is_constexpr}
    signature = {p.name: "constexpr" if p.is_constexpr else launch["args"][p.name]
                 for p in kernel.params}
    options = {k: launch["args"][k] for k in ("num_warps", "num_stages") if k in launch["args"]}
    compiled = triton.compile(ASTSource(kernel, signature, constexprs), target=TARGET,
                              options=options)
    if "cubin" not in compiled.asm:
        raise RuntimeError("no cubin")


def main() -> None:
    launches = json.loads(Path(sys.argv[1]).read_text())
    failed = 0
    for launch in launches:
        name = f"{launch['module']}.{launch['kernel']}"
        try:
            compile_launch(launch)
        except Exception:
            failed += 1
            print(f"FAILED {name} {launch['args']}\n{traceback.format_exc()}")
        else:
            print(f"ok {name}")
    print(f"{len(launches) - failed} of {len(launches)} launches compile for {TARGET}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
