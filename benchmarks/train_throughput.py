"""Training throughput: our trainer (sparsity on) against a plain dense torch loop.

Both train the same architecture on batches of the same shape, on the same machine, in the same
process, alternating in rounds so that load from elsewhere hits both alike. Our trainer's steps
are timed after the sparsity anneal, where every step pays for the top-k projection; they
include making the batch, RMS-normalising the gradient, the learning-rate schedule and the
churn count. The dense loop is forward, cross-entropy, backward and AdamW on pre-made batches.

    python benchmarks/train_throughput.py [--presets tiny small] [--steps 20] [--rounds 5]
    python benchmarks/train_throughput.py --set model.kernel_backend=\\"torch\\"

Prints tokens per second of each and their ratio (target on CPU: >= 0.85).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from sparsecircuits.config import load_config
from sparsecircuits.model import SparseGPT
from sparsecircuits.train import Trainer


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
    config = load_config(preset, ["run.threads=2", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp)
    total = trainer.schedule.total_steps
    sparse_from = int(config.sparsity.anneal_end * total) + 1
    trainer.sparsifier.project(sparse_from)  # start from the target density
    dense_cfg = load_config(preset, ["model.kernel_backend=\"dense\"", *overrides]).model
    dense = SparseGPT(dense_cfg)
    optimizer = torch.optim.AdamW(dense.parameters(), lr=1e-3)
    rows = config.data.source_rows + config.data.lm_rows
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, dense_cfg.vocab_size, (rows, dense_cfg.n_ctx + 1),
                             generator=generator) for _ in range(steps)]
    time_ours(trainer, sparse_from, 3)
    time_dense(dense, optimizer, batches[:3])
    ours, base = [], []
    for r in range(rounds):
        ours.append(time_ours(trainer, sparse_from + 3 + r * steps, steps))
        base.append(time_dense(dense, optimizer, batches))
    tokens = rows * dense_cfg.n_ctx
    ours_tps = tokens / statistics.median(ours)
    dense_tps = tokens / statistics.median(base)
    return {"preset": preset, "tokens_per_step": tokens, "ours_tokens_per_s": round(ours_tps),
            "dense_tokens_per_s": round(dense_tps), "ratio": round(ours_tps / dense_tps, 3),
            "backend": config.model.kernel_backend, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = [bench(p, args.set, args.steps, args.rounds) for p in args.presets]
    print(f"{'preset':8} {'tokens/step':>11} {'ours tok/s':>11} {'dense tok/s':>12} {'ratio':>6}")
    for r in results:
        print(f"{r['preset']:8} {r['tokens_per_step']:11d} {r['ours_tokens_per_s']:11d} "
              f"{r['dense_tokens_per_s']:12d} {r['ratio']:6.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
