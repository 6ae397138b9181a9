"""One error path for the whole command line: every failure a user can cause or meet ends in
exit status 2 and one line ``sparsecircuits: error: <field or file>: <what to do>``, and
leaves the run folder as it was (or resumable); a bug prints its traceback (exit status 1)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from sparsecircuits import checkpoint as ckpt
from sparsecircuits.cli import main
from sparsecircuits.rundir import RunDir


@dataclass
class Case:
    id: str
    argv: list[str]
    """``{cfg}`` (the run's config file), ``{run}`` (a copy of a trained run), ``{tmp}``."""
    message: str
    """How the line after ``sparsecircuits: error: `` starts (same placeholders)."""
    state: str = "absent"
    """``absent``: ``{tmp}/new`` was not created; ``unchanged``: the run copy is byte for byte
    as it was; ``resumable``: ``train --resume`` then finishes the run."""
    prepare: Callable[[Path, Path, pytest.MonkeyPatch], Callable[[], None] | None] | None = None
    """Sets the case up; may return what undoes it at the end."""


def _set(*overrides: str) -> list[str]:
    return ["train", "{cfg}", *(a for o in overrides for a in ("--set", o)), "--out", "{tmp}/new"]


def _write(name: str, data: bytes) -> Callable[[Path, Path, pytest.MonkeyPatch], None]:
    def write(tmp: Path, run: Path, mp: pytest.MonkeyPatch) -> None:
        (tmp / name).write_bytes(data)
    return write


def _garble_metrics_line(tmp: Path, run: Path, mp: pytest.MonkeyPatch) -> None:
    lines = RunDir(run).metrics.read_text().splitlines(keepends=True)
    lines[2] = lines[2][:20] + "\n"
    RunDir(run).metrics.write_text("".join(lines))


def _corrupt_mask(tmp: Path, run: Path, mp: pytest.MonkeyPatch) -> None:
    files = RunDir(run)
    files.circuit_folder(5).mkdir(parents=True)
    for task in ("quote", "closer"):  # done: extract skips them and reads their masks
        files.circuit_file(5, task).write_text("{}")
    files.mask_file(5, "quote").write_bytes(b"\x00not safetensors")


def _read_only_parent(tmp: Path, run: Path, mp: pytest.MonkeyPatch) -> None:
    (tmp / "ro").mkdir()
    if os.geteuid() != 0:
        (tmp / "ro").chmod(0o555)
    else:  # root writes anywhere: the OS's refusal, as a user would meet it
        real = os.mkdir

        def refuse(path, *args, **kwargs):
            if str(path).startswith(str(tmp / "ro")):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real(path, *args, **kwargs)
        mp.setattr(os, "mkdir", refuse)


def _full_disk(tmp: Path, run: Path, mp: pytest.MonkeyPatch) -> None:
    (tmp / "new").mkdir()
    (tmp / "new" / "metrics.jsonl").symlink_to("/dev/full")  # every write: ENOSPC


def _hold_lock(tmp: Path, run: Path, mp: pytest.MonkeyPatch) -> Callable[[], None]:
    lock = ckpt.run_lock(run)
    lock.__enter__()
    return lambda: lock.__exit__(None, None, None)


def _nan_at_step_8(tmp: Path, run: Path, mp: pytest.MonkeyPatch) -> None:
    import sparsecircuits.train as train

    real = train.batch_loss

    def nan_loss(model, config, sources, slot, *ranks):
        losses = real(model, config, sources, slot, *ranks)
        return {**losses, "loss": losses["loss"] * float("nan")} if slot.step == 8 else losses
    mp.setattr(train, "batch_loss", nan_loss)


def _no_cuda_interpreter(tmp: Path, run: Path, mp: pytest.MonkeyPatch) -> None:
    mp.setenv("TRITON_INTERPRET", "0")


def _drop_checkpoints(tmp: Path, run: Path, mp: pytest.MonkeyPatch) -> None:
    shutil.rmtree(RunDir(run).checkpoints)


CASES = [
    Case("unknown schedule kind", _set("schedule.kind=roundrobin"),
         "schedule.kind: unknown kind 'roundrobin'; expected one of"),
    Case("no sources", _set("schedule.sources=[]"), "schedule.sources: no sources given"),
    Case("duplicate sources", _set('schedule.sources=["quote", "quote"]'),
         "schedule.sources: duplicate sources ['quote']"),
    Case("steps_per_block=0", _set("schedule.steps_per_block=0"),
         "schedule.steps_per_block: must be at least 1, got 0"),
    Case("cycles=-1", _set("schedule.cycles=-1"), "schedule.cycles: must be at least 1, got -1"),
    Case("unknown task", _set('schedule.sources=["quote", "nope"]'),
         "schedule.sources[1]: unknown task 'nope'"),
    Case("config is a JSON list", ["train", "{tmp}/list.json", "--out", "{tmp}/new"],
         "{tmp}/list.json: expected a table of sections", prepare=_write("list.json", b"[1]")),
    Case("config not UTF-8", ["train", "{tmp}/bad.toml", "--out", "{tmp}/new"],
         "{tmp}/bad.toml: not UTF-8 text (byte 5); save it as UTF-8",
         prepare=_write("bad.toml", b"# caf\xe9 \xff\n")),
    Case("config missing", ["train", "{tmp}/none.toml", "--out", "{tmp}/new"],
         "{tmp}/none.toml: cannot read config (No such file or directory)"),
    Case("corpus root missing", _set('data.corpus_root="/nonexistent"'),
         "data.corpus_root: corpus root /nonexistent does not exist or is not a folder; give a"),
    Case("lr infinite", _set("optimizer.lr=Infinity"),
         "optimizer.lr: expected a finite number, got inf"),
    Case("lr zero", _set("optimizer.lr=0"), "optimizer.lr: must be positive"),
    Case("threads beyond the CPUs", _set("run.threads=100000"),
         f"run.threads: must lie in [0, {os.cpu_count()}]"),
    Case("n_ctx below the prompts", _set("model.n_ctx=32"),
         "model.n_ctx: 32 is shorter than the tasks' prompts (up to 64 tokens"),
    Case("model too large", _set("model.d_model=65536", "model.d_mlp=262144",
                                 "model.n_layers=8"),
         "model: 274,966,446,947 parameters need about 12,328.5 GiB to train, more than this "
         "machine's"),
    Case("triton without CUDA", _set('model.kernel_backend="triton"'),
         "model.kernel_backend: 'triton' runs on a CUDA GPU", prepare=_no_cuda_interpreter),
    Case("--out is a file", ["train", "{cfg}", "--out", "{cfg}"],
         "{cfg}: is a file where a folder is needed; choose another path"),
    Case("--out read-only", ["train", "{cfg}", "--out", "{tmp}/ro/new"],
         "{tmp}/ro/new: permission denied", prepare=_read_only_parent),
    Case("disk full", _set(), "{tmp}/new/metrics.jsonl: no space left on the device; free "
         "some space, then run the command again (train: with --resume)", "resumable",
         _full_disk),
    Case("already a run", ["train", "{cfg}", "--out", "{run}"],
         "{run}: already holds a run; pass --resume", "unchanged"),
    Case("resume, other config", ["train", "{cfg}", "--set", "model.d_mlp=32", "--out", "{run}",
                                  "--resume"],
         "{run}/config.json: --resume needs the same config; differs in model.d_mlp",
         "unchanged"),
    Case("garbled metrics line", ["train", "{cfg}", "--out", "{run}", "--resume"],
         "{run}/metrics.jsonl: line 3 is not a JSON record with a step; repair or delete",
         "unchanged", _garble_metrics_line),
    Case("run in use", ["train", "{cfg}", "--out", "{run}", "--resume"],
         f"{{run}}: in use by process {os.getpid()} (a train or extract writing it)",
         "unchanged", _hold_lock),
    Case("loss not finite", ["train", "{cfg}", "--out", "{tmp}/new"],
         "{tmp}/new: training loss is nan at step 8; the run stopped and its last good "
         "checkpoint is 00000005; lower optimizer.lr", "resumable", _nan_at_step_8),
    Case("corrupt mask", ["extract", "{run}", "--threads", "1"],
         "{run}/circuits/00000005/quote.mask.safetensors: not a readable safetensors file",
         "unchanged", _corrupt_mask),
    Case("extract, no checkpoints", ["extract", "{run}"],
         "{run}/checkpoints: no checkpoint to extract yet", "unchanged", _drop_checkpoints),
    Case("extract, no run", ["extract", "{tmp}"], "{tmp}/config.json: missing; is"),
    Case("config.json damaged", ["train", "{cfg}", "--out", "{run}", "--resume"],
         "{run}/config.json: not valid JSON (Expecting ',' delimiter", "unchanged",
         lambda tmp, run, mp: RunDir(run).config.write_text('{"model": {} "run": {}}') and None),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished micro run (checkpoints at steps 5 and 11) and its config file."""
    from conftest import MICRO

    from sparsecircuits.config import config_from_dict
    from sparsecircuits.train import train

    root = tmp_path_factory.mktemp("trained")
    config = config_from_dict(MICRO)
    config.schedule.cycles = 1
    (root / "micro.json").write_text(json.dumps(config.to_dict()))
    train(config, root / "run", progress=False)
    return root / "run", root / "micro.json"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_user_error_is_one_line_exit_2_and_leaves_the_run(
        case: Case, trained, tmp_path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    cfg = tmp_path / "micro.json"
    shutil.copy(trained[1], cfg)
    undo = case.prepare(tmp_path, run, monkeypatch) if case.prepare else None
    before = snapshot(run)
    torch_threads = torch.get_num_threads()
    places = {"cfg": cfg, "run": run, "tmp": tmp_path}
    try:
        with pytest.raises(SystemExit) as exit_:
            main([arg.format(**places) for arg in case.argv])
    finally:
        monkeypatch.undo()
        torch.set_num_threads(torch_threads)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith(f"sparsecircuits: error: {case.message.format(**places)}"), err
    assert err.count("\n") == 1, err
    if case.state == "absent":
        assert not (tmp_path / "new").exists()
    elif case.state == "unchanged":
        assert snapshot(run) == before
    if undo:
        undo()
    if case.state == "resumable":
        out = tmp_path / "new"
        if (out / "metrics.jsonl").is_symlink():
            (out / "metrics.jsonl").unlink()  # the disk has room again
        main(["train", str(cfg), "--out", str(out), "--resume"])
        steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()]
        assert steps == list(range(12))


def test_a_bug_shows_its_traceback_and_debug_shows_every_traceback(
        trained, tmp_path, monkeypatch, capsys) -> None:
    import sparsecircuits.train as train

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(train, "check_run", broken)
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(trained[1]), "--out", str(tmp_path / "new")])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert err.endswith("sparsecircuits: error: this is a bug; please report it with the "
                        "traceback above\n")
    monkeypatch.undo()
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(trained[1]), "--set", "schedule.cycles=-1", "--debug"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "Traceback" in err and err.endswith(
        "sparsecircuits: error: schedule.cycles: must be at least 1, got -1\n")
