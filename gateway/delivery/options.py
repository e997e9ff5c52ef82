"""What delivery is to the rest of the gateway: its options, its counters, its interface.

`serve` runs the `Dispatcher` in a child process (`DeliveryProcess`) or in the serving one;
both are a `Delivery` to the app. The options' defaults are the settings' own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.delivery.retry_policy import Backoff
from gateway.settings import DeliverySettings, Settings
from gateway.settings.model import MAX_EVENT_AGE_DAYS

_DEFAULT = DeliverySettings()


@dataclass(frozen=True)
class DeliveryOptions:
    """The dispatcher's options in the units it works in; defaults are the settings' own."""

    batch_size: int = _DEFAULT.batch_size
    linger_seconds: float = _DEFAULT.linger_ms / 1000
    concurrency: int = _DEFAULT.concurrency
    poll_seconds: float = 1.0
    shutdown_grace_seconds: float = _DEFAULT.shutdown_grace_seconds
    max_event_age_seconds: int = MAX_EVENT_AGE_DAYS * 86400
    backoff: Backoff = field(
        default_factory=lambda: Backoff(
            _DEFAULT.backoff_initial_seconds, _DEFAULT.backoff_max_seconds
        )
    )
    breaker_failures: int = _DEFAULT.breaker_failures
    breaker_cooldown_seconds: float = _DEFAULT.breaker_cooldown_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryOptions:
        d = settings.delivery
        return cls(
            batch_size=d.batch_size,
            linger_seconds=d.linger_ms / 1000,
            concurrency=d.concurrency,
            shutdown_grace_seconds=d.shutdown_grace_seconds,
            max_event_age_seconds=settings.max_event_age_days * 86400,
            backoff=Backoff(d.backoff_initial_seconds, d.backoff_max_seconds),
            breaker_failures=d.breaker_failures,
            breaker_cooldown_seconds=d.breaker_cooldown_seconds,
        )


@dataclass
class DeliveryStats:
    requests: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    isolation_requests: int = 0
    """Extra requests sent to find the refused events inside a refused request."""
    outcomes_dropped: int = 0
    """Settlements the delivery process dropped because the serving one fell behind."""
    token_refused: int = 0
    """Events dead-lettered because TikTok refused the access token or its scope."""


class Delivery(Protocol):
    """What the app needs of delivery: a `Dispatcher` here, or a `DeliveryProcess` beside."""

    @property
    def running(self) -> bool: ...

    @property
    def stats(self) -> DeliveryStats: ...

    def notify(self) -> None: ...

    async def reconfigure(self, settings: Settings) -> None:
        """Take reloaded tokens; returns once batches sent from now on use them."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
