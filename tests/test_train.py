"""Training runs end to end: files, densities, resume after a real kill, and bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sparsecircuits import checkpoint as ckpt
from sparsecircuits.config import ConfigError
from sparsecircuits.train import train


def read_lines(path):
    return path.read_text().splitlines()


def test_run_writes_loss_matrix_checkpoints_and_hits_density(tmp_path, micro_config):
    config = micro_config()
    run = train(config, tmp_path / "run", progress=False)
    evals = [json.loads(line) for line in read_lines(run / "evals.jsonl")]
    assert [e["step"] for e in evals] == [5, 11, 17, 23]
    assert [e["source"] for e in evals] == ["quote", "closer", "quote", "closer"]
    assert set(evals[0]["evals"]) >= {"quote", "closer", "bracket_depth", "corpus"}
    found = ckpt.list_checkpoints(run)
    assert [int(p.name) for p in found] == [5, 11, 17, 23]
    meta = ckpt.read_meta(found[-1])
    assert (meta["cycle"], meta["block"], meta["position"], meta["source"]) == (1, 3, 1, "closer")
    for name, density in meta["density"].items():
        target = 0.25 if name.endswith(".W") and name not in ("unembed.W",) else 0.5
        numel = torch.Size(meta["shapes"][name]).numel()
        assert abs(density - target) * numel <= 0.5 + 1e-9, name  # exact, up to rounding k
    # Only the two newest checkpoints keep the resume state.
    assert [p for p in found if (p / ckpt.STATE_FILE).exists()] == found[-2:]
    for path in (found[0], found[-1]):
        model, meta = ckpt.load_model(path)
        assert meta["step"] == int(path.name)
        assert int(sum((p != 0).sum() for p in model.parameters())) > 0
    assert json.loads((run / "config.json").read_text())["model"]["d_model"] == 32


def _write_config(tmp_path, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    return path


def _cli(*args):
    env = {**os.environ, "CI": "1"}
    return [sys.executable, "-m", "sparsecircuits.cli", *args], env


def _kill_train_when(config: Path, out: Path, ready: Callable[[], bool]) -> int:
    """Start ``sparsecircuits train`` in a subprocess, SIGKILL it once ``ready()``; return
    its exit status."""
    command, env = _cli("train", str(config), "--out", str(out))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ready() and time.time() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    return process.wait()


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, micro_config):
    config = micro_config("schedule.cycles=8", "schedule.steps_per_block=8", "run.log_every=1")
    path = _write_config(tmp_path, config)
    whole = train(config, tmp_path / "whole", progress=False)

    killed = tmp_path / "killed"
    status = _kill_train_when(path, killed, lambda: len(ckpt.list_checkpoints(killed)) >= 3)
    assert status == -signal.SIGKILL
    done = len(ckpt.list_checkpoints(killed))
    assert 3 <= done < 16, "the kill must land mid-run"

    command, env = _cli("train", str(path), "--out", str(killed), "--resume")
    subprocess.run(command, env=env, check=True, capture_output=True)
    for name in ("metrics.jsonl", "evals.jsonl"):
        assert read_lines(killed / name) == read_lines(whole / name), name
    final_whole, _ = ckpt.load_weights(ckpt.latest_checkpoint(whole))
    final_killed, meta = ckpt.load_weights(ckpt.latest_checkpoint(killed))
    assert meta["step"] == 127
    for name, tensor in final_whole.items():
        assert torch.equal(tensor, final_killed[name]), name


def assert_same_run(run, whole):
    """Same logs line for line and bitwise the same final weights."""
    for name in ("metrics.jsonl", "evals.jsonl"):
        assert read_lines(run / name) == read_lines(whole / name), name
    final_whole, _ = ckpt.load_weights(ckpt.latest_checkpoint(whole))
    final_run, _ = ckpt.load_weights(ckpt.latest_checkpoint(run))
    for name, tensor in final_whole.items():
        assert torch.equal(tensor, final_run[name]), name


class Crash(Exception):
    """Stands in for a kill at a chosen point of the loop."""


def test_resume_after_a_crash_before_during_or_after_the_first_checkpoint(
        tmp_path, micro_config, monkeypatch):
    from sparsecircuits.train import Trainer

    config = micro_config()  # 24 steps; checkpoints at 5, 11, 17, 23
    whole = train(config, tmp_path / "whole", progress=False)
    train_step, save_tensors = Trainer._train_step, ckpt.save_tensors

    def crash_at(step):
        def patched(self, slot):
            if slot.step == step:
                raise Crash
            return train_step(self, slot)
        return patched

    def crash_in_state_save(tensors, path):
        if path.name == ckpt.STATE_FILE:
            raise Crash  # model.safetensors of the first checkpoint is written, not the rest
        return save_tensors(tensors, path)

    for where, patch in [("before", ("_train_step", crash_at(3))),
                         ("during", ("save_tensors", crash_in_state_save)),
                         ("after", ("_train_step", crash_at(8)))]:
        run = tmp_path / where
        with monkeypatch.context() as m:
            m.setattr(Trainer if patch[0] == "_train_step" else ckpt, *patch)
            with pytest.raises(Crash):
                train(config, run, progress=False)
        steps = [json.loads(line)["step"] for line in read_lines(run / "metrics.jsonl")]
        assert steps == list(range(8 if where == "after" else 3 if where == "before" else 6))
        if where == "before":
            with open(run / "metrics.jsonl", "a") as f:
                f.write('{"step": 3, "sou')  # a kill in the middle of an append
        train(config, run, resume=True, progress=False)
        assert_same_run(run, whole)


def test_resume_after_a_kill_before_the_first_checkpoint(tmp_path, micro_config):
    config = micro_config("schedule.steps_per_block=20", "schedule.cycles=1")
    path = _write_config(tmp_path, config)
    whole = train(config, tmp_path / "whole", progress=False)
    killed = tmp_path / "killed"
    metrics = killed / "metrics.jsonl"
    _kill_train_when(path, killed, lambda: metrics.exists() and len(read_lines(metrics)) >= 2)
    assert ckpt.list_checkpoints(killed) == [], "the kill must land before the first checkpoint"
    command, env = _cli("train", str(path), "--out", str(killed), "--resume")
    subprocess.run(command, env=env, check=True, capture_output=True)
    assert_same_run(killed, whole)


def test_a_partial_save_folder_is_not_a_checkpoint(tmp_path, micro_config):
    run = train(micro_config(), tmp_path / "run", progress=False)
    partial = run / "checkpoints" / ".partial-00000030"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half a file")
    assert ckpt.latest_checkpoint(run).name == "00000023"
    ckpt.read_meta(ckpt.latest_checkpoint(run))


def test_truncated_and_foreign_checkpoints_are_named(tmp_path, micro_config):
    run = train(micro_config(), tmp_path / "run", progress=False)
    latest = ckpt.latest_checkpoint(run)
    weights = latest / ckpt.MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ckpt.CheckpointError, match=r"model.safetensors: truncated"):
        ckpt.load_weights(latest)
    older = ckpt.list_checkpoints(run)[0]
    meta = json.loads((older / ckpt.META_FILE).read_text())
    (older / ckpt.META_FILE).write_text(json.dumps({**meta, "format": "someone-else"}))
    with pytest.raises(ckpt.CheckpointError, match=r"meta.json: not a sparsecircuits checkpoint"):
        ckpt.read_meta(older)
    with pytest.raises(ckpt.CheckpointError, match=r"meta.json: missing"):
        ckpt.read_meta(tmp_path)


def test_bad_config_writes_nothing(tmp_path):
    out = tmp_path / "never"
    command, env = _cli("train", "tiny", "--set", "schedule.sources=[\"quote\", \"nope\"]",
                        "--out", str(out))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "schedule.sources[1]: unknown task 'nope'" in result.stderr
    assert not out.exists()
    command, env = _cli("train", "tiny", "--set", "schedule.kind=\"spiral\"", "--out", str(out))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert "schedule.kind" in result.stderr and not out.exists()


def test_existing_run_is_not_overwritten(tmp_path, micro_config):
    run = train(micro_config(), tmp_path / "run", progress=False)
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"already holds a run"):
        train(micro_config(), run, progress=False)
    with pytest.raises(ConfigError, match=r"differs in model.d_mlp"):
        train(micro_config("model.d_mlp=32"), run, resume=True, progress=False)
    assert (run / "metrics.jsonl").read_text() == before


def test_document_sources_and_a_mixed_warmup(tmp_path, micro_config):
    config = micro_config("schedule.sources=[\"quote\", \"doc:0\", \"doc:1\"]",
                          "data.documents=2", "schedule.warmup_steps=4", "schedule.cycles=1")
    run = train(config, tmp_path / "run", progress=False)
    evals = [json.loads(line) for line in read_lines(run / "evals.jsonl")]
    assert [(e["source"], e["cycle"]) for e in evals] == [
        ("mixed", -1), ("quote", 0), ("doc:0", 0), ("doc:1", 0)]
    assert {"doc:0", "doc:1", "quote", "corpus"} <= set(evals[0]["evals"])
    metrics = [json.loads(line) for line in read_lines(run / "metrics.jsonl")]
    assert [m["source"] for m in metrics[:4]] == ["mixed"] * 4
    # Training on a document lowers its loss: the doc:0 block ends below where it started.
    assert evals[2]["evals"]["doc:0"]["loss"] < evals[1]["evals"]["doc:0"]["loss"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_a_gpu_run_without_a_gpu_is_refused_before_writing(tmp_path, micro_config):
    config = micro_config('run.device="cuda"')
    with pytest.raises(ConfigError, match=r"run\.device"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, micro_config):
    from sparsecircuits.circuits.extract import extract_run
    from sparsecircuits.rundir import RunDir

    config = micro_config("schedule.cycles=1")
    run = train(config, tmp_path / "run", progress=False)
    lock = RunDir(run).lock
    holder = subprocess.Popen(  # another process holding the lock as run_lock does
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"f = open({str(lock)!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
         "f.truncate(0); f.write(f'{os.getpid()}\\n'); f.flush(); print('held', flush=True)\n"
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        before = (run / "metrics.jsonl").read_text()
        for attempt in (lambda: train(config, run, resume=True, progress=False),
                        lambda: extract_run(run, threads=1)):
            with pytest.raises(ckpt.CheckpointError, match=rf"in use by process {holder.pid} "):
                attempt()
        assert (run / "metrics.jsonl").read_text() == before
        assert not RunDir(run).circuits.exists()
    finally:
        holder.kill()
        holder.wait()
    with ckpt.run_lock(run):  # the OS dropped the killed holder's lock; ours names us
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(ckpt.CheckpointError, match=rf"in use by process {os.getpid()} "):
            train(config, run, resume=True, progress=False)
    train(config, run, resume=True, progress=False)  # released


def test_extract_without_checkpoints_is_refused(tmp_path, micro_config):
    from sparsecircuits.circuits.extract import extract_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(micro_config().to_dict()))
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoints: no checkpoint to extract"):
        extract_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_metrics_are_strict_json(tmp_path, micro_config):
    run = train(micro_config("optimizer.normalize_grad=false", "schedule.cycles=1"),
                tmp_path / "run", progress=False)
    text = (run / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert all(r["grad_rms"] is None for r in records)  # not measured without normalize_grad


def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(
        tmp_path, micro_config, monkeypatch, capsys):
    from sparsecircuits.train import Trainer

    config = micro_config()
    whole = train(config, tmp_path / "whole", progress=False)
    train_step = Trainer._train_step

    def crash_at_14(self, slot):
        if slot.step == 14:
            raise Crash
        return train_step(self, slot)
    with monkeypatch.context() as m:
        m.setattr(Trainer, "_train_step", crash_at_14)
        with pytest.raises(Crash):
            train(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    newest = ckpt.latest_checkpoint(run)
    assert newest.name == "00000011"
    state = newest / ckpt.STATE_FILE
    state.write_bytes(state.read_bytes()[:-100])  # torn by a disk error
    capsys.readouterr()
    train(config, run, resume=True, progress=False)
    note = capsys.readouterr().err
    assert note.startswith(f"sparsecircuits: note: {state}: truncated or altered"), note
    assert note.endswith("; resuming from 00000005, the checkpoint before it\n"), note
    assert_same_run(run, whole)


def test_every_file_of_a_run_has_the_umask_mode(tmp_path, micro_config):
    old = os.umask(0o027)
    try:
        run = train(micro_config("schedule.cycles=1"), tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(run)): oct(p.stat().st_mode & 0o777)
             for p in run.rglob("*") if p.is_file()}
    assert set(modes.values()) == {"0o640"}, modes
