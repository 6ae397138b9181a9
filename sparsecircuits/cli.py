"""The command line: a thin face over the library.

    sparsecircuits train CONFIG_OR_PRESET [--set section.field=value ...] [--out DIR] [--resume]
    sparsecircuits extract RUN_DIR [--tasks T ...] [--seeds N] [--threads N]
    sparsecircuits timeline RUN_DIR [--control RUN_DIR]
    sparsecircuits export RUN_DIR [--weight-graphml]
    sparsecircuits analyze RUN_DIR [--what trajectory,similarity,oscillation,recency,gradients,
                                   recovery] [--per-tensor] [--checkpoints SPEC] [--steps M]
                                   [--sites HOOK,...]
    sparsecircuits figures RUN_DIR [--control RUN_DIR] [--format pdf,svg,png] [--out DIR]
    sparsecircuits view RUN_DIR [--html OUT.html] [--task T ...]
    sparsecircuits demo [--out DIR] [--set section.field=value ...]
    sparsecircuits sweep CONFIG_OR_PRESET --grid section.field=v1,v2 [--grid ...] --out DIR
        [--set ...] [--executor local|slurm] [--parallel N] [--no-extract] [--seeds N]
        [--time MINUTES] [--partition P] [--gpus N] [--cpus-per-task N] [--mem-gb G]
        [--slurm KEY=VALUE ...] [--no-wait]
    sparsecircuits sweep-status SWEEP_DIR
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
import traceback
from pathlib import Path

from sparsecircuits.checkpoint import CheckpointError
from sparsecircuits.config import PRESETS, ConfigError, load_config
from sparsecircuits.trajectory import ON_DEMAND, WHAT


def _train(args: argparse.Namespace) -> None:
    from sparsecircuits.train import train

    config = load_config(args.config, args.set)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    start = time.perf_counter()
    train(config, out, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(f"trained {out} in {time.perf_counter() - start:.1f} s")


def _extract(args: argparse.Namespace) -> None:
    from sparsecircuits.circuits.extract import extract_run
    from sparsecircuits.circuits.prune import PruneConfig

    extract_run(Path(args.run_dir), tasks=args.tasks, seeds=args.seeds, threads=args.threads,
                config=PruneConfig(reference=args.reference))


def _timeline(args: argparse.Namespace) -> None:
    from sparsecircuits.analysis import report
    from sparsecircuits.checkpoint import write_json
    from sparsecircuits.run import open_run

    run = open_run(args.run_dir)
    control = open_run(args.control).analysis() if args.control else None
    analysis = run.analysis()
    run.dir.summary.parent.mkdir(exist_ok=True)
    write_json(run.dir.summary, analysis.summary(), indent=1)
    print(report(analysis, control))
    print(f"\nwrote {run.dir.summary}")


def _export(args: argparse.Namespace) -> None:
    from sparsecircuits.circuits.export import export_run
    from sparsecircuits.run import open_run

    folder = export_run(open_run(args.run_dir).analysis(),
                        weight_graph_graphml=args.weight_graphml)
    print(f"wrote {folder}")


def _figures(args: argparse.Namespace) -> None:
    from sparsecircuits.figures import write_figures
    from sparsecircuits.run import open_run

    run = open_run(args.run_dir)
    control = open_run(args.control) if args.control else None
    out = Path(args.out) if args.out else run.dir.figures
    try:
        written = write_figures(run, out, control=control, formats=args.format)
    except ValueError as err:
        print(f"sparsecircuits: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {len(written) - 1} figure files and {written[-1]}")
def _analyze(args: argparse.Namespace) -> None:
    from sparsecircuits.checkpoint import write_json
    from sparsecircuits.figures.trajectory_plots import write_trajectory_figures
    from sparsecircuits.run import open_run
    from sparsecircuits.trajectory import analyze

    run = open_run(args.run_dir)
    what = tuple(w.strip() for w in args.what.split(",") if w.strip())
    try:
        numbers = analyze(run, what, per_tensor=args.per_tensor,
                          checkpoints=_checkpoints(args.checkpoints), steps=args.steps,
                          sites=args.sites and [s.strip() for s in args.sites.split(",")
                                                if s.strip()])
    except ValueError as err:
        print(f"sparsecircuits: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    previous = run.time_analyses()  # keep the analyses not asked for this time
    if previous is not None and previous.get("steps") == numbers["steps"]:
        numbers = {**previous, **numbers}
    run.dir.trajectory.parent.mkdir(exist_ok=True)
    write_json(run.dir.trajectory, numbers, indent=1)
    written = write_trajectory_figures(run, numbers, run.dir.figures)
    print(f"wrote {run.dir.trajectory} and {len(written)} figure files in {run.dir.figures}")


def _checkpoints(spec: str | None) -> str | list[int] | None:
    """``--checkpoints``: a name (all, newest, last-cycle) or steps separated by commas."""
    if spec is None or spec in ("all", "newest", "last-cycle"):
        return spec
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--checkpoints: {spec!r}; give all, newest, last-cycle or steps "
                         "separated by commas (599,649 or --checkpoints=-2,-1)") from None


def _view(args: argparse.Namespace) -> None:
    from sparsecircuits import open_run
    from sparsecircuits.viewer import export_html

    path = export_html(open_run(args.run_dir), args.html and Path(args.html), task=args.task)
    print(path)


def _demo(args: argparse.Namespace) -> None:
    from sparsecircuits.demo import demo

    start = time.perf_counter()
    files = demo(args.out, args.set)
    print(f"done in {(time.perf_counter() - start) / 60:.1f} minutes; open\n"
          f"  {files.report}   the headline numbers and every figure\n"
          f"  {files.viewer}   the viewer (one file, works offline)\n"
          f"  {files.figures}/   the figures as PDF and PNG")


def _sweep(args: argparse.Namespace) -> None:
    from sparsecircuits.sweep import SweepDir, open_sweep, parse_grid, run_sweep, status_table

    parameters = {"timeout_min": args.time, "cpus_per_task": args.cpus_per_task,
                  "gpus_per_node": args.gpus, "mem_gb": args.mem_gb,
                  "slurm_partition": args.partition,
                  "slurm_additional_parameters": dict(_key_value(text) for text in args.slurm)}
    try:
        run_sweep(args.config, parse_grid(args.grid), args.out, sets=args.set,
                  executor=args.executor, parallel=args.parallel, extract=args.extract,
                  seeds=args.seeds, wait=args.wait,
                  parameters={k: v for k, v in parameters.items() if v})
    finally:
        if SweepDir(Path(args.out)).index.exists():
            print(status_table(open_sweep(args.out)))


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--slurm {text}: expected KEY=VALUE (an sbatch option, e.g. qos=high)")
    return key, value


def _sweep_status(args: argparse.Namespace) -> None:
    from sparsecircuits.sweep import refresh_sweep, status_table

    print(status_table(refresh_sweep(args.sweep_dir)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsecircuits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a weight-sparse model under a schedule")
    train.add_argument("config", help=f"a preset ({', '.join(PRESETS)}) or a .toml/.json file")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override one config field (repeatable)")
    train.add_argument("--out", help="run folder (default: runs/<preset or file name>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its newest checkpoint")
    train.set_defaults(func=_train)

    extract = commands.add_parser("extract", help="weight graphs and task circuits per checkpoint")
    extract.add_argument("run_dir")
    extract.add_argument("--tasks", nargs="+", help="tasks to extract (default: all evaluated)")
    extract.add_argument("--seeds", type=int, default=1,
                         help="extractions per task and checkpoint (>1 gives a noise floor)")
    extract.add_argument("--threads", type=int, default=None,
                         help="tasks extracted at once, one torch thread each "
                              "(default: the run's run.threads)")
    extract.add_argument("--reference", choices=("task", "corpus"), default="task",
                         help="what pruned nodes' means are taken over: the task's own prompts "
                              "(default) or held-out corpus text (Gao et al.'s pretraining "
                              "mean); one reference per run: done circuits are kept")
    extract.set_defaults(func=_extract)

    timeline = commands.add_parser("timeline", help="events and recovery metrics of a run")
    timeline.add_argument("run_dir")
    timeline.add_argument("--control", help="a run that differs only in schedule, to compare")
    timeline.set_defaults(func=_timeline)

    export = commands.add_parser("export", help="GEXF, GraphML, node-link JSON and CSV tables "
                                 "of a run's timeline (large; for Gephi and other tools)")
    export.add_argument("run_dir")
    export.add_argument("--weight-graphml", action="store_true",
                        help="also write each checkpoint's whole weight graph as GraphML (slow)")
    export.set_defaults(func=_export)

    figures = commands.add_parser("figures", help="the run's figures for a paper (PDF/SVG/PNG)")
    figures.add_argument("run_dir", metavar="RUN")
    figures.add_argument("--control", metavar="RUN",
                         help="a run that differs only in schedule (shuffled), drawn beside it")
    figures.add_argument("--format", default="pdf,svg,png", metavar="pdf,svg,png",
                         help="comma-separated formats among pdf, svg, png (default: all)")
    figures.add_argument("--out", metavar="DIR",
                         help="folder for the figures (default: RUN/figures)")
    figures.set_defaults(func=_figures)
    analyze = commands.add_parser("analyze", help="time in the weights: PCA path, checkpoint "
                                  "similarity, mask oscillation, recency probes, gradient "
                                  "cosine, recovery matrix (analysis/trajectory.json)")
    analyze.add_argument("run_dir", metavar="RUN")
    analyze.add_argument("--what", default=",".join(WHAT), metavar=",".join(WHAT + ON_DEMAND),
                         help="comma-separated analyses (default: all but recovery, which "
                              "trains M steps per source and checkpoint)")
    analyze.add_argument("--per-tensor", action="store_true",
                         help="also the PCA path of each tensor")
    analyze.add_argument("--checkpoints", metavar="all|newest|last-cycle|STEP,...",
                         help="where the per-checkpoint analyses look (default: recency the "
                              "last cycle, gradients all, recovery the newest); steps or "
                              "negative indices as --checkpoints=-6,-1")
    analyze.add_argument("--steps", type=int, metavar="M",
                         help="recovery: training steps per source (default: one block)")
    analyze.add_argument("--sites", metavar="HOOK,...",
                         help="recency: comma-separated hook names to probe (default: "
                              "blocks.<l>.hook_resid_post of every block)")
    analyze.set_defaults(func=_analyze)

    view = commands.add_parser("view", help="the circuit viewer as one self-contained HTML page")
    view.add_argument("run_dir")
    view.add_argument("--html", help="where to write the page (default: in RUN_DIR/viewer/)")
    view.add_argument("--task", nargs="+", help="open on these tasks' circuits")
    view.set_defaults(func=_view)

    demo = commands.add_parser("demo", help="train tiny cyclic and shuffled, extract, and write "
                               "the figures, the viewer page and REPORT.md")
    demo.add_argument("--out", default="runs/demo",
                      help="the cyclic run's folder; the control goes to <out>_shuffled")
    demo.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                      help="override a field of both runs' config (repeatable)")
    demo.set_defaults(func=_demo)

    sweep = commands.add_parser("sweep", help="a grid of runs, each trained then extracted as a "
                                "job, here or on Slurm (needs sparsecircuits[sweep])")
    sweep.add_argument("config", help=f"a preset ({', '.join(PRESETS)}) or a .toml/.json file")
    sweep.add_argument("--grid", action="append", default=[], required=True,
                       metavar="SECTION.FIELD=V1,V2", help="values of one field; the runs are "
                       "the product of every --grid (repeatable)")
    sweep.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override one field of every run (repeatable)")
    sweep.add_argument("--out", required=True, metavar="SWEEP_DIR",
                       help="the sweep folder: sweep.json, runs/<name>/, logs/")
    sweep.add_argument("--executor", choices=("local", "slurm"), default="local",
                       help="processes on this machine (default) or a Slurm job array")
    sweep.add_argument("--parallel", type=int, metavar="N", help="jobs at once (local: default "
                       "1, each at cpus/N torch threads; slurm: default all)")
    sweep.add_argument("--extract", action=argparse.BooleanOptionalAction, default=True,
                       help="extract each run's circuits after training (default: yes)")
    sweep.add_argument("--seeds", type=int, default=1,
                       help="extractions per task and checkpoint (as extract --seeds)")
    sweep.add_argument("--time", type=int, metavar="MINUTES", help="a job's time limit "
                       "(default 1440); a job that reaches it is requeued and resumes")
    slurm = sweep.add_argument_group("slurm", "resources of each job (--executor slurm)")
    slurm.add_argument("--partition")
    slurm.add_argument("--gpus", type=int, metavar="N", help="GPUs per job (with "
                       "--set run.device=cuda)")
    slurm.add_argument("--cpus-per-task", type=int, metavar="N",
                       help="CPUs per job, its torch threads (default 1)")
    slurm.add_argument("--mem-gb", type=float, metavar="G")
    slurm.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. account=abc or qos=high (repeatable)")
    slurm.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                       help="follow the jobs to their end (default), or return once submitted "
                       "(then `sweep-status` reads their state from disk)")
    sweep.set_defaults(func=_sweep)

    status = commands.add_parser("sweep-status", help="the runs of a sweep and their state")
    status.add_argument("sweep_dir")
    status.set_defaults(func=_sweep_status)
    return parser


_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space, then run the command again "
                  "(train: with --resume)",
    errno.EDQUOT: "disk quota exceeded; free some space, then run the command again "
                  "(train: with --resume)",
    errno.EACCES: "permission denied; make it accessible to you or choose another path",
    errno.EPERM: "operation not permitted; make it accessible to you or choose another path",
    errno.EROFS: "on a read-only file system; choose another path",
    errno.EEXIST: "is a file where a folder is needed; choose another path",
    errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
    errno.ENOENT: "does not exist; check the path",
}


def user_error(err: Exception) -> str | None:
    """The one-line message for a failure the user can cause or meet (a bad config, a damaged
    or busy run folder, a full disk, ...), starting with the field or file; None for a bug."""
    from sparsecircuits.train import TrainingError

    if isinstance(err, ConfigError | CheckpointError | TrainingError):
        return str(err)
    if isinstance(err, OSError):
        what = _OS_ADVICE.get(err.errno, err.strerror or str(err))
        return f"{err.filename}: {what}" if err.filename else what
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sparsecircuits`` command. A failure the user can cause or meet ends
    in one line ``sparsecircuits: error: <field or file>: <what to do>`` and exit status 2; any
    other exception is a bug, reported with its traceback (exit status 1). ``--debug``
    anywhere on the line shows the traceback of every failure."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([arg for arg in argv if arg != "--debug"])
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("sparsecircuits: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:
        message = user_error(err)
        if debug or message is None:
            traceback.print_exc()
        if message is None:
            print("sparsecircuits: error: this is a bug; please report it with the traceback "
                  "above", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"sparsecircuits: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
