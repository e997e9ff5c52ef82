"""The postback log: the last postbacks of each source and what each became.

Each entry keeps the rules fired with their event ids, the others' reasons and how the click
id stood (given, from the lead context, expired, malformed or missing): a lead system losing
its click ids is the commonest cause of zero attributed conversions. It lives in the outbox's
backend (a SQLite table, a Redis list per source), bounded per source, identifiers hashed.
Entries are queued (the last `size` of a source: older ones would be trimmed at once) and
written by one task at most once a second, so a postback never waits for its line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from gateway.core.errors import OutboxUnavailable
from gateway.core.normalize import hash_email, hash_external_id, hash_phone
from gateway.privacy.redact import redact_text
from gateway.privacy.scrub import ScanBudget
from gateway.privacy.scrubbing import EVENT_BUDGET

log = logging.getLogger(__name__)
_HASHED: dict[str, Callable[[str], str | None]] = {
    "email": hash_email,
    "phone": lambda v: hash_phone(v, "US"),
    "external_id": hash_external_id,
    "first_name": hash_external_id,
    "last_name": hash_external_id,
}
SCHEMA = """
CREATE TABLE IF NOT EXISTS postback_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS postback_log_source ON postback_log (source, id);
"""
_INSERT = "INSERT INTO postback_log (source, entry) SELECT ?, value FROM json_each(?)"
_TRIM = (
    "DELETE FROM postback_log WHERE source = ? AND id <= (SELECT id FROM postback_log "
    "WHERE source = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)


NOT_KEPT = "(not kept)"
Entry = dict[str, Any] | Callable[[], dict[str, Any]]
"""A log entry, or what builds it once it is written."""


def loggable(
    fields: Mapping[str, str],
    identifiers: Iterable[str] = (),
    read: Iterable[str] | None = None,
) -> dict[str, str]:
    """The postback's fields as the log keeps them: identifiers hashed — email, phone and
    the like, and `identifiers`, the fields the rules send as one (a lead id); fields the
    configuration reads (`read`; None: all) with emails and phone numbers scrubbed; any
    other field by its name only, as a sender's free fields (a customer's name) may be
    personal data no scrubber recognises."""
    hashed = frozenset(identifiers)
    readable = None if read is None else frozenset(read)
    budget = ScanBudget(EVENT_BUDGET)
    kept = {}
    for name, value in fields.items():
        hashing = _HASHED.get(name) or (hash_external_id if name in hashed else None)
        if hashing is not None:
            if value:
                kept[name] = hashing(value) or "(unreadable)"
        elif readable is not None and name not in readable:
            kept[name] = NOT_KEPT
        else:
            kept[name] = redact_text(value[:256], national=True, budget=budget)
    return kept


class PostbackLog:
    """Queues entries and writes them in batches to the backend (`SqliteLog`, `RedisLog`)."""

    def __init__(self, backend: LogBackend, size: int, *, interval: float = 1.0) -> None:
        self.backend = backend
        self.size = size
        self.interval = interval
        self._stopped = asyncio.Event()
        self._queued: dict[str, deque[Entry]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def open(self) -> None:
        if self.size:
            await self.backend.prepare()
            self._task = asyncio.create_task(self._run(), name="postback-log")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, 10)
        await self._write()

    def record(self, source: str, entry: Entry) -> None:
        """Queue an entry, or what builds it when it is written (only the last `size` of a
        busy second are: the rest are never built)."""
        if self._task is not None:
            queued = self._queued.get(source)
            if queued is None:  # the last `size` only: the table keeps no more of a source
                queued = self._queued[source] = deque(maxlen=self.size)
            queued.append(entry)
            self._wake.set()

    async def flush(self) -> None:
        await self._write()

    async def _run(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            await self._write()
            # at most one write a second: each is a commit (an fsync with synchronous=FULL)
            # beside the events' own, and an operator's log can wait a second
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.interval)

    async def _write(self) -> None:
        queued, self._queued = self._queued, {}
        if not queued:
            return
        try:
            batch = [
                (source, entry() if callable(entry) else entry)
                for source, entries in queued.items()
                for entry in entries
            ]
            await self.backend.append(batch, self.size)
        except Exception as exc:  # the log is an aid: postbacks go on without it
            log.warning("postback log not written: %s", type(exc).__name__)


class LogBackend:
    async def prepare(self) -> None:
        raise NotImplementedError

    async def append(self, batch: list[tuple[str, dict[str, Any]]], size: int) -> None:
        raise NotImplementedError

    async def last(self, source: str, count: int) -> list[dict[str, Any]]:
        raise NotImplementedError


class SqliteLog(LogBackend):
    def __init__(self, writer: Callable[[], Any]) -> None:
        self._writer_of = writer

    async def prepare(self) -> None:
        await self._writer_of().statement(lambda conn: conn.executescript(SCHEMA))

    async def append(self, batch: list[tuple[str, dict[str, Any]]], size: int) -> None:
        """Per source two statements, each one step of the writer: its entries inserted
        from one JSON array serialised here (on the loop, not in the writer thread), then
        the source trimmed to its last `size`. Row by row in one transaction, a batch held
        the file's write lock through a GIL hand-back per row, and every event waited."""
        by_source: dict[str, list[dict[str, Any]]] = {}
        for source, entry in batch:
            by_source.setdefault(source, []).append(entry)
        writer = self._writer_of()
        for source, entries in by_source.items():
            rows = orjson.dumps(entries).decode()
            await writer.statement(functools.partial(_run, _INSERT, (source, rows)))
            await writer.statement(functools.partial(_run, _TRIM, (source, source, size)))

    async def last(self, source: str, count: int) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT entry FROM postback_log WHERE source = ? ORDER BY id DESC LIMIT ?",
                (source, count),
            ).fetchall()

        rows = await self._writer_of().read(read)
        return [orjson.loads(entry) for (entry,) in reversed(rows)]


def _run(sql: str, parameters: tuple[Any, ...], conn: sqlite3.Connection) -> None:
    conn.execute(sql, parameters)


class RedisLog(LogBackend):
    def __init__(self, client: Any, prefix: str = "tiktok-gateway") -> None:
        """`client`: owned (and closed) by the storage backend."""
        self._redis = client
        self._prefix = f"{prefix}:postbacks:"

    async def prepare(self) -> None:
        """Nothing to create: a list appears with its first entry."""

    async def append(self, batch: list[tuple[str, dict[str, Any]]], size: int) -> None:
        by_source: dict[str, list[bytes]] = {}
        for source, entry in batch:
            by_source.setdefault(source, []).append(orjson.dumps(entry))
        async with self._redis.pipeline(transaction=False) as pipe:
            for source, entries in by_source.items():  # the last pushed is the newest
                pipe.lpush(self._prefix + source, *entries)
                pipe.ltrim(self._prefix + source, 0, size - 1)
            await pipe.execute()

    async def last(self, source: str, count: int) -> list[dict[str, Any]]:
        from redis.exceptions import RedisError

        try:
            rows = await self._redis.lrange(self._prefix + source, 0, count - 1)
        except (RedisError, OSError) as exc:  # as the outbox says it: readers answer 503
            raise OutboxUnavailable(f"redis postback log: {exc}") from None
        return [orjson.loads(row) for row in reversed(rows)]
