"""Backoff and circuit breaker, on a controlled clock and random source."""

from __future__ import annotations

from gateway.delivery.retry_policy import Backoff, CircuitBreaker


def test_backoff_doubles_with_jitter_and_caps() -> None:
    backoff = Backoff(initial_seconds=1.0, max_seconds=10.0)
    assert [backoff.delay(n, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 10, 10]
    assert [backoff.delay(n, rng=lambda: 0.0) for n in (1, 2, 3)] == [0.5, 1, 2]


def test_backoff_never_undercuts_a_server_hint() -> None:
    assert Backoff(1.0, 100.0).delay(1, hint=30.0, rng=lambda: 0.5) == 30.0


def test_breaker_opens_probes_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=5.0, clock=lambda: now[0])
    for _ in range(2):
        breaker.failure()
    assert breaker.allowed(4) == 4
    breaker.failure()
    assert (breaker.state, breaker.allowed(4)) == ("open", 0)
    now[0] = 5.0
    assert (breaker.state, breaker.allowed(4)) == ("half-open", 1)
    breaker.failure()  # the probe failed: open again for twice as long
    now[0] = 14.0
    assert breaker.state == "open"
    now[0] = 15.0
    assert breaker.state == "half-open"
    breaker.success()
    assert (breaker.state, breaker.allowed(4)) == ("closed", 4)


def test_backoff_survives_endless_attempts_and_caps_hints() -> None:
    backoff = Backoff(initial_seconds=1.0, max_seconds=300.0)
    assert backoff.delay(5000, rng=lambda: 1.0) == 300.0
    assert backoff.delay(1, hint=999_999_999.0, rng=lambda: 0.0) == 300.0
