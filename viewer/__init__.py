"""The circuit viewer: a run's circuits through its checkpoints, in Jupyter or in one HTML file.

- :func:`build_bundle` packs a run into one compact binary (format in :mod:`.bundle`), cached
  in the run folder;
- :class:`CircuitViewer` is the Jupyter widget (needs the ``viewer`` extra: anywidget);
- :func:`export_html` writes the same viewer as one self-contained page
  (``sparsecircuits view RUN [--html out.html]``).
"""

from __future__ import annotations

from typing import Any

from sparsecircuits.viewer.bundle import Bundle, build_bundle, decode
from sparsecircuits.viewer.page import export_html

__all__ = ["Bundle", "CircuitViewer", "build_bundle", "decode", "export_html"]


def __getattr__(name: str) -> Any:
    if name == "CircuitViewer":  # anywidget is an optional dependency
        from sparsecircuits.viewer.widget import CircuitViewer

        return CircuitViewer
    raise AttributeError(name)
