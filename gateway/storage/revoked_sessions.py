"""Console sessions ended by a logout, kept in the outbox's backend so every replica refuses them.

A session cookie stays validly signed until it expires; logging out records its session id
(as a SHA-256) until then — a SQLite table written by the outbox's writer, or a Redis key
with that TTL. A check is a dict lookup on the replica that revoked (at once) and on any
replica that asked the backend within `fresh_seconds` (default 1 s: how long another replica
may still accept a cookie revoked elsewhere); otherwise one read. A backend that cannot
answer raises `OutboxUnavailable`: a session is never accepted unchecked.
Why: docs/design/console-sessions.md.
"""

from __future__ import annotations

import abc
import hashlib
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from gateway.core.errors import OutboxUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS console_revoked (
    sid TEXT PRIMARY KEY,
    expires REAL NOT NULL
);
"""
FRESH_SECONDS = 1.0
_MAX_REMEMBERED = 1024


class RevokedSessions:
    """The revoked sessions of the console: written through, negative answers cached briefly."""

    def __init__(
        self,
        store: RevokedStore,
        *,
        fresh_seconds: float = FRESH_SECONDS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.fresh_seconds = fresh_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._revoked: dict[str, float] = {}  # digest → when its cookie expires (wall clock)
        self._valid: dict[str, float] = {}  # digest → when the backend last said "not revoked"

    async def open(self) -> None:
        await self.store.prepare()

    async def revoke(self, sid: str, until: float) -> None:
        """Refuse `sid` from now on, everywhere, until `until` (when its cookie expires): here
        at once, even when the backend cannot be written (then `OutboxUnavailable`)."""
        digest = _digest(sid)
        now = self._clock()
        if len(self._revoked) >= _MAX_REMEMBERED:
            self._revoked = {d: t for d, t in self._revoked.items() if t > now}
        self._revoked[digest] = until
        self._valid.pop(digest, None)
        if until > now:
            await self.store.add(digest, until, now)

    async def revoked(self, sid: str) -> bool:
        """Whether `sid` was logged out (here, or anywhere more than `fresh_seconds` ago)."""
        digest = _digest(sid)
        if digest in self._revoked:
            return True
        checked = self._valid.get(digest)
        now = self._monotonic()
        if checked is not None and now - checked < self.fresh_seconds:
            return False
        until = await self.store.until(digest, self._clock())
        if until is not None:
            self._revoked[digest] = until
            self._valid.pop(digest, None)
            return True
        if len(self._valid) >= _MAX_REMEMBERED:
            self._valid.clear()
        self._valid[digest] = now
        return False


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class RevokedStore(abc.ABC):
    @abc.abstractmethod
    async def prepare(self) -> None: ...

    @abc.abstractmethod
    async def add(self, digest: str, until: float, now: float) -> None:
        """Keep `digest` until `until`; raise `OutboxUnavailable` when it cannot be written."""

    @abc.abstractmethod
    async def until(self, digest: str, now: float) -> float | None:
        """When `digest`'s record expires, or None: not revoked (`OutboxUnavailable`: unknown)."""


class SqliteRevoked(RevokedStore):
    """A table in the outbox's file, written by its writer thread (expired rows go as one is
    added: a logout is rare)."""

    def __init__(self, writer: Callable[[], Any]) -> None:
        """`writer`: a callable giving the open outbox's `GroupCommitWriter`."""
        self._writer_of = writer

    async def prepare(self) -> None:
        await self._writer_of().statement(lambda conn: conn.executescript(SCHEMA))

    async def add(self, digest: str, until: float, now: float) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM console_revoked WHERE expires <= ?", (now,))
            conn.execute(
                "INSERT INTO console_revoked (sid, expires) VALUES (?, ?) ON CONFLICT (sid) "
                "DO UPDATE SET expires = max(expires, excluded.expires)",
                (digest, until),
            )

        await self._writer_of().transaction(write)

    async def until(self, digest: str, now: float) -> float | None:
        def read(conn: sqlite3.Connection) -> Any:
            return conn.execute(
                "SELECT expires FROM console_revoked WHERE sid = ? AND expires > ?",
                (digest, now),
            ).fetchone()

        row = await self._writer_of().read(read)
        return None if row is None else float(row[0])


class RedisRevoked(RevokedStore):
    """A key per revoked session, which Redis expires when the cookie would have."""

    def __init__(self, client: Any, prefix: str = "tiktok-gateway") -> None:
        """`client`: made with `decode_responses=True`, owned (and closed) by the backend."""
        self._redis = client
        self._prefix = f"{prefix}:console:revoked:"

    async def prepare(self) -> None:
        """Nothing to create: a key appears with a logout."""

    async def add(self, digest: str, until: float, now: float) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.set(
                self._prefix + digest, repr(until), px=max(1, int((until - now) * 1000))
            )
        except (RedisError, OSError) as exc:
            raise OutboxUnavailable(f"redis revoked sessions: {exc}") from None

    async def until(self, digest: str, now: float) -> float | None:
        from redis.exceptions import RedisError

        try:
            stored = await self._redis.get(self._prefix + digest)
        except (RedisError, OSError) as exc:  # as the outbox says it: the console answers 503
            raise OutboxUnavailable(f"redis revoked sessions: {exc}") from None
        return None if stored is None else float(stored)
