"""Data-parallel training on the CPU: one run trained by 1 rank and by 2 gloo ranks.

Both arms run the command line a user runs, one torch thread per rank:

- ``1_rank``: ``python -m sparsecircuits train CONFIG --out DIR``;
- ``2_ranks``: ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m
  sparsecircuits train CONFIG --out DIR``.

It prints each arm's wall time (the whole command: start-up, training, evaluations, checkpoints)
and its training time (what ``train`` reports: from the config loaded to the last checkpoint),
the ratios 2 ranks / 1 rank, and how far the two runs' final weights are apart (the key biases
aside: their gradient is zero but for rounding, see ``tests/test_distributed.py``). On a 2-core
machine expect no gain: this is a correctness check of the launch, not a speed-up.

    python benchmarks/ddp_cpu.py [--set section.field=value ...] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from kernels_bench import device_name

from sparsecircuits import checkpoint as ckpt
from sparsecircuits.config import load_config
from sparsecircuits.schedules import build_schedule

CONFIG = ["schedule.steps_per_block=10", "schedule.cycles=1", "schedule.warmup_steps=0",
          "run.threads=1"]
"""The ``tiny`` preset, shortened to 60 steps (6 blocks of 10)."""
ARMS = {
    "1_rank": [sys.executable, "-m", "sparsecircuits"],
    "2_ranks": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "sparsecircuits"],
}


def run_arm(command: list[str], config: Path, out: Path) -> tuple[float, float]:
    """Wall seconds of the whole command and the training seconds it reports."""
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([*command, "train", str(config), "--out", str(out)], env=env,
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    reported = re.search(r"trained .* in ([\d.]+) s$", done.stdout, re.MULTILINE)
    assert reported, done.stdout
    return wall, float(reported.group(1))


def final_difference(a: Path, b: Path) -> tuple[float, list[str]]:
    """The largest weight difference between two runs' final checkpoints (key biases aside),
    and the tensors whose kept entries differ."""
    (wa, _), (wb, _) = (ckpt.load_weights(ckpt.latest_checkpoint(r)) for r in (a, b))
    diff = max(float((wa[n] - wb[n]).abs().max()) for n in wa if not n.endswith(".attn.k.b"))
    masks = sorted(n for n in wa if not torch.equal(wa[n] != 0, wb[n] != 0))
    return diff, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", default=[],
                        help="override a field of the benchmark's config (repeatable)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs per arm, alternating arms; the median is reported")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results/ddp_cpu.json"))
    args = parser.parse_args()
    config = load_config("tiny", [*CONFIG, *args.set])
    load_before = os.getloadavg()
    seconds: dict[str, list[tuple[float, float]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config.to_dict()))
        for r in range(args.rounds):
            for arm, command in ARMS.items():
                seconds[arm].append(run_arm(command, path, Path(tmp) / f"{arm}_{r}"))
        diff, masks = final_difference(Path(tmp) / "1_rank_0", Path(tmp) / "2_ranks_0")
    wall = {arm: statistics.median(s[0] for s in runs) for arm, runs in seconds.items()}
    train = {arm: statistics.median(s[1] for s in runs) for arm, runs in seconds.items()}
    print(f"{'arm':8} {'wall s':>8} {'train s':>8}")
    for arm in ARMS:
        print(f"{arm:8} {wall[arm]:8.1f} {train[arm]:8.1f}")
    ratio_wall, ratio_train = wall["2_ranks"] / wall["1_rank"], train["2_ranks"] / train["1_rank"]
    print(f"2 ranks / 1 rank: wall {ratio_wall:.2f}, train {ratio_train:.2f}; final weights "
          f"differ by at most {diff:.1e}; masks differ in {masks or 'no tensor'}")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    results = {
        "machine": {"device": device_name(torch.device("cpu")), "threads_per_rank": 1,
                    "torch": torch.__version__,
                    "load_average_1min": [load_before[0], os.getloadavg()[0]]},
        "config": {"preset": "tiny", "overrides": [*CONFIG, *args.set],
                   "steps": build_schedule(config.schedule).total_steps,
                   "rows_per_step": config.data.source_rows + config.data.lm_rows},
        "rounds": args.rounds,
        "wall_s": wall, "train_s": train,
        "2ranks/1rank_wall": round(ratio_wall, 3), "2ranks/1rank_train": round(ratio_train, 3),
        "final_weights_max_abs_diff": diff, "masks_differ": masks,
    }
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
