"""A budget of failed authentications per client, for the endpoints that take a key.

The server API, the relay, imports and postbacks take API keys, pixel tokens or source
secrets, and their request rate limits are off or generous by default (backends send in
bursts), so without this a stranger could guess keys without end. Only failures count (a
missing or wrong credential), one budget across those endpoints (`[rate_limit]
failed_auth_per_minute`, a burst of `failed_auth_burst`): once a client is over it, every
request it sends there is refused (429, `Retry-After`) before any credential is compared —
the right key too, or a refusal would tell a right guess from a wrong one — until the
budget refills.

A request that authenticates pays one check that no client's budget is short (an empty
dict, the usual case), else its client is found and looked up in that dict; nothing is
counted for it. With replicas (a Redis outbox) failures are counted in Redis too, so the
budget is theirs together; a replica asks Redis (a GET) only about clients that failed
there recently, since asking about every request would put a round trip on the hot path.
A replica where a client has not failed yet compares that client's next key: the failure
it counts there learns of the others' count and locks the client out there too — at most
one guess per replica beyond the budget. When Redis cannot answer, the local bucket
decides alone (fail open to the local limit), as for the request limits.
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
