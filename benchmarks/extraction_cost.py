"""Circuit extraction cost per task per checkpoint, beside the training time between checkpoints.

    .venv/bin/python benchmarks/extraction_cost.py RUN_DIR [--threads 2] [--checkpoints 6]
                                                   [--json FILE]

Both are timed in this process, with the same thread count: training by running one block of the
run's schedule (``schedule.steps_per_block`` steps from its final weights, plus the evaluation at
the block boundary), before and after the extraction so that a change in the machine's speed
shows; extraction by feeding the run's last checkpoints one at a time to ``extract_run`` in a
scratch copy of the run (the first one starts cold, the others warm). Prints the ratio of warm
extraction to the mean training time (target: below 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from sparsecircuits import open_run
from sparsecircuits.checkpoint import list_checkpoints, load_weights, read_run_config
from sparsecircuits.circuits.extract import extract_run
from sparsecircuits.rundir import RunDir
from sparsecircuits.train import Trainer, evaluate_all


def training_block_seconds(run_dir: Path) -> tuple[float, float]:
    """Seconds for one block of training steps and for the evaluation that ends it."""
    config = read_run_config(run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(config, Path(scratch))
        trainer.model.load_state_dict(load_weights(list_checkpoints(run_dir)[-1])[0])
        total = trainer.schedule.total_steps
        steps = range(total - config.schedule.steps_per_block, total)
        start = time.perf_counter()
        for step in steps:
            trainer.step = step
            trainer._train_step(trainer.schedule(step))
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        evaluate_all(trainer.model, config, trainer.sources)
        return train_s, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    before = training_block_seconds(args.run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        copy = RunDir(scratch)
        shutil.copy(RunDir(args.run_dir).config, copy.config)
        copy.checkpoints.mkdir()
        rows = []
        for ckpt in list_checkpoints(args.run_dir)[-args.checkpoints:]:
            step = int(ckpt.name)
            shutil.copytree(ckpt, copy.checkpoint(step))
            start = time.perf_counter()
            extract_run(copy.root, args.tasks, progress=False, threads=args.threads)
            seconds = time.perf_counter() - start
            run = open_run(copy.root)
            circuits = {task: run.circuit(task, step) for task, seed in copy.circuit_files(step)
                        if seed == 0}
            solved = [t for t, c in circuits.items() if c.solved]
            rows.append({"step": int(ckpt.name), "seconds": round(seconds, 2),
                         "tasks": len(circuits), "solved": len(solved),
                         "per_task": round(seconds / len(circuits), 2),
                         "per_solved_task": round(seconds / max(1, len(solved)), 2)})
            print(json.dumps(rows[-1]), flush=True)
    after = training_block_seconds(args.run_dir)
    warm = rows[1:] or rows
    mean = sum(r["seconds"] for r in warm) / len(warm)
    steps = read_run_config(args.run_dir).schedule.steps_per_block
    training = [train_s + eval_s for train_s, eval_s in (before, after)]
    print(f"threads={args.threads}")
    for name, (train_s, eval_s) in (("before", before), ("after", after)):
        print(f"training between checkpoints ({name}): {train_s + eval_s:.1f} s "
              f"({train_s:.1f} s for {steps} steps + {eval_s:.1f} s evaluation)")
    print(f"extraction per checkpoint (warm, all tasks): {mean:.1f} s; first (cold): "
          f"{rows[0]['seconds']:.1f} s")
    ratio = mean / (sum(training) / 2)
    print(f"warm extraction / training: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({
            "run_dir": str(args.run_dir), "threads": args.threads, "checkpoints": rows,
            "training_s": {"before": before, "after": after},
            "warm_extraction_s": mean, "warm_extraction_over_training": ratio,
            "load_average": list(os.getloadavg()),
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
