"""The anticipation experiment of docs/RESULTS.md: cyclic against shuffled over corpus documents,
at several matrix densities and training seeds; loss-side metrics with intervals over seeds.

    .venv/bin/python benchmarks/anticipation.py OUT_DIR [--seeds 3] [--densities 1,0.25,0.0625]
        [--parallel 2] [--cycles 4]

Trains every (density, arm, seed) run with `sparsecircuits train tiny` at one torch thread,
``--parallel`` at a time (resuming what is there), then prints and writes ``results.json``: per
density and arm, the signed recovery score (``metrics.signed_recovery_score``) and the loss
just before re-exposure, each as a mean over seeds with a Student-t interval
(``metrics.seed_interval``), and the per-seed values.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from sparsecircuits import metrics
from sparsecircuits.behaviour import behaviour

DOCUMENTS = 16


def overrides(density: float, arm: str, seed: int, cycles: int) -> list[str]:
    """The config of one run: 16 deduplicated documents round robin (or shuffled), no
    warm-up, dense-to-``density`` anneal, lr 1e-3, 15 steps per block."""
    sources = ", ".join(f'"doc:{i}"' for i in range(DOCUMENTS))
    return [
        f"schedule.sources=[{sources}]", f'schedule.kind="{arm}"', "schedule.steps_per_block=15",
        f"schedule.cycles={cycles}", "schedule.warmup_steps=0", f"schedule.seed={seed}",
        f"data.documents={DOCUMENTS}", "data.document_windows=4", "data.source_rows=8",
        "data.lm_rows=8", "data.eval_examples=64", "data.eval_windows=16",
        "optimizer.lr=0.001", f"sparsity.matrix_density={density}",
        f"sparsity.embed_density={max(density, 0.25)}", f"run.seed={seed}", "run.threads=1",
        "run.log_every=5",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--densities", default="1,0.25,0.0625")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=4)
    args = parser.parse_args()
    densities = [float(d) for d in args.densities.split(",")]
    runs = {(d, arm, s): args.out / f"d{d:g}_{arm}_s{s}" for d in densities
            for arm in ("round_robin", "shuffled") for s in range(args.seeds)}
    queue = list(runs.items())
    running: list[subprocess.Popen] = []
    while queue or running:
        while queue and len(running) < args.parallel:
            (d, arm, s), path = queue.pop(0)
            command = [sys.executable, "-m", "sparsecircuits.cli", "train", "tiny", "--out",
                       str(path), "--resume"]
            for text in overrides(d, arm, s, args.cycles):
                command += ["--set", text]
            running.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        running[0].wait()
        if running[0].returncode:
            raise SystemExit(f"a run failed: {running[0].args}")
        running = [p for p in running if p.poll() is None]
    results = {}
    for d in densities:
        for arm in ("round_robin", "shuffled"):
            reports = [behaviour(runs[d, arm, s], n_boot=200) for s in range(args.seeds)]
            scores = [r.recovery[0] for r in reports]
            pre = [float(np.mean(list(r.pre_exposure.values()))) for r in reports]
            results[f"{d:g}/{arm}"] = {
                "recovery_score": metrics.seed_interval(scores), "recovery_per_seed": scores,
                "pre_exposure_loss": metrics.seed_interval(pre), "pre_exposure_per_seed": pre,
            }
            r, p = results[f"{d:g}/{arm}"]["recovery_score"], results[f"{d:g}/{arm}"][
                "pre_exposure_loss"]
            print(f"density {d:<7g} {arm:12} recovery {r[0]:+.3f} [{r[1]:+.3f}, {r[2]:+.3f}]  "
                  f"pre-exposure loss {p[0]:.3f} [{p[1]:.3f}, {p[2]:.3f}]  "
                  f"per seed {[round(x, 3) for x in scores]}", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
