"""The circuit breaker as a pure state machine: a fake clock, nothing sleeps."""

from __future__ import annotations

from gateway.config.resilience import BreakerSettings
from gateway.resilience.breaker import CircuitBreaker, State

SETTINGS = BreakerSettings(failure_rate=0.5, minimum_calls=4, window=10.0, cool_down=30.0, probes=2)


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def call(breaker: CircuitBreaker, success: bool) -> bool:
    """One call through the breaker; False when it was rejected."""
    ticket = breaker.allow()
    if ticket is None:
        return False
    breaker.record(ticket, success)
    return True


def opened(clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker(SETTINGS, clock)
    for success in (False, False, True, True):
        assert call(breaker, success)
    assert breaker.state is State.OPEN
    return breaker


def test_stays_closed_below_the_minimum_number_of_calls() -> None:
    breaker = CircuitBreaker(SETTINGS, Clock())
    for _ in range(3):
        assert call(breaker, False)
    assert breaker.state is State.CLOSED  # 100% failures, but only 3 calls


def test_stays_closed_below_the_failure_rate() -> None:
    breaker = CircuitBreaker(SETTINGS, Clock())
    for success in (False, True, True, True, False, True, True):
        assert call(breaker, success)
    assert breaker.state is State.CLOSED
    assert breaker.failure_rate() == 2 / 7


def test_opens_at_the_failure_rate_judged_after_a_success_too() -> None:
    breaker = opened(Clock())
    assert breaker.stats.opened == 1


def test_old_calls_fall_out_of_the_window_as_it_advances() -> None:
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, clock)
    for _ in range(3):
        assert call(breaker, False)
    clock.now = 11.0
    breaker.advance(11.0)  # the owner's timer: the three failures are more than 10 s old
    assert call(breaker, True)
    assert breaker.state is State.CLOSED
    assert breaker.failure_rate() == 0.0 and breaker.window.total == 1


def test_a_failure_moves_the_window_itself() -> None:
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, clock)
    for _ in range(3):
        assert call(breaker, False)
    clock.now = 11.0  # no timer ran: the failure must not be judged with stale calls
    assert call(breaker, False)
    assert breaker.state is State.CLOSED
    assert (breaker.window.total, breaker.window.marked) == (1, 1)


def test_open_rejects_until_the_cool_down_then_lets_probes_through() -> None:
    clock = Clock(100.0)
    breaker = opened(clock)
    clock.now = 120.0
    assert breaker.retry_after() == 10.0
    clock.now = 129.9
    assert breaker.allow() is None
    assert breaker.current() is State.OPEN
    clock.now = 130.0
    assert breaker.current() is State.HALF_OPEN
    first, second = breaker.allow(), breaker.allow()
    assert first is not None and second is not None
    assert breaker.allow() is None  # both probes taken
    assert breaker.stats.rejected == 2


def test_half_open_closes_when_every_probe_succeeds() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now = 30.0
    assert call(breaker, True)
    assert breaker.state is State.HALF_OPEN
    assert call(breaker, True)
    assert breaker.state is State.CLOSED
    assert breaker.window.total == 0  # a fresh window


def test_a_failed_probe_opens_again_with_a_fresh_cool_down() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now = 30.0
    assert call(breaker, True)
    clock.now = 31.0
    assert call(breaker, False)
    assert breaker.state is State.OPEN
    clock.now = 60.0
    assert breaker.allow() is None  # 30 s from the reopening, not from the first open
    clock.now = 61.0
    assert breaker.allow() is not None
    assert breaker.stats.opened == 2


def test_an_outcome_from_an_earlier_state_is_ignored() -> None:
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, clock)
    slow = breaker.allow()  # a call started while closed ...
    assert slow is not None
    for success in (False, False, True, True):
        call(breaker, success)
    clock.now = 30.0
    probe = breaker.allow()
    assert probe is not None and breaker.state is State.HALF_OPEN
    breaker.record(slow, False)  # ... ends while half-open: not a probe's failure
    assert breaker.state is State.HALF_OPEN
    breaker.record(probe, True)
    assert call(breaker, True)
    assert breaker.state is State.CLOSED


def test_a_cancelled_probe_frees_its_slot() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now = 30.0
    first, second = breaker.allow(), breaker.allow()
    assert first is not None and second is not None and breaker.allow() is None
    breaker.cancel(first)
    assert breaker.allow() is not None


def test_successes_are_counted_without_the_clock_and_folded_in_when_it_advances() -> None:
    clock = Clock()
    breaker = CircuitBreaker(SETTINGS, clock)
    for _ in range(5):
        assert call(breaker, True)
    assert breaker.window.total == 0  # not yet folded in
    breaker.advance(0.5)
    assert breaker.window.total == 5 and breaker.stats.successes == 5
    for _ in range(5):
        assert call(breaker, False)  # each failure folds the successes in before judging
    assert breaker.state is State.OPEN  # 5 of 10: at the threshold
