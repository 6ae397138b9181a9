"""The one style every figure of the project is drawn in, and the one way they are saved.

- Widths of a two-column paper: :data:`ONE_COLUMN` (3.4 in) and :data:`TWO_COLUMN` (7.0 in).
- The Okabe–Ito palette (colour-blind safe); every source has one colour in every figure
  (:func:`source_color`), fixed by its name, not by its position in a run.
- Fonts sized for print (7–8 pt at 100 % scale), DejaVu Sans (ships with matplotlib, so the
  same glyphs everywhere); text stays text in SVG (``svg.fonttype='none'``) and TrueType in PDF
  (``pdf.fonttype=42``), so a journal's editor can change it.
- :func:`style` applies all of it through ``matplotlib.rc_context``: nothing global is changed.
- :func:`save` writes PDF, SVG and PNG that are byte-identical for the same data: no creation
  dates, a fixed SVG hash salt, no software stamp in the PNG.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure

from sparsecircuits.circuits.draw import NEGATIVE, POSITIVE

__all__ = ["NEGATIVE", "ONE_COLUMN", "POSITIVE", "TWO_COLUMN", "save", "source_color", "style"]

ONE_COLUMN = 3.4
"""Width of one column of a two-column paper, inches."""
TWO_COLUMN = 7.0
"""Width of the full text of a two-column paper, inches."""

OKABE_ITO = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}
"""Okabe & Ito (2008), the colour-blind-safe palette."""

NEUTRAL = "#7F7F7F"
"""Grey: structure (residual edges), references, controls."""
LIGHT = "#D9D9D9"
"""Light grey: missing data, guides."""

_SOURCE_ORDER = (
    ("quote", "orange"),
    ("bracket_depth", "sky_blue"),
    ("set_or_string", "bluish_green"),
    ("closer", "blue"),
    ("indent", "vermillion"),
    ("flag_flip", "reddish_purple"),
    ("def_arity", "black"),
    ("loop_index", "yellow"),
)
SOURCE_COLORS = {name: OKABE_ITO[colour] for name, colour in _SOURCE_ORDER}
"""The built-in tasks' colours: the six of the presets take the six darkest-contrast colours."""
_OTHER = ("#444444", "#777777", "#AAAAAA")


def source_color(source: str) -> str:
    """The colour of a source in every figure: a built-in task's own, else a grey fixed by the
    name (``corpus`` and ``doc:N`` documents), so it does not depend on which runs are drawn."""
    if source in SOURCE_COLORS:
        return SOURCE_COLORS[source]
    return _OTHER[sum(source.encode()) % len(_OTHER)]


RC: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 7.0,
    "axes.titlesize": 8.0,
    "axes.labelsize": 7.0,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "legend.title_fontsize": 6.5,
    "figure.titlesize": 8.5,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlepad": 4.0,
    "axes.labelpad": 2.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "xtick.major.pad": 2.0,
    "ytick.major.pad": 2.0,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.0,
    "patch.linewidth": 0.5,
    "legend.frameon": False,
    "legend.handlelength": 1.5,
    "legend.borderaxespad": 0.3,
    "image.cmap": "cividis",
    "axes.prop_cycle": mpl.cycler(color=[OKABE_ITO[c] for c in (
        "blue", "orange", "bluish_green", "vermillion", "reddish_purple", "sky_blue", "black")]),
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "svg.fonttype": "none",
    "svg.hashsalt": "sparsecircuits",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "path.simplify": True,
}
"""The rcParams of :func:`style`."""


@contextlib.contextmanager
def style(**overrides: Any) -> Iterator[None]:
    """Draw in the project's style (``RC``, updated with ``overrides``), restoring the caller's
    rcParams afterwards."""
    with mpl.rc_context({**RC, **overrides}):
        yield


METADATA: dict[str, dict[str, Any]] = {
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": "sparsecircuits",
            "Producer": "sparsecircuits (matplotlib)"},
    "svg": {"Date": None, "Creator": "sparsecircuits"},
    "png": {"Software": None},
}
"""Per format, metadata with nothing that changes between two calls (no dates, no versions)."""


def save(fig: Figure, path: str | Path, **kwargs: Any) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) in the project's style, so the same
    figure is the same bytes: pinned metadata, a fixed SVG hash salt. Written to a temporary
    file first, then renamed."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    tmp = path.with_name(f".{path.name}.tmp")  # atomic: a reader never sees half a figure
    try:
        with style():
            fig.savefig(tmp, format=fmt, metadata=METADATA.get(fmt), **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
