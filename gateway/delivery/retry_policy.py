"""When to try again: exponential backoff with jitter, and a circuit breaker.

Backoff spreads retries of many events so a recovering upstream is not hit by one wave; the
breaker stops sending altogether after repeated transient failures, then lets one probe
request through, so a dead upstream costs one request per cool-down instead of a storm.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    initial_seconds: float = 1.0
    max_seconds: float = 300.0

    def delay(
        self, attempts: int, hint: float | None = None, rng: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait before the next try after `attempts` failed tries (≥ 1).

        Equal jitter: half the exponential step is fixed, half random. A server's own hint
        (Retry-After) is a floor, up to `max_seconds`.
        """
        exponent = min(max(0, attempts - 1), 64)  # 2**64 steps is already past any maximum
        step = min(self.max_seconds, self.initial_seconds * 2.0**exponent)
        jittered = step / 2 + step / 2 * rng()
        # a server hint is honoured, but never beyond our own maximum wait
        return max(jittered, min(hint or 0.0, self.max_seconds))


class CircuitBreaker:
    """Closed → (N transient failures in a row) → open → (cool-down) → half-open → one probe."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_seconds: float = 5.0,
        max_cooldown_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failure_threshold
        self._base_cooldown = cooldown_seconds
        self._max_cooldown = max_cooldown_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._cooldown = cooldown_seconds

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() >= self._opened_at + self._cooldown else "open"

    def allowed(self, concurrency: int) -> int:
        """How many requests may be in flight now: all, one probe, or none."""
        state = self.state
        return concurrency if state == "closed" else 1 if state == "half-open" else 0

    def seconds_until_probe(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._cooldown = self._base_cooldown

    def failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None:
            if self.state == "half-open":  # the probe failed: open again, for longer
                self._cooldown = min(self._max_cooldown, self._cooldown * 2)
                self._opened_at = self._clock()
        elif self._failures >= self._threshold:
            self._opened_at = self._clock()
