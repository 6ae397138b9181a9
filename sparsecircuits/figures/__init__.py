"""Figures of a run for papers: matplotlib, one shared style, PDF/SVG/PNG byte-identical for the
same data.

>>> from sparsecircuits import figures
>>> ax = figures.loss_matrix("runs/demo")
>>> figures.write_figures("runs/demo", "runs/demo/figures", control="runs/shuffled")

Each function takes the run (a folder, a ``Run``, a ``RunAnalysis``, or the data objects) and
an optional ``ax`` (``fig`` for multi-panel figures).
"""

from sparsecircuits.figures.data import RunData, run_data
from sparsecircuits.figures.plots import (
    churn,
    circuit,
    circuit_exposures,
    edge_survival,
    jaccard,
    loss_curves,
    loss_matrix,
    recovery,
)
from sparsecircuits.figures.style import ONE_COLUMN, TWO_COLUMN, save, source_color, style
from sparsecircuits.figures.write import FORMATS, write_figures

__all__ = [
    "FORMATS",
    "ONE_COLUMN",
    "TWO_COLUMN",
    "RunData",
    "churn",
    "circuit",
    "circuit_exposures",
    "edge_survival",
    "jaccard",
    "loss_curves",
    "loss_matrix",
    "recovery",
    "run_data",
    "save",
    "source_color",
    "style",
    "write_figures",
]
