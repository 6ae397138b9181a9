"""Progress bars for long work (training, extraction): shown in a terminal, quiet in CI."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, show: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar; ``show=None`` shows it only when stderr is a terminal and ``CI`` is unset."""
    if show is None:
        show = sys.stderr.isatty() and not os.environ.get("CI")
    return tqdm(iterable, disable=not show, dynamic_ncols=True, **kwargs)
