"""The demo end to end on a small step budget: both runs trained and extracted, and every
promised file written (summaries, figures, the viewer page, REPORT.md with no bare nan)."""

from __future__ import annotations

import re
from pathlib import Path

from sparsecircuits.cli import main
from sparsecircuits.rundir import RunDir

SMALL = [
    'schedule.sources=["quote", "closer"]', "schedule.steps_per_block=4", "schedule.cycles=2",
    "schedule.warmup_steps=8", "model.d_model=32", "model.n_heads=2", "model.d_mlp=64",
    "data.eval_examples=16", "data.eval_windows=4", "run.log_every=1",
]


def test_the_demo_writes_every_promised_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    main(["demo", "--out", str(out), *[a for s in SMALL for a in ("--set", s)]])
    printed = capsys.readouterr().out
    cyclic, control = RunDir(out), RunDir(f"{out}_shuffled")
    for run in (cyclic, control):
        steps = run.checkpoint_steps()
        assert steps and run.circuit_steps() == steps and run.summary.exists()
    assert any(seed == 1 for step in cyclic.circuit_steps()
               for _, seed in cyclic.circuit_files(step))  # a noise floor for the cyclic run
    figures = {p.name for p in cyclic.figures.iterdir()}
    assert {"index.md", "loss_matrix.png", "loss_curves.pdf", "recovery.png"} <= figures
    report = cyclic.report.read_text()
    for png in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (cyclic.root / png).exists(), png
    assert "| `loss.recovery_score` |" in report and "viewer" in report
    assert not re.search(r"\bnan\b", report), "every undefined number is said in words"
    page = next(cyclic.viewer.glob("*.html"))
    assert page.stat().st_size > 10_000
    assert str(cyclic.report) in printed and str(page) in printed
