"""The kernel benchmark's own code runs end to end (at toy sizes on the CPU), so a GPU session
does not spend its few minutes of device time on a broken script."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from sparsecircuits.kernels import dispatch, triton_project

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import kernels_bench as bench

pytestmark = [
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
    # triton 3.6's interpreter reads loop bounds through a 1-element array (fine below numpy 2.4)
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]


@pytest.mark.parametrize("layers_only", [False, True])
def test_bench_writes_every_section(tmp_path, monkeypatch, request, layers_only):
    toy = dataclasses.replace(bench.CPU, tokens=128, shapes=((32, 32),), densities=(0.05,),
                              layer_shapes=((64, 96), (96, 64)), layer_densities=(0.05, 1.0),
                              # the GPU's mask paths too (slow under the interpreter)
                              mask_backends=("torch",) if layers_only else ("torch", "triton"))
    monkeypatch.setattr(bench, "CPU", toy)
    monkeypatch.setattr(bench, "OFF_GRID", ((80, 80, 0.02),))
    monkeypatch.setattr(triton_project, "PROJECT_TILE", triton_project.PROJECT_TILE)  # swept
    check = bench.check_correctness
    monkeypatch.setattr(bench, "check_correctness",
                        lambda setup: check(setup, 4, 40, mask_shapes=((5, 7, 2),)))
    monkeypatch.setattr(dispatch, "TABLES", dict(dispatch.TABLES))  # the run replaces one
    monkeypatch.setattr(dispatch, "TABLE_DIR", tmp_path)  # --write-table writes here
    request.addfinalizer(dispatch.forget_decisions)  # ... and caches decisions from it
    threads = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(threads))  # the run sets --threads 1
    out = tmp_path / "bench.json"
    argv = ["bench", "--out", str(out), "--threads", "1"] + (
        ["--layers-only", "--write-table"] if layers_only else [])
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    report = json.loads(out.read_text())
    assert report["correctness"]["all_ok"]
    assert len(report["layer"]) == 4 and len(report["auto_off_grid"]) == 1
    assert all(isinstance(v, float) for row in report["layer"] for v in row["ms"].values())
    if layers_only:
        assert "ops" not in report or report["ops"] == []
        written = dispatch.read_tables()[("cpu", "float32")]  # what the dispatcher would read
        assert written == ("torch", [tuple(row) for row in bench.table_rows(report["layer"])])
    else:
        fwd = report["ops"][0]
        assert fwd["error"]["fwd"] < 1e-5 and isinstance(fwd["ms"]["dense"]["fwd"], float)
        mask = report["mask_update"][0]
        assert mask["torch_matches_topk"] and mask["triton_matches_topk"]
        assert mask["fused_matches_twin"] is True
        assert all(isinstance(mask["ms"][name], float) for name in (
            "update_with_floors_torch", "update_with_floors_triton", "update_fused_triton"))
        assert len(report["correctness"]["masks"]) == 10
        tiles = report["project_tiles"]
        assert len(tiles["tiles"]) == len(bench.PROJECT_TILES)
        assert tiles["chosen"] in [row["tile"] for row in tiles["tiles"]]
