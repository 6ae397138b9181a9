"""Cyclic data schedules: pure, seeded maps from a training step to the source trained at it.

A schedule is ``E`` cycles; every cycle holds one block of ``M`` steps per source (minus any
skipped ones), optionally preceded by a warm-up block whose every step trains a mixture of all
sources (source ``"mixed"``: the trainer splits each batch among them). Randomness comes only
from string-seeded ``random.Random`` instances, so the same spec gives the same schedule in
every process.

    >>> schedule = build_schedule(ScheduleConfig(sources=["a", "b"], steps_per_block=2, cycles=2))
    >>> [schedule(step).source for step in range(schedule.total_steps)]
    ['a', 'a', 'b', 'b', 'a', 'a', 'b', 'b']
"""

from __future__ import annotations

import random
import typing
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

from sparsecircuits.config import ConfigError, ScheduleConfig, ScheduleKind

KINDS: tuple[str, ...] = typing.get_args(ScheduleKind)
MIXED = "mixed"  # the source of a block that holds several sources (warm-up, iid, interleave)


@dataclass(frozen=True)
class Slot:
    """Where in the schedule one step falls, and what it trains."""

    step: int  # global step, 0-based
    source: str  # the task or document trained at this step
    cycle: int  # -1 during the warm-up mixture
    block: int  # global block index (the warm-up, if any, is block 0)
    position: int  # index of the block within its cycle (-1 in the warm-up)
    offset: int  # step within the block


@dataclass(frozen=True)
class Block:
    """A contiguous run of steps ``[start, stop)``; checkpoints fall at block boundaries."""

    index: int  # global block index
    cycle: int  # -1 for the warm-up
    position: int  # index within its cycle (-1 for the warm-up)
    source: str  # the one source trained, or "mixed"
    start: int  # first step
    stop: int  # one past the last step


class Schedule:
    """A built schedule: call it with a step to get its ``Slot``; iterate it for every slot.

    Lookup bisects the block table, so it costs O(log blocks) whatever the number of steps.
    """

    def __init__(self, spec: ScheduleConfig) -> None:
        _validate(spec)
        self.spec = spec
        m = spec.steps_per_block
        blocks: list[Block] = []
        if spec.warmup_steps:
            blocks.append(Block(0, -1, -1, MIXED, 0, spec.warmup_steps))
        # Per cycle: its first step and its sources in cycle order (skipped ones removed).
        self._cycles: list[tuple[int, tuple[str, ...]]] = []
        start = spec.warmup_steps
        single = _one_source_per_block(spec)
        for cycle in range(spec.cycles):
            order = _cycle_order(spec, cycle)
            self._cycles.append((start, order))
            for position, source in enumerate(order):
                block_source = source if single else MIXED
                blocks.append(Block(len(blocks), cycle, position, block_source, start, start + m))
                start += m
        self._blocks = tuple(blocks)
        self._starts = [block.start for block in blocks]
        self.total_steps = start

    def __call__(self, step: int) -> Slot:
        """The slot of ``step``; ``IndexError`` outside ``[0, total_steps)``."""
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} is outside the schedule [0, {self.total_steps})")
        block = self._blocks[bisect_right(self._starts, step) - 1]
        return Slot(
            step=step,
            source=self._source_at(block, step),
            cycle=block.cycle,
            block=block.index,
            position=block.position,
            offset=step - block.start,
        )

    def __iter__(self) -> Iterator[Slot]:
        """Every slot, in step order."""
        return (self(step) for step in range(self.total_steps))

    def blocks(self) -> list[Block]:
        """All blocks in step order; they tile ``[0, total_steps)``."""
        return list(self._blocks)

    def boundaries(self) -> list[int]:
        """The last step of every block, ascending: where block-boundary checkpoints go."""
        return [block.stop - 1 for block in self._blocks]

    def _source_at(self, block: Block, step: int) -> str:
        spec = self.spec
        if block.cycle == -1:
            return MIXED
        cycle_start, order = self._cycles[block.cycle]
        if spec.kind == "iid":
            return _draw(spec.seed, step, order)
        if spec.kind == "interleave":
            return order[(step - cycle_start) // spec.granularity % len(order)]
        return block.source


def build_schedule(spec: ScheduleConfig) -> Schedule:
    """Check ``spec`` and build its schedule; a bad field raises ``ConfigError`` naming it."""
    return Schedule(spec)


def _one_source_per_block(spec: ScheduleConfig) -> bool:
    """Whether each block trains one source (interleave does when it switches every M steps)."""
    if spec.kind == "iid":
        return False
    return spec.kind != "interleave" or spec.granularity == spec.steps_per_block


def _cycle_order(spec: ScheduleConfig, cycle: int) -> tuple[str, ...]:
    """The sources of one cycle in block order.

    Skipped sources are removed after ordering, so a skip leaves the others' order unchanged.
    iid and interleave use the given order (interleave takes turns in it).
    """
    order = list(spec.sources)
    if spec.kind == "shuffled":
        random.Random(f"{spec.seed}:shuffle:{cycle}").shuffle(order)
    elif spec.kind == "reverse" or (spec.kind == "ping_pong" and cycle % 2 == 1):
        order.reverse()
    skipped = {source for source, skipped_cycle in spec.skip if skipped_cycle == cycle}
    return tuple(source for source in order if source not in skipped)


def _draw(seed: int, step: int, pool: tuple[str, ...]) -> str:
    """One uniform draw from ``pool``, seeded by the step alone."""
    return pool[random.Random(f"{seed}:step:{step}").randrange(len(pool))]


def _validate(spec: ScheduleConfig) -> None:
    def fail(field: str, problem: str) -> NoReturn:
        raise ConfigError(f"schedule.{field}: {problem}")

    if spec.kind not in KINDS:
        fail("kind", f"unknown kind {spec.kind!r}; expected one of {', '.join(KINDS)}")
    if not spec.sources:
        fail("sources", "no sources given")
    duplicates = sorted(s for s, n in Counter(spec.sources).items() if n > 1)
    if duplicates:
        fail("sources", f"duplicate sources {duplicates}")
    if MIXED in spec.sources:
        fail("sources", f"{MIXED!r} is reserved for blocks that mix sources")
    if spec.steps_per_block < 1:
        fail("steps_per_block", f"must be at least 1, got {spec.steps_per_block}")
    if spec.cycles < 1:
        fail("cycles", f"must be at least 1, got {spec.cycles}")
    if spec.warmup_steps < 0:
        fail("warmup_steps", f"must be at least 0, got {spec.warmup_steps}")
    if spec.kind == "interleave" and (
        spec.granularity < 1 or spec.steps_per_block % spec.granularity
    ):
        fail(
            "granularity",
            f"{spec.granularity} must be at least 1 and divide "
            f"steps_per_block={spec.steps_per_block}",
        )
    for entry in spec.skip:
        if len(entry) != 2:
            fail("skip", f"{entry!r} is not a (source, cycle) pair")
        source, cycle = entry
        if source not in spec.sources:
            fail("skip", f"{entry!r} names an unknown source {source!r}")
        if not 0 <= cycle < spec.cycles:
            fail("skip", f"{entry!r} names cycle {cycle}, outside [0, {spec.cycles})")
    repeated = sorted(entry for entry, n in Counter(tuple(e) for e in spec.skip).items() if n > 1)
    if repeated:
        fail("skip", f"{repeated} listed more than once")
    per_cycle = Counter(cycle for _, cycle in spec.skip)
    emptied = sorted(cycle for cycle, n in per_cycle.items() if n == len(spec.sources))
    if emptied:
        fail("skip", f"would leave cycles {emptied} with no blocks")
