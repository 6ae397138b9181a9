"""The trainer on a GPU, end to end: ``run.device="cuda"`` with the dense and the Triton backend.

    python benchmarks/gpu_train.py [--out FILE] [--device cuda] [--quick]

1. ``small`` (the preset's model, four tasks, a 200-step schedule) trained to the end with each
   backend: final task losses and accuracies, the densities the checkpoints record, and whether
   a second dense run gives identical weights.
2. ``wide`` (4 layers, d_model 1024, MLP 4096, matrices at 1 %, 1,024 rows x 64 tokens per
   step): seconds per training step after the density anneal, per backend, in the same process.

``--device cpu --quick`` runs the same code at toy sizes (the sparse backend is then the torch
twin), to check the script without a GPU. Writes JSON with the device name and versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from sparsecircuits import checkpoint as ckpt
from sparsecircuits.config import Config, load_config
from sparsecircuits.train import Trainer, train

TASKS = '["quote", "bracket_depth", "set_or_string", "closer"]'


def small_config(device: str, backend: str, quick: bool) -> Config:
    steps = 10 if quick else 25
    overrides = [
        f'run.device="{device}"', f'model.kernel_backend="{backend}"', f"schedule.sources={TASKS}",
        f"schedule.steps_per_block={steps}", "schedule.cycles=1",
        f"schedule.warmup_steps={4 * steps}", "run.log_every=10",
    ]
    if quick:
        overrides += ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.d_mlp=128",
                      "data.eval_examples=32", "data.eval_windows=8"]
    return load_config("small", overrides)


def wide_config(device: str, backend: str, quick: bool) -> Config:
    width, mlp, rows = (64, 256, 16) if quick else (1024, 4096, 512)
    return load_config("small", [
        f'run.device="{device}"', f'model.kernel_backend="{backend}"',
        f"model.d_model={width}", f"model.d_mlp={mlp}", "model.n_heads=16",
        f"model.d_head={width // 16}",
        "sparsity.matrix_density=0.01", "sparsity.anneal_end=0.2",
        f"data.source_rows={rows}", f"data.lm_rows={rows}", "schedule.sources=[\"quote\"]",
        "schedule.steps_per_block=40", "schedule.cycles=1", "schedule.warmup_steps=0",
    ])


def train_small(device: str, backend: str, quick: bool, folder: Path) -> dict:
    """Train ``small`` to the end; what its last checkpoint and evaluation say."""
    start = time.perf_counter()
    run = train(small_config(device, backend, quick), folder, progress=False)
    seconds = time.perf_counter() - start
    weights, meta = ckpt.load_weights(ckpt.latest_checkpoint(run))
    evals = json.loads((run / "evals.jsonl").read_text().splitlines()[-1])["evals"]
    return {"seconds": round(seconds, 1), "evals": evals, "density": meta["density"],
            "weights": weights}


def step_seconds(device: str, backend: str, quick: bool, steps: int) -> float:
    """Median seconds per ``wide`` training step after the anneal."""
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(wide_config(device, backend, quick), Path(scratch))
        total = trainer.schedule.total_steps
        times = []
        for step in range(total - steps - 3, total):  # the last steps: fully sparse
            trainer.step = step
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            begin = time.perf_counter()
            trainer._train_step(trainer.schedule(step))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - begin)
        return sorted(times[3:])[len(times[3:]) // 2]  # the first 3 compile and warm up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_train.json"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes (a CPU check)")
    args = parser.parse_args()
    sparse = "triton" if args.device.startswith("cuda") else "torch"
    report: dict = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    with tempfile.TemporaryDirectory() as scratch:
        runs = {name: train_small(args.device, backend, args.quick, Path(scratch) / name)
                for name, backend in (("dense", "dense"), ("dense_again", "dense"),
                                      (sparse, sparse))}
    first, again = runs["dense"].pop("weights"), runs["dense_again"].pop("weights")
    runs[sparse].pop("weights")
    report["small"] = runs
    report["small_dense_runs_identical"] = all(torch.equal(first[k], again[k]) for k in first)
    print(json.dumps(report["small"], indent=1))
    report["wide_step_seconds"] = {
        backend: step_seconds(args.device, backend, args.quick, steps=8 if args.quick else 15)
        for backend in ("dense", sparse)
    }
    seconds = report["wide_step_seconds"]
    report["wide_sparse_over_dense_speed"] = seconds["dense"] / seconds[sparse]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"small: dense runs identical: {report['small_dense_runs_identical']}")
    print(f"wide step seconds: {seconds} (dense / {sparse} = "
          f"{report['wide_sparse_over_dense_speed']:.2f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
