"""Every notebook in notebooks/ runs top to bottom (nbclient) on a run made here, and fails the
test on any error. The run is the small ``example`` run (``sparsecircuits.examples``), trained
and extracted once for all notebooks."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sparsecircuits.examples import example_run

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("notebooks")
    return example_run(root / "absent", fallback=root / "example", progress=False).path


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, run_dir: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    first = nb.cells.index(next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])))
    # papermill's convention: a cell after the parameters cell overrides them
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(f"RUN = {str(run_dir)!r}"))
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
