"""sparsecircuits: weight-sparse transformers trained under cyclic schedules, and their circuits
over time. Start with ``sparsecircuits.open_run(path)``.

Modules, from the ground up (a module imports only from the floors below it):

1. ``kernels`` (``sparsecircuits.kernels``), ``config``, ``hooks``, ``data``, ``metrics``,
   ``progress``, ``rundir`` (every path inside a run folder)
2. ``model``, ``sparsity``, ``schedules``
3. ``checkpoint``
4. ``train``, ``circuits``, ``behaviour``, ``analysis``
5. ``run`` (``open_run``: the run as one object)
6. ``figures``, ``viewer``, ``sweep`` (grids of runs as jobs, here or on Slurm)
7. ``cli``
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["open_run"]


def __getattr__(name: str) -> Any:
    if name == "open_run":  # imported on first use: `import sparsecircuits` stays light
        from sparsecircuits.run import open_run

        return open_run
    raise AttributeError(f"module 'sparsecircuits' has no attribute {name!r}")
