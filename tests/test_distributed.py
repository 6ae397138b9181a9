"""Data parallelism: two gloo ranks on the CPU train the one-rank run, agree at every
checkpoint, leave the run folder to rank 0, and resume across a change in the number of ranks.

The two-rank runs are spawned processes (``torch.multiprocessing``) that join a process group
from torchrun's environment variables, and one run through ``torchrun`` itself."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from sparsecircuits import checkpoint as ckpt
from sparsecircuits.config import ConfigError
from sparsecircuits.distributed import Ranks, process_group
from sparsecircuits.model import SparseGPT
from sparsecircuits.sparsity import Sparsifier
from sparsecircuits.train import Trainer, TrainingError, batch_loss, check_run, train

NOISE = ".attn.k.b"
"""The key bias. Softmax ignores a constant added to a query's every score, so its gradient is
zero in exact arithmetic and rounding noise in floats, which AdamW turns into steps of about
the learning rate with the noise's sign: its values (and kept entries) differ between any two
summation orders, here and between thread counts, and change no output (the evaluations below
agree to 1e-5)."""
TOLERANCE = 1e-5
"""Weights and losses: one rank against two (measured: 1.2e-7 after 24 steps)."""


class Interrupted(Exception):
    """Stands in for a kill right after a checkpoint."""


def _patch(patch: pytest.MonkeyPatch, stop_after: int | None, flip_at: int | None,
           masks: dict) -> None:
    """Record every checkpoint's masks into ``masks``; stop after the checkpoint of step
    ``stop_after``; flip one mask entry at step ``flip_at`` (rank 1's copy only drifts)."""
    save, project = Trainer._save, Sparsifier.project

    def recording_save(self, slot):
        masks[self.step] = {name: m.clone() for name, m in self.sparsifier.masks.items()}
        save(self, slot)
        if self.step == stop_after:
            raise Interrupted

    def drifting_project(self, step):
        churn = project(self, step)
        if step == flip_at:
            next(iter(self.masks.values())).view(-1)[0] ^= True
        return churn

    patch.setattr(Trainer, "_save", recording_save)
    patch.setattr(Sparsifier, "project", drifting_project)


def _rank(rank, world, port, config, run, resume, stop_after, flip_at, out):
    """One rank of a spawned run: join the group from the environment, as under torchrun, and
    train; write what it saw (masks, errors, its file accesses in the run folder) to ``out``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    prefix, touched = str(run), []

    def audit(event, args):
        for arg in args[:2]:
            if isinstance(arg, str | os.PathLike) and os.fspath(arg).startswith(prefix):
                touched.append(f"{event} {os.fspath(arg)}")

    sys.addaudithook(audit)
    masks: dict[int, dict] = {}
    _patch(pytest.MonkeyPatch(), stop_after, flip_at if rank == 1 else None, masks)
    error = None
    try:
        train(config, run, resume=resume, progress=False)
    except (TrainingError, Interrupted) as err:
        error = f"{type(err).__name__}: {err}"
    torch.save({"masks": masks, "touched": touched, "error": error}, out / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(config, run, tmp, *, resume=False, stop_after=None, flip_at=None) -> list[dict]:
    """Train ``config`` into ``run`` on two gloo ranks; what each rank saw."""
    out = tmp / f"seen_{run.name}"
    out.mkdir()
    mp.spawn(_rank, nprocs=2, args=(2, _free_port(), config, run, resume, stop_after, flip_at,
                                    out))
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def _stored_masks(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's masks: the kept indices of every weight-sparse tensor."""
    stored = ckpt.load_tensors(checkpoint / ckpt.MODEL_FILE)
    return {k.removesuffix(".indices"): v for k, v in stored.items() if k.endswith(".indices")}


def _assert_same_run(run: Path, whole: Path) -> float:
    """Same checkpoints, masks and logged steps, weights and losses to :data:`TOLERANCE`
    (:data:`NOISE` aside); return the largest weight difference."""
    found, expected = ckpt.list_checkpoints(run), ckpt.list_checkpoints(whole)
    assert [p.name for p in found] == [p.name for p in expected]
    worst = 0.0
    for mine, theirs in zip(found, expected, strict=True):
        (wa, _), (wb, _) = ckpt.load_weights(mine), ckpt.load_weights(theirs)
        for name in wb:
            if not name.endswith(NOISE):
                worst = max(worst, float((wa[name] - wb[name]).abs().max()))
        ma, mb = _stored_masks(mine), _stored_masks(theirs)
        assert ma.keys() == mb.keys()
        differ = [n for n in mb if not n.endswith(NOISE) and not torch.equal(ma[n], mb[n])]
        assert not differ, f"{mine.name}: masks differ in {differ}"
    assert worst < TOLERANCE, worst
    for log in ("metrics.jsonl", "evals.jsonl"):
        a, b = ([json.loads(line) for line in (r / log).read_text().splitlines()]
                for r in (run, whole))
        assert [r["step"] for r in a] == [r["step"] for r in b], log
        for ra, rb in zip(a, b, strict=True):
            for key in ("loss", "source_loss", "lm_loss"):
                if key in rb:
                    assert abs(ra[key] - rb[key]) < TOLERANCE, (log, rb["step"], key)
            for source, ev in rb.get("evals", {}).items():
                assert abs(ra["evals"][source]["loss"] - ev["loss"]) < TOLERANCE, (log, source)
    return worst


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


@pytest.fixture
def config(micro_config):
    return micro_config("run.threads=1")


def test_two_ranks_train_the_one_rank_run_and_only_rank_0_writes(tmp_path, config):
    whole = train(config, tmp_path / "whole", progress=False)
    run = tmp_path / "two"
    ranks = _two_ranks(config, run, tmp_path)
    assert [r["error"] for r in ranks] == [None, None]
    worst = _assert_same_run(run, whole)
    print(f"two ranks against one: weights differ by at most {worst:.2e}")
    steps = [p.name for p in ckpt.list_checkpoints(run)]
    for rank in ranks:  # the masks each rank held at every checkpoint: rank 0's, exactly
        assert [f"{s:08d}" for s in rank["masks"]] == steps
        for step, masks in rank["masks"].items():
            assert all(torch.equal(m, ranks[0]["masks"][step][n]) for n, m in masks.items())
    assert ranks[0]["touched"], "the audit hook records rank 0's writes"
    assert ranks[1]["touched"] == []
    assert _files(run) == _files(whole)


def test_ranks_that_disagree_stop_the_run_before_saving(tmp_path, config):
    run = tmp_path / "drift"
    ranks = _two_ranks(config, run, tmp_path, flip_at=11)
    name = next(iter(SparseGPT(config.model).sparse_parameters()))  # the first mask
    for rank in ranks:
        assert rank["error"].startswith(f"TrainingError: {run}: after step 11 the ranks' copies "
                                        f"differ: mask {name} on rank 1 is not rank 0's"), rank
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["00000005"]


def test_resume_after_a_change_in_the_number_of_ranks(tmp_path, config, monkeypatch):
    whole = train(config, tmp_path / "whole", progress=False)
    run = tmp_path / "changing"
    with monkeypatch.context() as patch, pytest.raises(Interrupted):  # one rank to step 5
        _patch(patch, 5, None, {})
        train(config, run, progress=False)
    ranks = _two_ranks(config, run, tmp_path, resume=True, stop_after=11)  # two to step 11
    assert [r["error"] for r in ranks] == ["Interrupted: "] * 2
    assert ranks[1]["touched"] == [], "rank 1 reads the checkpoint from rank 0, not the folder"
    train(config, run, resume=True, progress=False)  # one to the end
    _assert_same_run(run, whole)


def test_torchrun_launches_a_run(tmp_path, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    whole = train(config, tmp_path / "whole", progress=False)
    run = tmp_path / "torchrun"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sparsecircuits", "train", str(path), "--out", str(run)],
        env={**os.environ, "CI": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("trained ") == 1, done.stdout  # rank 0 reports
    _assert_same_run(run, whole)


@pytest.mark.parametrize("world", [2, 3, 5])
@pytest.mark.parametrize("overrides", [
    ("schedule.warmup_steps=2",),  # step 0 is mixed: rows of every source
    ("data.documents=2", 'schedule.sources=["doc:1", "quote"]', "data.document_windows=3"),
])
def test_the_ranks_shares_of_a_batch_sum_to_the_batch(micro_config, tmp_path, world, overrides):
    config = micro_config("run.threads=1", *overrides)
    trainer = Trainer(config, tmp_path)
    slot = trainer.schedule(0)

    def loss_and_grads(ranks):
        trainer.model.zero_grad(set_to_none=True)
        losses = batch_loss(trainer.model, config, trainer.sources, slot, ranks)
        losses["loss"].backward()
        return ({k: v.detach() for k, v in losses.items()},
                {n: p.grad.clone() for n, p in trainer.named.items()})

    whole_losses, whole_grads = loss_and_grads(Ranks())
    shares = [loss_and_grads(Ranks(rank, world)) for rank in range(world)]
    for name, loss in whole_losses.items():
        torch.testing.assert_close(sum(s[0][name] for s in shares), loss, rtol=1e-6, atol=0)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(sum(s[1][name] for s in shares), grad, rtol=1e-4, atol=1e-6)


def test_a_batch_that_cannot_give_every_rank_a_row_is_refused(micro_config, monkeypatch):
    config = micro_config("data.source_rows=2", "data.lm_rows=1")
    check_run(config, 3)
    rows = r"^data\.source_rows: data\.source_rows \+ data\.lm_rows is 3, fewer rows .* 4 ranks"
    with pytest.raises(ConfigError, match=rows):
        check_run(config, 4)
    docs = micro_config("data.documents=1", 'schedule.sources=["doc:0", "quote"]',
                        "data.document_windows=2", "data.lm_rows=1")
    with pytest.raises(ConfigError, match=r"^data\.document_windows: data\.document_windows \+"):
        check_run(docs, 4)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with (pytest.raises(ConfigError, match=r"^run\.device: 'cuda:1' puts all 2 ranks on one GPU"),
          process_group(torch.device("cuda:1"))):
        pass
