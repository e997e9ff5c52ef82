"""The storage backend: one object, built once from `[outbox] url`, that owns every connection.

`open_backend` picks SQLite (one file, written by the outbox's writer thread) or Redis (a
server the replicas share) by the URL — the only place that asks which. The backend hands
out the outbox, the lead store, the postback log and the console's revoked sessions, and
with Redis the clients the rate limits, the per-minute counters and the console feed use
(None with SQLite: nothing to share). Components never build or close a Redis client:
`_redis_client` here is the one constructor, and the backend's `close()` (idempotent)
closes the outbox and every client.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.settings import OutboxSettings
from gateway.storage.leads.base import ContextStore
from gateway.storage.outbox import Outbox
from gateway.storage.outbox.sqlite_backup import BackupRefused, BackupReport, backup_file
from gateway.storage.postback_log import PostbackLog
from gateway.storage.revoked_sessions import RevokedSessions

_CLOSE_SECONDS = 5.0
"""A client whose connection went deaf must not hold the gateway's stop for ever."""


@dataclass(frozen=True)
class ConsoleFeed:
    """What the console's replica feed publishes and subscribes with: a client, and the
    database number its channels carry (pub/sub ignores the database; deployments do not)."""

    client: Any
    db: int


class Backend(abc.ABC):
    """What `open_backend` gives: the outbox and, on demand, the parts stored beside it."""

    outbox: Outbox

    @abc.abstractmethod
    def lead_store(
        self, *, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.time
    ) -> ContextStore:
        """The lead-context store (not yet open)."""

    @abc.abstractmethod
    def postback_log(self, size: int) -> PostbackLog:
        """The postback log keeping `size` entries per source (not yet open)."""

    @abc.abstractmethod
    def revoked_sessions(self) -> RevokedSessions:
        """The console sessions ended by a logout (not yet open)."""

    def shared_buckets(self) -> Any | None:
        """The client the rate limits share their buckets through, or None."""
        return None

    def shared_counters(self) -> Any | None:
        """The client the per-minute counters share their counts through, or None."""
        return None

    def console_feed(self) -> ConsoleFeed | None:
        """How the console hears the other replicas, or None (there are none)."""
        return None

    async def backup(self, target: str, *, replace: bool = False) -> BackupReport:
        """A consistent copy of the stored events at `target`, taken beside a running
        gateway; `BackupRefused` where the storage is backed up by other means."""
        raise BackupRefused("this outbox cannot be backed up by the gateway")

    async def close(self) -> None:
        """Close the outbox and every client made. Idempotent."""
        await self.outbox.close()


class SqliteBackend(Backend):
    """One file: the lead store and the postback log are tables written by the outbox's
    own writer thread (SQLite's one-writer rule, and their commits grouped with events')."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def __repr__(self) -> str:
        return f"SqliteBackend({self.outbox!r})"

    def _writer(self) -> Callable[[], Any]:
        from gateway.storage.outbox.sqlite import SqliteOutbox

        outbox = self.outbox
        if not isinstance(outbox, SqliteOutbox):
            raise TypeError(f"a SQLite outbox URL with {outbox!r}")
        return lambda: outbox.writer

    def lead_store(
        self, *, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.time
    ) -> ContextStore:
        from gateway.storage.leads.sqlite import SqliteContextStore

        return SqliteContextStore(
            self._writer(), ttl_seconds=ttl_seconds, max_entries=max_entries, clock=clock
        )

    def postback_log(self, size: int) -> PostbackLog:
        from gateway.storage.postback_log import SqliteLog

        return PostbackLog(SqliteLog(self._writer()), size)

    def revoked_sessions(self) -> RevokedSessions:
        from gateway.storage.revoked_sessions import SqliteRevoked

        return RevokedSessions(SqliteRevoked(self._writer()))

    async def backup(self, target: str, *, replace: bool = False) -> BackupReport:
        from gateway.storage.outbox.sqlite import SqliteOutbox

        outbox = self.outbox
        if not isinstance(outbox, SqliteOutbox):
            raise TypeError(f"a SQLite outbox URL with {outbox!r}")
        return await asyncio.to_thread(backup_file, outbox.path, target, replace=replace)


class RedisBackend(Backend):
    """One Redis server: a client per kind of use, made when first asked for. Uses with the
    same decoding and timeouts share a client (and its pool); the timeouts are each use's:
    5 s for storage and the console, 2 s for the counters, 1 s on the request path."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = 300.0,
        consumer: str | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._url = url
        self._clients: dict[tuple[bool, float], Any] = {}
        if outbox is None:
            from gateway.storage.outbox.redis import RedisOutbox

            storage = self._client(decode=True, timeout=5)
            outbox = RedisOutbox(storage, lease_seconds=lease_seconds, consumer=consumer)
        self.outbox = outbox

    def __repr__(self) -> str:
        return f"RedisBackend({self.outbox!r})"

    def _client(self, *, decode: bool, timeout: float) -> Any:
        key = (decode, timeout)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = _redis_client(self._url, decode, timeout)
        return client

    def lead_store(
        self, *, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.time
    ) -> ContextStore:
        from gateway.storage.leads.redis import RedisContextStore

        return RedisContextStore(
            self._client(decode=True, timeout=5),
            ttl_seconds=ttl_seconds,
            max_entries=max_entries,
            clock=clock,
        )

    def postback_log(self, size: int) -> PostbackLog:
        from gateway.storage.postback_log import RedisLog

        return PostbackLog(RedisLog(self._client(decode=False, timeout=5)), size)

    def revoked_sessions(self) -> RevokedSessions:
        from gateway.storage.revoked_sessions import RedisRevoked

        # on every console request: a slow Redis costs the page 1 s, then 503
        return RevokedSessions(RedisRevoked(self._client(decode=True, timeout=1)))

    def shared_buckets(self) -> Any:
        # on the request path: a slow Redis must cost a request little (it then fails open)
        return self._client(decode=False, timeout=1)

    def shared_counters(self) -> Any:
        return self._client(decode=False, timeout=2)

    async def backup(self, target: str, *, replace: bool = False) -> BackupReport:
        raise BackupRefused(
            "a Redis outbox is backed up by Redis itself: enable its persistence (AOF, RDB "
            "snapshots) and copy the files it writes, e.g. after `redis-cli BGSAVE`"
        )

    def console_feed(self) -> ConsoleFeed:
        from redis.asyncio.connection import parse_url

        db = int(parse_url(self._url).get("db") or 0)
        return ConsoleFeed(self._client(decode=False, timeout=5), db)

    async def close(self) -> None:
        await self.outbox.close()
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await _closed(client)


def open_backend(
    settings: OutboxSettings,
    *,
    owner: bool = True,
    consumer: str | None = None,
    outbox: Outbox | None = None,
) -> Backend:
    """The backend `settings.url` names, its outbox built but not yet open.

    `owner=False` is for processes beside the gateway that owns the outbox (operator commands,
    the delivery process): they neither take the owner's lock nor release its leases.
    `consumer` names a Redis consumer that outlives one process (see `RedisOutbox`);
    `outbox` is one built elsewhere (tests), used instead of the URL's own.
    """
    url = settings.url
    if is_redis(url):
        return RedisBackend(
            url, lease_seconds=settings.lease_seconds, consumer=consumer, outbox=outbox
        )
    if outbox is None:
        from gateway.storage.outbox.sqlite import SqliteOutbox

        outbox = SqliteOutbox(
            sqlite_path(url),
            synchronous=settings.sqlite_synchronous,
            lease_seconds=settings.lease_seconds,
            exclusive=owner,
        )
    return SqliteBackend(outbox)


def is_redis(url: str) -> bool:
    """Whether the outbox URL names a Redis server (which replicas share)."""
    return url.startswith(("redis://", "rediss://", "unix://"))


def sqlite_path(url: str) -> str:
    """`sqlite:///rel/path`, `sqlite:////abs/path` or a plain path → a file path."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if url.startswith("sqlite:"):
        return url[len("sqlite:") :]
    return url


def _redis_client(url: str, decode: bool, timeout: float) -> Any:
    """The one place a Redis client is constructed (connections open on first use)."""
    import redis.asyncio

    return redis.asyncio.Redis.from_url(
        url, decode_responses=decode, socket_timeout=timeout, socket_connect_timeout=timeout
    )


async def _closed(client: Any) -> None:
    from redis.exceptions import RedisError

    with contextlib.suppress(TimeoutError, RedisError, OSError):
        async with asyncio.timeout(_CLOSE_SECONDS):
            await client.aclose()
