"""A budget of failed authentications per client, for the endpoints that take a key.

Only failures count (a missing or wrong credential), in one budget across the server API,
the relay, imports and postbacks (`[rate_limit] failed_auth_per_minute`, `failed_auth_burst`).
A client over it is refused (429, `Retry-After`) before any credential is compared, the right
one too, until the budget refills. A request that authenticates pays one look at an (usually
empty) dict. With Redis the replicas share the count, at most one guess per replica beyond
it; when Redis cannot answer the local bucket decides. Why: docs/design/failed-auth-lockout.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.core.errors import TooManyRequests
from gateway.http.rate_limit import Budget, LocalBuckets, RateLimits, SharedBuckets, client_key
from gateway.settings import RateLimitSettings

_REFUSED = "too many failed authentications from this address; wait"


class FailedAuthLimit:
    """Refuses a client that failed authentication too often; counts only the failures."""

    def __init__(
        self,
        budget: Budget,
        *,
        on_refused: Callable[[], None],
        on_failed: Callable[[str], None] = lambda endpoint: None,
        ipv6_prefix: int = 64,
        max_clients: int = 100_000,
        shared: SharedBuckets | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`on_refused` counts refusals of a locked-out client, `on_failed` each failure
        by endpoint (for /metrics)."""
        self.enabled = budget.enabled
        self._local = (
            LocalBuckets(budget, max_clients=max_clients, clock=clock) if budget.enabled else None
        )
        self._shared = shared if budget.enabled else None
        self._ipv6_prefix = ipv6_prefix
        self._on_refused = on_refused
        self._on_failed = on_failed

    @classmethod
    def of(
        cls,
        settings: RateLimitSettings,
        limits: RateLimits,
        *,
        on_refused: Callable[[], None],
        on_failed: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> FailedAuthLimit:
        """From `[rate_limit]`, shared through `limits`' Redis when replicas share theirs."""
        budget = Budget(settings.failed_auth_per_minute / 60.0, settings.failed_auth_burst)
        return cls(
            budget,
            on_refused=on_refused,
            on_failed=on_failed,
            ipv6_prefix=settings.ipv6_prefix,
            max_clients=settings.max_clients,
            shared=limits.shared("failed_auth", budget),
            clock=clock,
        )

    @property
    def watching(self) -> bool:
        """Whether any client failed recently here: if none, no client need be looked up."""
        return self._local is not None and self._local.any_waiting()

    async def check(self, ip: str | None) -> None:
        """Raise `TooManyRequests` when the client is over its budget; count nothing."""
        local = self._local
        if local is None or not local.any_waiting():
            return
        client = client_key(ip, self._ipv6_prefix)
        wait = local.peek(client)
        if not wait and self._shared is not None and client in local:
            wait = await self._shared.peek(client) or 0.0
        if wait:
            self._on_refused()
            raise TooManyRequests(_REFUSED, wait)

    async def failed(self, ip: str | None, endpoint: str) -> None:
        """Count one failed authentication; raise `TooManyRequests` when it was one too many
        (replicas together: a budget this replica did not see run out)."""
        self._on_failed(endpoint)
        if self._local is None:
            return
        client = client_key(ip, self._ipv6_prefix)
        wait = self._local.wait(client)
        if not wait and self._shared is not None:
            wait = await self._shared.wait(client) or 0.0
            if wait:
                self._local.hold(client, wait)  # later requests are refused without Redis
        if wait:
            self._on_refused()
            raise TooManyRequests(_REFUSED, wait)
