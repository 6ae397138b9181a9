"""A run is a pure function of its config at a fixed thread count: two runs at 2 threads are
bitwise equal, and so is a run interrupted after its first checkpoint and resumed."""

import pytest
import torch

from sparsecircuits import checkpoint as ckpt
from sparsecircuits.train import Trainer, train

# Enough rows that the embedding gradient (tokens x d_model = 20 x 64 x 32 = 40960 entries)
# passes torch's parallel grain (32768): below it the CPU adds every gradient serially, and the
# old ``W_E[tokens]`` backward (index_put_ with atomics across threads) was reproducible by luck.
OVERRIDES = ("run.threads=2", "data.source_rows=16")


class _Interrupted(Exception):
    pass


class _StopAfterFirstCheckpoint(Trainer):
    """Dies right after writing its first checkpoint, as a kill between two steps would."""

    def _save(self, slot):
        super()._save(slot)
        raise _Interrupted


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _final_weights(run):
    weights, meta = ckpt.load_weights(ckpt.latest_checkpoint(run))
    return weights, meta["step"]


def _assert_same_run(a, b):
    for name in ("metrics.jsonl", "evals.jsonl"):
        assert (a / name).read_text() == (b / name).read_text(), name
    (wa, step_a), (wb, step_b) = _final_weights(a), _final_weights(b)
    assert step_a == step_b == 23
    assert wa.keys() == wb.keys()
    differ = [name for name in wa if not torch.equal(wa[name], wb[name])]
    assert not differ, f"not bitwise equal at 2 threads: {differ}"


def test_two_runs_at_two_threads_are_bitwise_equal(tmp_path, micro_config):
    config = micro_config(*OVERRIDES)
    first = train(config, tmp_path / "first", progress=False)
    second = train(config, tmp_path / "second", progress=False)
    _assert_same_run(first, second)


def test_resume_at_two_threads_matches_uninterrupted_run(tmp_path, micro_config):
    config = micro_config(*OVERRIDES)
    whole = train(config, tmp_path / "whole", progress=False)
    broken = tmp_path / "broken"
    with pytest.raises(_Interrupted):
        _StopAfterFirstCheckpoint(config, broken).train(progress=False)
    assert [int(p.name) for p in ckpt.list_checkpoints(broken)] == [5]
    train(config, broken, resume=True, progress=False)
    _assert_same_run(whole, broken)
