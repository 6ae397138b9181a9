"""sparsecircuits sweep: grid parsing and run names on constructed input, one-line errors for bad
grid entries, the local executor end to end (a job killed midway, then a rerun that finishes
only what is missing), the Slurm submission through a stand-in ``sbatch``, and the arms
comparison on constructed runs against intervals computed by hand."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MICRO

from sparsecircuits.cli import main
from sparsecircuits.config import ConfigError, config_from_dict
from sparsecircuits.rundir import RunDir
from sparsecircuits.sweep import (
    SweepDir,
    compare_arms,
    open_sweep,
    parse_grid,
    run_name,
)

pytest.importorskip("submitit")


def _config(tmp_path: Path, **schedule) -> Path:
    path = tmp_path / "micro.json"
    path.write_text(json.dumps({**MICRO, "schedule": {**MICRO["schedule"], **schedule}}))
    return path


# -- the grid and the names ------------------------------------------------------------------


def test_grid_parsing_and_names() -> None:
    grid = parse_grid(['run.seed=0, 1,2', 'schedule.kind=round_robin,"shuffled"',
                       'schedule.sources=["quote","closer"],["doc:0"]', "sparsity.anneal_end=0.5"])
    assert grid == {"run.seed": [0, 1, 2], "schedule.kind": ["round_robin", "shuffled"],
                    "schedule.sources": [["quote", "closer"], ["doc:0"]],
                    "sparsity.anneal_end": [0.5]}
    assert run_name({"schedule.kind": "shuffled", "run.seed": 1}) == \
        "run.seed=1,schedule.kind=shuffled"  # sorted by key, whatever the order given
    assert run_name({"schedule.sources": ["quote", "doc:0"], "optimizer.lr": 0.001}) == \
        "optimizer.lr=0.001,schedule.sources=quote+doc_0"
    assert run_name({"data.corpus_root": "/a b/c"}) == "data.corpus_root=_a_b_c"
    long, longer = ({"data.corpus_root": "x" * n} for n in (300, 301))
    assert len(run_name(long)) == 200 and run_name(long) != run_name(longer)


def _grid(*entries: str) -> list[str]:
    return [a for entry in entries for a in ("--grid", entry)]


@pytest.mark.parametrize(("args", "message"), [
    (_grid("run.seed"), "--grid run.seed: expected section.field=value1,value2,..."),
    (_grid("seed=1,2"), "--grid seed=1,2: expected section.field=value1,value2,..."),
    (_grid("run.seed=1,,2"), "--grid run.seed=1,,2: expected section.field=value1,value2,..."),
    (_grid("run.seed=1,1"), "--grid run.seed=1,1: 1 is given twice"),
    (_grid("run.seed=1", "run.seed=2"), "--grid run.seed=2: run.seed is already a --grid key"),
    (_grid("model.d_modle=16,32"), "--grid model.d_modle=16: model.d_modle: unknown key (did "
                                   "you mean model.d_model?)"),
    (_grid("run.seed=0", "schedule.kind=round_robin,cyclic"),
     "--grid schedule.kind=cyclic: schedule.kind: unknown kind 'cyclic'"),
    (_grid('schedule.sources=["quote"],["qoute"]'),
     "--grid schedule.sources=qoute: schedule.sources[0]: unknown task 'qoute'"),
    (_grid("schedule.steps_per_block=0,6"), "--grid schedule.steps_per_block=0: "
                                            "schedule.steps_per_block: "),
    (_grid("sparsity.anneal_start=0.1,0.4", "sparsity.anneal_end=0.3,0.9"),  # fine alone
     "--grid run sparsity.anneal_end=0.3,sparsity.anneal_start=0.4: sparsity.anneal_end: need "
     "0 <= anneal_start <= anneal_end <= 1"),
    (_grid("run.log_every=1", "run.seed=x,2"), "--grid run.seed=x: run.seed: expected int, "
                                               "got 'x'"),
    ([*_grid("run.seed=1"), "--set", "run.seed=2"], "--grid run.seed=...: run.seed is also "
                                                    "given with --set; keep one"),
    (_grid('run.device="cuda"'), "--gpus: the runs train on a GPU (run.device) but their jobs "
                                 "would see none; give --gpus N"),
])
def test_bad_grid_is_one_line_naming_the_entry(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(_config(tmp_path)), "--out", str(tmp_path / "sweep"), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sparsecircuits: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "sweep").exists()  # nothing written


# -- the local executor ------------------------------------------------------------------------


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_local_sweep_killed_job_and_rerun(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two runs one at a time; the second job is SIGKILLed after its first checkpoint. The
    rerun submits only it: the finished run's files are untouched, the killed one resumes from
    its checkpoints (they keep their bytes and times) and both end trained and extracted."""
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "sparsecircuits.cli", "sweep", str(_config(tmp_path)),
               "--grid", "run.seed=0,1", "--set", "run.threads=1", "--out", str(out),
               "--parallel", "1"]
    first, second = (SweepDir(out).run(f"run.seed={seed}") for seed in (0, 1))
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not RunDir(second).checkpoint_steps() and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = int(RunDir(second).lock.read_text())  # the job's process, training the run
        os.kill(pid, signal.SIGKILL)
        _, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    kept = RunDir(second).checkpoint_steps()
    assert kept and kept[-1] < 23, "the kill came after training ended; the test needs it earlier"
    assert sweep.returncode == 2
    assert err.strip().splitlines() == [
        f"sparsecircuits: error: {out}: 1 of 2 runs failed, first run.seed=1: the job ended "
        f"without a result (killed?); see `sparsecircuits sweep-status {out}`, and run the sweep "
        "again to resume them"]
    index = json.loads(SweepDir(out).index.read_text())
    assert [(r["name"], r["status"]) for r in index["runs"]] == [
        ("run.seed=0", "done"), ("run.seed=1", "failed")]
    assert (SweepDir(out).root / index["runs"][1]["log"]).exists()
    # at most one job at a time: the first had ended before the second began
    first_result = SweepDir(out).logs / f"{index['runs'][0]['job']}_0_result.pkl"
    assert first_result.stat().st_mtime_ns <= RunDir(second).config.stat().st_mtime_ns
    main(["sweep-status", str(out)])
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["run.seed=0", "done", "24/24", "8/8"]
    assert table[2].startswith("run.seed=1  failed") and table[2].endswith(
        f"the job ended without a result (killed?); log: {out / index['runs'][1]['log']}")
    done_files, killed_checkpoints = _files(first), {
        name: stamp for name, stamp in _files(second).items()
        if name.startswith("checkpoints/") and name.endswith("model.safetensors")}

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert _files(first) == done_files
    after = _files(second)
    assert {n: after[n] for n in killed_checkpoints} == killed_checkpoints  # resumed
    assert RunDir(second).checkpoint_steps() == [5, 11, 17, 23]
    sweep_ = open_sweep(out)
    assert [(r.name, r.status) for r in sweep_.runs] == [("run.seed=0", "done"),
                                                         ("run.seed=1", "done")]
    assert sweep_.runs[0].record["job"] == index["runs"][0]["job"]  # not submitted again
    for run in sweep_.runs:
        assert sorted(RunDir(run.path).circuit_files(23)) == [("closer", 0), ("quote", 0)]
        assert run.open().config.run.seed == run.overrides["run.seed"]
    assert "run.seed=1  done   24/24  8/8" in rerun.stdout
    # sweep-status marks done what the files say is done (jobs that outlived their command)
    index = json.loads(SweepDir(out).index.read_text())
    index["runs"][0]["status"] = "submitted"
    SweepDir(out).index.write_text(json.dumps(index))
    main(["sweep-status", str(out)])
    assert [r.status for r in open_sweep(out).runs] == ["done", "done"]


# -- Slurm ---------------------------------------------------------------------------------------


def test_slurm_submission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture) -> None:
    """``--executor slurm --no-wait`` submits one job array through ``sbatch`` (here a stand-in
    that keeps the script) and records the jobs; each run's threads are its CPUs."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/script.sh\n"
                                 "echo Submitted batch job 4242\n")
    (bin_ / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_ / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    out = tmp_path / "sweep"
    main(["sweep", str(_config(tmp_path)), "--grid", "schedule.kind=round_robin,shuffled",
          "--grid", "run.seed=0,1", "--out", str(out), "--executor", "slurm", "--parallel", "2",
          "--partition", "gpu", "--time", "30", "--cpus-per-task", "2", "--gpus", "1",
          "--slurm", "qos=high", "--no-wait"])
    script = (tmp_path / "script.sh").read_text()
    for line in ("--array=0-3%2", "--partition=gpu", "--time=30", "--cpus-per-task=2",
                 "--gpus-per-node=1", "--qos=high", f"--output={out}/logs/%A_%a_0_log.out"):
        assert f"#SBATCH {line}\n" in script
    sweep = open_sweep(out)
    assert [(r.name, r.status, r.record["job"]) for r in sweep.runs] == [
        ("run.seed=0,schedule.kind=round_robin", "submitted", "4242_0"),
        ("run.seed=1,schedule.kind=round_robin", "submitted", "4242_1"),
        ("run.seed=0,schedule.kind=shuffled", "submitted", "4242_2"),
        ("run.seed=1,schedule.kind=shuffled", "submitted", "4242_3")]
    assert "run.seed=0,schedule.kind=round_robin  submitted  -" in capsys.readouterr().out
    assert not (out / "runs").exists()  # nothing trained here


# -- reading a sweep: arms and their comparison --------------------------------------------------


def _fake_run(folder: Path, final_loss: float) -> None:
    """A run folder with a config and a loss matrix whose last row is ``final_loss`` on both
    trained tasks (its ``loss.final``)."""
    folder.mkdir(parents=True)
    RunDir(folder).config.write_text(json.dumps(config_from_dict(MICRO).to_dict()))
    rows = [(5, 0, 0, 0, "quote"), (11, 0, 1, 1, "closer"), (17, 1, 2, 0, "quote"),
            (23, 1, 3, 1, "closer")]
    with RunDir(folder).evals.open("w") as f:
        for i, (step, cycle, block, position, source) in enumerate(rows):
            loss = final_loss if i == len(rows) - 1 else 2.0 + i
            f.write(json.dumps({"step": step, "cycle": cycle, "block": block,
                                "position": position, "source": source,
                                "evals": {t: {"loss": loss} for t in ("quote", "closer")}}) + "\n")


def test_arms_and_their_comparison(tmp_path: Path) -> None:
    losses = {("round_robin", 0): 1.0, ("round_robin", 1): 1.2, ("round_robin", 2): 1.4,
              ("shuffled", 0): 1.1, ("shuffled", 1): 1.0, ("shuffled", 2): 1.6}
    runs = []
    for (kind, seed), loss in losses.items():
        overrides = {"schedule.kind": kind, "run.seed": seed, "sparsity.matrix_density": 0.25}
        name = run_name(overrides)
        _fake_run(tmp_path / "runs" / name, loss)
        runs.append({"name": name, "overrides": overrides, "folder": f"runs/{name}",
                     "status": "done"})
    other = {"schedule.kind": "shuffled", "run.seed": 0, "sparsity.matrix_density": 0.5}
    runs.append({"name": run_name(other), "overrides": other, "folder": "runs/x",
                 "status": "todo"})
    (tmp_path / "sweep.json").write_text(json.dumps({
        "config": "tiny", "sets": [], "extract": False, "seeds": 1, "runs": runs,
        "grid": {"schedule.kind": ["round_robin", "shuffled"], "run.seed": [0, 1, 2],
                 "sparsity.matrix_density": [0.25, 0.5]}}))
    sweep = open_sweep(tmp_path)
    with pytest.raises(ValueError, match=r"sparsity.matrix_density: the runs differ in it too"):
        sweep.arms(by="schedule.kind")
    arms = sweep.where({"sparsity.matrix_density": 0.25}).arms(by="schedule.kind")
    assert list(arms) == ["round_robin", "shuffled"]
    assert arms["shuffled"].seeds == ((0,), (1,), (2,))
    assert arms["round_robin"].values("loss.final") == pytest.approx(
        {(0,): 1.0, (1,): 1.2, (2,): 1.4})
    t = 4.302652729911275  # Student t, 0.975 quantile, 2 degrees of freedom
    mean, low, high = arms["round_robin"].interval("loss.final")
    assert (mean, mean - low, high - mean) == pytest.approx((1.2, *[t * 0.2 / math.sqrt(3)] * 2))
    comparison = compare_arms(arms["round_robin"], arms["shuffled"])["loss.final"]
    diffs = [-0.1, 0.2, -0.2]  # round_robin − shuffled, seed by seed
    d = sum(diffs) / 3
    sd = math.sqrt(sum((x - d) ** 2 for x in diffs) / 2)
    assert (comparison.a, comparison.b) == pytest.approx((1.2, 3.7 / 3))
    assert (comparison.diff, comparison.low, comparison.high) == pytest.approx(
        (d, d - t * sd / math.sqrt(3), d + t * sd / math.sqrt(3)))


def test_open_sweep_names_a_folder_without_index(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sweep.json: missing; is .* a sweep folder"):
        open_sweep(tmp_path)
