"""Issue 16's experiment: the time analyses of cyclic runs beside their shuffled controls, with
intervals over training seeds (docs/RESULTS.md, "Time in the weights").

    .venv/bin/python benchmarks/time_in_weights.py --cyclic A,B,C --shuffled D,E,F \\
        [--what trajectory,similarity,oscillation] [--out results.json]

Each run folder is analysed with ``sparsecircuits analyze`` (numbers into its
``analysis/trajectory.json``, figures into its ``figures/``) unless that file already holds every
analysis asked for. Then every headline number (``trajectory.headline``) is printed per arm as a
mean over seeds with a Student-t interval (``metrics.seed_interval``), with the per-seed values
and the cyclic-minus-shuffled difference paired by position in the lists (seed by seed), and
written to ``--out`` as JSON. A number a run lacks (the circuit ones of a run not extracted) is
nan there, and the mean and interval are over the runs that have it (``n`` says how many).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from sparsecircuits import metrics
from sparsecircuits.run import open_run
from sparsecircuits.trajectory import WHAT, headline


def numbers_of(run: Path, what: list[str]) -> dict:
    """The run's analysis numbers, running ``sparsecircuits analyze`` when any is missing."""
    numbers = open_run(run).time_analyses()
    if numbers is not None and all(w in numbers for w in what):
        return numbers
    subprocess.run([sys.executable, "-m", "sparsecircuits.cli", "analyze", str(run),
                    "--what", ",".join(what)], check=True, stdout=subprocess.DEVNULL)
    return open_run(run).time_analyses()


def _fmt(interval: tuple[float, float, float]) -> str:
    mean, low, high = interval
    if math.isnan(low):
        return f"{mean:+.3f}"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cyclic", required=True, help="run folders, comma-separated")
    parser.add_argument("--shuffled", required=True, help="run folders, comma-separated")
    parser.add_argument("--what", default=",".join(WHAT))
    parser.add_argument("--out", type=Path, default=Path("time_in_weights.json"))
    args = parser.parse_args()
    what = args.what.split(",")
    arms = {arm: [Path(p) for p in getattr(args, arm).split(",")] for arm in ("cyclic", "shuffled")}
    heads = {arm: [headline(numbers_of(run, what)) for run in runs] for arm, runs in arms.items()}
    names = sorted(set.union(*(set(h) for hs in heads.values() for h in hs)))
    results = {"runs": {arm: [str(r) for r in runs] for arm, runs in arms.items()}, "numbers": {}}
    print(f"{'number':48} {'cyclic':28} {'shuffled':28} cyclic - shuffled")
    for name in names:
        values = {arm: [h.get(name, math.nan) for h in hs] for arm, hs in heads.items()}
        pairs = [c - s for c, s in zip(values["cyclic"], values["shuffled"], strict=False)]
        row = {arm: metrics.seed_interval(v) for arm, v in values.items()}
        row["difference"] = metrics.seed_interval(pairs)
        n = {arm: sum(not math.isnan(v) for v in vs) for arm, vs in values.items()}
        results["numbers"][name] = {**{k: list(v) for k, v in row.items()}, "per_seed": values,
                                    "n": n}
        print(f"{name:48} {_fmt(row['cyclic']):28} {_fmt(row['shuffled']):28} "
              f"{_fmt(row['difference'])}  (n {n['cyclic']}/{n['shuffled']})")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
