"""Schedules, checked against closed forms and independent counts rather than their own code."""

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from itertools import pairwise

import pytest

from sparsecircuits.config import ScheduleConfig
from sparsecircuits.schedules import (
    KINDS,
    MIXED,
    Block,
    Slot,
    build_schedule,
)

SOURCES = ("a", "b", "c", "d", "e")
M = 6
E = 4
BLOCKED = ("round_robin", "shuffled", "reverse", "ping_pong")


def spec(**fields) -> ScheduleConfig:
    base = ScheduleConfig(sources=SOURCES, steps_per_block=M, cycles=E, granularity=2)
    return replace(base, **fields)


def sources_of(schedule) -> list[str]:
    return [slot.source for slot in schedule]


def cycle_orders(schedule) -> list[list[str]]:
    """Block sources of each cycle, read off the steps (a block's first step)."""
    orders: dict[int, list[str]] = {}
    for slot in schedule:
        if slot.offset == 0 and slot.cycle >= 0:
            orders.setdefault(slot.cycle, []).append(slot.source)
    return [orders[c] for c in sorted(orders)]


def test_kinds_are_the_documented_ones():
    assert set(KINDS) == {"round_robin", "shuffled", "iid", "interleave", "reverse", "ping_pong"}


@pytest.mark.parametrize("kind", [*BLOCKED, "interleave"])
def test_each_source_gets_m_steps_per_cycle(kind):
    schedule = build_schedule(spec(kind=kind))
    assert schedule.total_steps == len(SOURCES) * M * E
    counts = Counter((slot.cycle, slot.source) for slot in schedule)
    assert counts == {(c, s): M for c in range(E) for s in SOURCES}


@pytest.mark.parametrize("kind", KINDS)
def test_slot_fields_follow_the_closed_form(kind):
    schedule = build_schedule(spec(kind=kind))
    k = len(SOURCES)
    for step in range(schedule.total_steps):
        slot = schedule(step)
        assert (slot.step, slot.cycle, slot.block) == (step, step // (k * M), step // M)
        assert (slot.position, slot.offset) == (step // M % k, step % M)


def test_round_robin_reverse_and_ping_pong_orders():
    forward, backward = list(SOURCES), list(reversed(SOURCES))
    assert cycle_orders(build_schedule(spec(kind="round_robin"))) == [forward] * E
    assert cycle_orders(build_schedule(spec(kind="reverse"))) == [backward] * E
    assert cycle_orders(build_schedule(spec(kind="ping_pong"))) == [forward, backward] * (E // 2)


@pytest.mark.parametrize("kind", BLOCKED)
def test_blocked_kinds_train_one_source_per_block(kind):
    schedule = build_schedule(spec(kind=kind))
    for block in schedule.blocks():
        trained = {schedule(step).source for step in range(block.start, block.stop)}
        assert trained == {block.source}


def test_shuffled_is_a_fresh_permutation_each_cycle():
    orders = cycle_orders(build_schedule(spec(kind="shuffled", cycles=8)))
    assert all(sorted(order) == sorted(SOURCES) for order in orders)
    assert len({tuple(order) for order in orders}) > 1


@pytest.mark.parametrize("kind", ["shuffled", "iid"])
def test_same_seed_same_schedule_and_different_seeds_differ(kind):
    first = sources_of(build_schedule(spec(kind=kind, seed=3)))
    assert sources_of(build_schedule(spec(kind=kind, seed=3))) == first
    assert sources_of(build_schedule(spec(kind=kind, seed=4))) != first


def test_same_schedule_in_another_process():
    """Seeding must not depend on Python's salted str hash."""
    code = (
        "import json, sys\n"
        "from sparsecircuits.config import ScheduleConfig\n"
        "from sparsecircuits.schedules import build_schedule\n"
        "for kind in ('shuffled', 'iid'):\n"
        "    s = build_schedule(ScheduleConfig(kind=kind, sources=tuple('abcde'),\n"
        "        steps_per_block=6, cycles=4, warmup_steps=7, seed=11))\n"
        "    print(json.dumps([slot.source for slot in s]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for kind, line in zip(("shuffled", "iid"), out, strict=True):
        here = sources_of(build_schedule(spec(kind=kind, warmup_steps=7, seed=11)))
        assert json.loads(line) == here


def test_iid_is_roughly_uniform_deterministic_and_blocked_into_windows():
    schedule = build_schedule(spec(kind="iid", steps_per_block=500))
    counts = Counter(sources_of(schedule))
    expected = schedule.total_steps / len(SOURCES)  # 2000; binomial sd is about 40
    assert set(counts) == set(SOURCES)
    assert all(abs(n - expected) < 200 for n in counts.values())
    assert sources_of(build_schedule(spec(kind="iid", steps_per_block=500))) == sources_of(schedule)
    assert {block.source for block in schedule.blocks()} == {"mixed"}
    assert [b.stop - b.start for b in schedule.blocks()] == [500] * (len(SOURCES) * E)


@pytest.mark.parametrize("g", [1, 2, 3])
def test_interleave_takes_turns_every_g_steps(g):
    schedule = build_schedule(spec(kind="interleave", granularity=g))
    cycle_len = len(SOURCES) * M
    for slot in schedule:
        assert slot.source == SOURCES[(slot.step % cycle_len) // g % len(SOURCES)]
    assert {block.source for block in schedule.blocks()} == {"mixed"}


def test_interleave_skips_a_source_by_leaving_it_out_of_the_turns():
    schedule = build_schedule(spec(kind="interleave", granularity=2, skip=(("c", 0),)))
    turns = ("a", "b", "d", "e")
    for slot in schedule:
        if slot.cycle == 0:
            assert slot.source == turns[slot.step // 2 % len(turns)]


def test_interleave_with_g_equal_m_is_round_robin():
    interleave = build_schedule(spec(kind="interleave", granularity=M, warmup_steps=5))
    round_robin = build_schedule(spec(kind="round_robin", warmup_steps=5))
    assert list(interleave) == list(round_robin)
    assert interleave.blocks() == round_robin.blocks()


@pytest.mark.parametrize("kind", KINDS)
def test_skip_removes_exactly_one_block(kind):
    full = build_schedule(spec(kind=kind))
    skipped = build_schedule(spec(kind=kind, skip=(("c", 2),)))
    assert skipped.total_steps == full.total_steps - M
    assert len(skipped.blocks()) == len(full.blocks()) - 1
    in_cycle_2 = Counter(slot.source for slot in skipped if slot.cycle == 2)
    assert "c" not in in_cycle_2
    assert sum(in_cycle_2.values()) == (len(SOURCES) - 1) * M
    positions = [b.position for b in skipped.blocks() if b.cycle == 2]
    assert positions == list(range(len(SOURCES) - 1))
    if kind in BLOCKED:  # the skip leaves the other blocks' order alone
        orders, full_orders = cycle_orders(skipped), cycle_orders(full)
        assert orders[2] == [s for s in full_orders[2] if s != "c"]
        assert orders[:2] == full_orders[:2]
        assert orders[3] == full_orders[3]


def test_warmup_block():
    schedule = build_schedule(spec(kind="shuffled", warmup_steps=10))
    assert schedule.total_steps == 10 + len(SOURCES) * M * E
    first, second = schedule.blocks()[:2]
    assert first == Block(index=0, cycle=-1, position=-1, source="mixed", start=0, stop=10)
    assert (second.index, second.cycle, second.position, second.start) == (1, 0, 0, 10)
    warmup = [schedule(step) for step in range(10)]
    assert all((s.cycle, s.block, s.position, s.offset) == (-1, 0, -1, s.step) for s in warmup)
    assert {s.source for s in warmup} == {MIXED}  # every batch mixes all sources
    assert schedule(10) == Slot(10, second.source, cycle=0, block=1, position=0, offset=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("warmup", [0, 7])
def test_blocks_tile_the_steps_and_boundaries_match(kind, warmup):
    schedule = build_schedule(spec(kind=kind, warmup_steps=warmup, skip=(("a", 1),)))
    blocks = schedule.blocks()
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert blocks[0].start == 0 and blocks[-1].stop == schedule.total_steps
    assert all(prev.stop == nxt.start for prev, nxt in pairwise(blocks))
    assert schedule.boundaries() == [b.stop - 1 for b in blocks]
    last_steps = [
        slot.step
        for slot in schedule
        if slot.step + 1 == schedule.total_steps or schedule(slot.step + 1).block != slot.block
    ]
    assert schedule.boundaries() == last_steps


def test_boundaries_without_warmup_are_every_m_steps():
    schedule = build_schedule(spec())
    assert schedule.boundaries() == list(range(M - 1, schedule.total_steps, M))


def test_lookup_outside_the_schedule_raises_index_error():
    schedule = build_schedule(spec())
    for step in (-1, schedule.total_steps):
        with pytest.raises(IndexError):
            schedule(step)


def test_lookup_in_a_long_schedule_is_cheap():
    big = spec(kind="iid", steps_per_block=1000, cycles=2000, warmup_steps=500)
    schedule = build_schedule(big)  # 10M steps; must not build a per-step table
    assert schedule.total_steps == 500 + 1000 * len(SOURCES) * 2000
    last = schedule(schedule.total_steps - 1)
    assert (last.cycle, last.position, last.offset) == (1999, len(SOURCES) - 1, 999)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "blocked"}, "schedule.kind"),
        ({"sources": ()}, "schedule.sources"),
        ({"sources": ("a", "b", "a")}, "schedule.sources"),
        ({"sources": ("a", "mixed")}, "schedule.sources"),
        ({"steps_per_block": 0}, "schedule.steps_per_block"),
        ({"cycles": 0}, "schedule.cycles"),
        ({"warmup_steps": -1}, "schedule.warmup_steps"),
        ({"kind": "interleave", "granularity": 4}, "schedule.granularity"),
        ({"kind": "interleave", "granularity": 0}, "schedule.granularity"),
        ({"skip": (("z", 0),)}, "schedule.skip"),
        ({"skip": (("a", E),)}, "schedule.skip"),
        ({"skip": (("a", -1),)}, "schedule.skip"),
        ({"skip": (("a", 0), ("a", 0))}, "schedule.skip"),
        ({"skip": tuple((s, 1) for s in SOURCES)}, "schedule.skip"),
        ({"skip": (("a",),)}, "schedule.skip"),
    ],
)
def test_bad_specs_name_the_field(fields, field):
    with pytest.raises(ValueError, match=field):
        build_schedule(spec(**fields))


def test_granularity_is_ignored_outside_interleave():
    assert build_schedule(spec(kind="round_robin", granularity=4)).total_steps > 0
