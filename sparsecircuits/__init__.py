"""sparsecircuits: weight-sparse transformers trained under cyclic schedules, and their circuits
over time.

Modules, from the ground up (a module imports only from the floors below it):

1. ``kernels`` (``sparsecircuits.kernels``), ``config``, ``hooks``, ``data``, ``metrics``,
   ``progress``
2. ``model``, ``sparsity``, ``schedules``
3. ``checkpoint``
4. ``train``, ``circuits``
5. ``cli``
"""

__version__ = "0.1.0"
