"""The gateway's copy budget (gateway/shadow/budget.py), driven by a clock and busy seconds
the tests move themselves."""

from __future__ import annotations

import time

import pytest

from gateway.shadow.budget import STEP, Budget, thread_usage

pytestmark = pytest.mark.anyio


class Load:
    def __init__(self) -> None:
        self.now = 0.0
        self.used = 0.0

    def budget(self, limit: float = 0.8, floor: int = 0) -> Budget:
        budget = Budget(limit, floor=floor, usage=lambda: self.used, clock=lambda: self.now)
        budget.update()  # the starting point
        return budget

    def interval(self, budget: Budget, busy: float, seconds: float = 0.1) -> None:
        self.now += seconds
        self.used += seconds * busy
        budget.update()


def admitted(budget: Budget, asked: int) -> int:
    return sum(budget.admit() for _ in range(asked))


async def test_busy_intervals_halve_the_share_and_quiet_ones_grow_it_back() -> None:
    load = Load()
    budget = load.budget()
    try:
        assert admitted(budget, 100) == 100  # nothing measured yet: everything
        load.interval(budget, 0.9)
        assert (budget.busy, budget.share) == (pytest.approx(0.9), 0.5)
        assert admitted(budget, 100) == 50
        load.interval(budget, 1.0)
        load.interval(budget, 1.0)
        assert budget.share == 0.125
        assert admitted(budget, 80) == 10
        load.interval(budget, 0.7)
        assert budget.share == pytest.approx(0.125 + STEP)
        for _ in range(20):
            load.interval(budget, 0.3)
        assert budget.share == 1.0
        assert admitted(budget, 100) == 100
    finally:
        budget.close()


async def test_the_floor_is_admitted_in_every_interval_however_busy() -> None:
    load = Load()
    budget = load.budget(floor=3)
    try:
        for _ in range(40):  # the share halves down to nothing
            load.interval(budget, 1.0)
        assert admitted(budget, 50) == 3
        load.interval(budget, 1.0)
        assert admitted(budget, 50) == 3
    finally:
        budget.close()


async def test_waiting_for_a_core_counts_as_busy_and_a_whole_limit_turns_it_off() -> None:
    load = Load()
    budget = load.budget(limit=1.0)
    try:
        load.interval(budget, 5.0)  # more than the wall time: clamped
        assert budget.busy == 1.0
        assert admitted(budget, 100) == 100
    finally:
        budget.close()


def test_the_threads_usage_grows_with_its_cpu_time() -> None:
    before = thread_usage()
    spent = time.thread_time() + 0.02
    while time.thread_time() < spent:  # 20 ms of this thread's CPU
        pass
    assert thread_usage() - before >= 0.02
