"""Per-client rate limits: a token bucket per client IP and endpoint, shared by replicas
through Redis when the outbox is Redis.

Each endpoint strangers can reach has a `Budget` (`[rate_limit]`: a rate and a burst), kept
as GCRA does it (one number per client): a check is a dict lookup and a refusal says when to
come back (`Retry-After`). An IPv6 client is its /64 by default. With replicas a Lua script
in Redis enforces the budget across all; the local bucket runs first, and decides alone when
Redis cannot answer (fail open to the local limit). Why: docs/design/rate-limits.md.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from gateway.core.errors import TooManyRequests
from gateway.settings import RateLimitSettings

log = logging.getLogger(__name__)

# KEYS[1] the client's key; ARGV: interval (seconds per request), burst. Returns "0" when
# admitted, else the seconds until the next request would be.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local over = next_tat - now - burst * interval
if over > 0 then return tostring(over) end
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil((next_tat - now) * 1000) + 1)
return '0'
"""
# KEYS[1] the client's key; ARGV: interval, burst. The same arithmetic without counting: "0"
# when a request would be admitted now, else the seconds to wait (a GET and no write).
PEEK_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local over = tat + tonumber(ARGV[1]) - now - tonumber(ARGV[2]) * tonumber(ARGV[1])
if over > 0 then return tostring(over) end
return '0'
"""


@dataclass(frozen=True)
class Budget:
    """A sustained rate and how many requests may come at once; a rate of 0 is no limit."""

    per_second: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second


def client_key(ip: str | None, ipv6_prefix: int = 64) -> str:
    """What a client is counted as: its IPv4 address, or the /`ipv6_prefix` of its IPv6."""
    if not ip:
        return "-"
    if ":" not in ip:
        return ip
    try:
        network = ipaddress.IPv6Network(f"{ip}/{ipv6_prefix}", strict=False)
    except ValueError:
        return ip
    return str(network)


class LocalBuckets:
    """The buckets of one process: one theoretical arrival time per client.

    Bounded: past `max_clients`, clients whose bucket is full again (nothing to remember)
    are forgotten; if a flood from that many addresses keeps them all busy, the oldest
    half is forgotten — they start again with a full burst, which only softens the limit.
    """

    def __init__(
        self,
        budget: Budget,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = budget.interval
        self._window = budget.burst * budget.interval
        self._max_clients = max_clients
        self._clock = clock
        self._arrivals: dict[str, float] = {}
        self._latest = 0.0  # the latest arrival remembered: past it, every bucket is full

    def wait(self, client: str) -> float:
        """0 when `client` may go ahead now (and counts it), else the seconds to wait."""
        now = self._clock()
        arrival = self._arrivals.get(client, now)
        if arrival < now:
            arrival = now
        following = arrival + self._interval
        over = following - now - self._window
        if over > 0:
            return over
        if len(self._arrivals) >= self._max_clients and client not in self._arrivals:
            self._forget(now)
        self._arrivals[client] = following
        if following > self._latest:
            self._latest = following
        return 0.0

    def peek(self, client: str) -> float:
        """What `wait` would answer, without counting: 0 for a client it knows nothing of
        (one dict lookup). A client whose bucket is full again is forgotten here."""
        arrival = self._arrivals.get(client)
        if arrival is None:
            return 0.0
        now = self._clock()
        if arrival <= now:
            del self._arrivals[client]
            return 0.0
        return max(0.0, arrival + self._interval - now - self._window)

    def hold(self, client: str, seconds: float) -> None:
        """Make `client` wait at least `seconds` more, as another replica counted it (Redis)."""
        now = self._clock()
        arrival = now + seconds + self._window - self._interval
        if arrival > self._arrivals.get(client, now):
            if len(self._arrivals) >= self._max_clients and client not in self._arrivals:
                self._forget(now)
            self._arrivals[client] = arrival
            self._latest = max(self._latest, arrival)

    def any_waiting(self) -> bool:
        """Whether any client's bucket may be short: if none, nobody need be looked up.
        Once every bucket is full again, all are forgotten at once."""
        if not self._arrivals:
            return False
        if self._latest <= self._clock():
            self._arrivals.clear()
            return False
        return True

    def __contains__(self, client: str) -> bool:
        return client in self._arrivals

    def _forget(self, now: float) -> None:
        self._arrivals = {c: t for c, t in self._arrivals.items() if t > now}
        if len(self._arrivals) >= self._max_clients:
            keep = list(self._arrivals.items())[len(self._arrivals) // 2 :]
            self._arrivals = dict(keep)

    def __len__(self) -> int:
        return len(self._arrivals)


class SharedBuckets:
    """The same buckets in Redis, for every replica (see the module docstring)."""

    def __init__(self, client: Any, budget: Budget, prefix: str) -> None:
        self._script = client.register_script(GCRA_SCRIPT)
        self._peek = client.register_script(PEEK_SCRIPT)
        self._args = (repr(budget.interval), str(budget.burst))
        self._prefix = prefix

    async def wait(self, client: str) -> float | None:
        """Like `LocalBuckets.wait`; None when Redis could not answer."""
        return await self._ask(self._script, client)

    async def peek(self, client: str) -> float | None:
        """Like `LocalBuckets.peek` (a GET and arithmetic); None when Redis could not answer."""
        return await self._ask(self._peek, client)

    async def _ask(self, script: Any, client: str) -> float | None:
        try:
            answer = await script(keys=[f"{self._prefix}{client}"], args=self._args)
        except Exception as exc:  # any Redis failure: the local limit decides alone
            log.debug("shared rate limit unavailable: %s", type(exc).__name__)
            return None
        return float(answer)


class RateLimit:
    """One endpoint's limit: refuses a client over its budget with `TooManyRequests`."""

    def __init__(
        self,
        name: str,
        budget: Budget,
        *,
        on_refused: Callable[[], None],
        ipv6_prefix: int = 64,
        max_clients: int = 100_000,
        shared: SharedBuckets | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.enabled = budget.enabled
        self._local = (
            LocalBuckets(budget, max_clients=max_clients, clock=clock) if budget.enabled else None
        )
        self._shared = shared if budget.enabled else None
        self._ipv6_prefix = ipv6_prefix
        self._on_refused = on_refused

    def admit_here(self, ip: str | None) -> bool:
        """`admit` without a coroutine where this process alone decides: True when the
        client may go ahead (counted), `TooManyRequests` when it may not; False when the
        budget is shared between replicas and `admit` must be awaited (the beacon's path:
        a coroutine per request is measurable there)."""
        if self._local is None:
            return True
        if self._shared is not None:
            return False
        wait = self._local.wait(client_key(ip, self._ipv6_prefix))
        if wait:
            self._refuse(wait)
        return True

    async def admit(self, ip: str | None) -> None:
        """Return when the client may go ahead; raise `TooManyRequests` when it may not."""
        if self._local is None:
            return
        client = client_key(ip, self._ipv6_prefix)
        wait = self._local.wait(client)
        if not wait and self._shared is not None:
            wait = await self._shared.wait(client) or 0.0
        if wait:
            self._refuse(wait)

    def _refuse(self, wait: float) -> NoReturn:
        self._on_refused()
        raise TooManyRequests(f"too many requests from this address to {self.name}", wait)


class RateLimits:
    """The limit of each endpoint strangers can reach, built once from `[rate_limit]`."""

    def __init__(
        self,
        settings: RateLimitSettings,
        *,
        on_refused: Callable[[str], None],
        redis: Any = None,
        prefix: str = "tiktok-gateway:rate:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`redis` shares the buckets between replicas: the storage backend's client for
        them (`shared_buckets()`, short timeouts), which the backend closes."""
        self._settings = settings
        self._on_refused = on_refused
        self._prefix = prefix
        self._clock = clock
        self._redis = redis
        self.beacon = self.limit("beacon", settings.beacon_per_second, settings.beacon_burst)
        self.server_api = self.limit(
            "server_api", settings.server_api_per_second, settings.server_api_burst
        )
        self.postback = self.limit(
            "postback", settings.postback_per_second, settings.postback_burst
        )

    @property
    def clock(self) -> Callable[[], float]:
        """The clock every bucket here keeps time by (a monotonic one)."""
        return self._clock

    def limit(self, name: str, per_second: float, burst: int) -> RateLimit:
        budget = Budget(per_second, burst)
        return RateLimit(
            name,
            budget,
            on_refused=lambda: self._on_refused(name),
            ipv6_prefix=self._settings.ipv6_prefix,
            max_clients=self._settings.max_clients,
            shared=self.shared(name, budget),
            clock=self._clock,
        )

    def shared(self, name: str, budget: Budget) -> SharedBuckets | None:
        """`name`'s buckets in Redis, when replicas share them (and the budget is a limit)."""
        if self._redis is None or not budget.enabled:
            return None
        return SharedBuckets(self._redis, budget, f"{self._prefix}{name}:")
