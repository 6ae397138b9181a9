"""Training throughput: our trainer (sparsity on) against a plain dense torch loop.

Three arms train the same architecture on batches of the same shape, in the same process,
alternating in rounds so that load from elsewhere hits all alike:

- ``ours``: the trainer as configured (``model.kernel_backend``, ``"auto"`` in the presets, so
  the dispatcher picks each layer's kernel);
- ``ours_dense``: the same trainer with every layer on the dense kernel, so that
  ``ours / ours_dense`` is what the dispatcher's choices cost or gain inside a training step;
- ``dense``: forward, cross-entropy, backward and AdamW on pre-made batches, no sparsity.

Our trainer's steps are timed after the sparsity anneal, where every step pays for the top-k
projection; they include making the batch, RMS-normalising the gradient, the learning-rate
schedule and the churn count. ``ours_dense / dense`` is what sparse training costs over a
dense loop.

    python benchmarks/train_throughput.py [--presets tiny small] [--steps 20] [--rounds 5]
    python benchmarks/train_throughput.py --set model.kernel_backend=\\"torch\\" --json out.json

Prints tokens per second of each arm and the ratios (targets on CPU: ours / dense >= 0.85,
ours / ours_dense >= 0.97).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from kernels_bench import device_name

from sparsecircuits.config import load_config
from sparsecircuits.model import SparseGPT
from sparsecircuits.train import Trainer


def sparse_trainer(preset: str, overrides: list[str]) -> tuple[Trainer, int]:
    """A trainer projected to its target density, and the first step past the anneal."""
    config = load_config(preset, ["run.threads=2", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp)
    sparse_from = int(config.sparsity.anneal_end * trainer.schedule.total_steps) + 1
    trainer.sparsifier.project(sparse_from)  # start from the target density
    return trainer, sparse_from


def time_ours(trainer: Trainer, first_step: int, steps: int) -> float:
    """Seconds per step of the real training step, in the sparse regime."""
    start = time.perf_counter()
    for step in range(first_step, first_step + steps):
        trainer.step = step
        trainer._train_step(trainer.schedule(step))
    return (time.perf_counter() - start) / steps


def time_dense(model: SparseGPT, optimizer: torch.optim.Optimizer, batches: list) -> float:
    """Seconds per step of a plain dense loop."""
    start = time.perf_counter()
    for tokens in batches:
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


def bench(preset: str, overrides: list[str], steps: int, rounds: int) -> dict:
    """Median tokens per second of the three arms over ``rounds`` rounds of ``steps`` steps."""
    ours, sparse_from = sparse_trainer(preset, overrides)
    ours_dense, _ = sparse_trainer(preset, [*overrides, 'model.kernel_backend="dense"'])
    dense_cfg = ours_dense.config.model
    dense = SparseGPT(dense_cfg)
    optimizer = torch.optim.AdamW(dense.parameters(), lr=1e-3)
    rows = ours.config.data.source_rows + ours.config.data.lm_rows
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, dense_cfg.vocab_size, (rows, dense_cfg.n_ctx + 1),
                             generator=generator) for _ in range(steps)]
    arms = {
        "ours": lambda r: time_ours(ours, sparse_from + 3 + r * steps, steps),
        "ours_dense": lambda r: time_ours(ours_dense, sparse_from + 3 + r * steps, steps),
        "dense": lambda r: time_dense(dense, optimizer, batches),
    }
    time_ours(ours, sparse_from, 3)  # warm-up
    time_ours(ours_dense, sparse_from, 3)
    time_dense(dense, optimizer, batches[:3])
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm, run in arms.items():
            seconds[arm].append(run(r))
    tokens = rows * dense_cfg.n_ctx
    tps = {arm: tokens / statistics.median(s) for arm, s in seconds.items()}
    return {
        "preset": preset, "tokens_per_step": tokens, "backend": ours.config.model.kernel_backend,
        **{f"{arm}_tokens_per_s": round(v) for arm, v in tps.items()},
        "ours/dense": round(tps["ours"] / tps["dense"], 3),
        "ours/ours_dense": round(tps["ours"] / tps["ours_dense"], 3),
        "ours_dense/dense": round(tps["ours_dense"] / tps["dense"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)  # every arm at the presets' run.threads
    results = [bench(p, args.set, args.steps, args.rounds) for p in args.presets]
    print(f"{'preset':8} {'tokens/step':>11} {'ours':>8} {'ours_dense':>10} {'dense':>8}   "
          f"{'ours/dense':>10} {'ours/ours_dense':>15}   (tokens/s)")
    for r in results:
        print(f"{r['preset']:8} {r['tokens_per_step']:11d} {r['ours_tokens_per_s']:8d} "
              f"{r['ours_dense_tokens_per_s']:10d} {r['dense_tokens_per_s']:8d}   "
              f"{r['ours/dense']:10.3f} {r['ours/ours_dense']:15.3f}")
    if args.json:
        machine = {"device": device_name(torch.device("cpu")),
                   "threads": torch.get_num_threads(), "torch": torch.__version__}
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
