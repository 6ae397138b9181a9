"""Lazy, guarded access to the Triton modules, so the package imports without triton."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from torch import Tensor


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    """Whether the triton package can be imported (imports it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def load_triton_module(name: str, tensor: Tensor) -> ModuleType:
    """Import ``sparsecircuits.kernels.<name>`` to run on ``tensor``'s device, or say why not."""
    if not triton_available():
        raise RuntimeError(
            "backend='triton' needs the triton package: pip install 'sparsecircuits[kernels]'"
        )
    if tensor.device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"backend='triton' runs on CUDA tensors (got {tensor.device}); on a CPU, set "
            "TRITON_INTERPRET=1 before importing triton, or use backend='torch'"
        )
    return importlib.import_module(f"{__package__}.{name}")
