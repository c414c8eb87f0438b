"""The circuit breaker as a pure state machine: time is passed in, nothing sleeps."""

from __future__ import annotations

from gateway.breaker import CircuitBreaker, State
from gateway.resilience_config import BreakerSettings

SETTINGS = BreakerSettings(failure_rate=0.5, minimum_calls=4, window=10.0, cool_down=30.0, probes=2)


def call(breaker: CircuitBreaker, success: bool, now: float) -> bool:
    """One call through the breaker; False when it was rejected."""
    ticket = breaker.allow(now)
    if ticket is None:
        return False
    breaker.record(ticket, success, now)
    return True


def opened(now: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(SETTINGS)
    for success in (False, False, True, True):
        assert call(breaker, success, now)
    assert breaker.state is State.OPEN
    return breaker


def test_stays_closed_below_the_minimum_number_of_calls() -> None:
    breaker = CircuitBreaker(SETTINGS)
    for _ in range(3):
        assert call(breaker, False, 0.0)
    assert breaker.state is State.CLOSED  # 100% failures, but only 3 calls


def test_stays_closed_below_the_failure_rate() -> None:
    breaker = CircuitBreaker(SETTINGS)
    for success in (False, True, True, True, False, True, True):
        assert call(breaker, success, 0.0)
    assert breaker.state is State.CLOSED
    assert breaker.failure_rate(0.0) == 2 / 7


def test_opens_at_the_failure_rate_judged_after_a_success_too() -> None:
    breaker = opened()
    assert breaker.stats.opened == 1


def test_old_failures_fall_out_of_the_window() -> None:
    breaker = CircuitBreaker(SETTINGS)
    for _ in range(3):
        assert call(breaker, False, 0.0)
    assert call(breaker, True, 11.0)  # the three failures are more than 10 s old
    assert breaker.state is State.CLOSED
    assert breaker.window.total == 1


def test_open_rejects_until_the_cool_down_then_lets_probes_through() -> None:
    breaker = opened(now=100.0)
    assert breaker.allow(129.9) is None
    assert breaker.retry_after(120.0) == 10.0
    assert breaker.current(129.9) is State.OPEN
    assert breaker.current(130.0) is State.HALF_OPEN
    first, second = breaker.allow(130.0), breaker.allow(130.0)
    assert first is not None and second is not None
    assert breaker.allow(130.0) is None  # both probes taken
    assert breaker.stats.rejected == 2


def test_half_open_closes_when_every_probe_succeeds() -> None:
    breaker = opened()
    assert call(breaker, True, 30.0)
    assert breaker.state is State.HALF_OPEN
    assert call(breaker, True, 30.0)
    assert breaker.state is State.CLOSED
    assert breaker.window.total == 0  # a fresh window


def test_a_failed_probe_opens_again_with_a_fresh_cool_down() -> None:
    breaker = opened()
    assert call(breaker, True, 30.0)
    assert call(breaker, False, 31.0)
    assert breaker.state is State.OPEN
    assert breaker.allow(60.0) is None  # 30 s from the reopening, not from the first open
    assert breaker.allow(61.0) is not None
    assert breaker.stats.opened == 2


def test_an_outcome_from_an_earlier_state_is_ignored() -> None:
    breaker = CircuitBreaker(SETTINGS)
    slow = breaker.allow(0.0)  # a call started while closed ...
    assert slow is not None
    for success in (False, False, True, True):
        call(breaker, success, 0.0)
    probe = breaker.allow(30.0)
    assert probe is not None and breaker.state is State.HALF_OPEN
    breaker.record(slow, False, 30.0)  # ... ends while half-open: not a probe's failure
    assert breaker.state is State.HALF_OPEN
    breaker.record(probe, True, 30.0)
    assert call(breaker, True, 30.0)
    assert breaker.state is State.CLOSED


def test_a_cancelled_probe_frees_its_slot() -> None:
    breaker = opened()
    first, second = breaker.allow(30.0), breaker.allow(30.0)
    assert first is not None and second is not None and breaker.allow(30.0) is None
    breaker.cancel(first)
    assert breaker.allow(30.0) is not None
