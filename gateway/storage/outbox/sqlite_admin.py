"""The SQLite outbox's operator face: counts, dead letters, replay and purge.

The queries an operator asks (the console, `/metrics`, the CLI beside a running gateway), apart
from the queue the hot path uses; they go through the same single writer as the queue.
"""

from __future__ import annotations

import abc
import functools
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.core.event import Destination, Event
from gateway.storage.outbox.base import (
    DeadLetter,
    OutboxAdmin,
    OutboxCounts,
    PixelCounts,
    Stored,
)
from gateway.storage.outbox.sqlite_migration import IN_FLIGHT
from gateway.storage.outbox.sqlite_writer import GroupCommitWriter


class SqliteAdmin(OutboxAdmin):
    """`OutboxAdmin` over the outbox file's writer, which the outbox provides as `_db`."""

    @property
    @abc.abstractmethod
    def _db(self) -> GroupCommitWriter: ...

    async def counts(self, now: float) -> OutboxCounts:
        def read(conn: sqlite3.Connection) -> OutboxCounts:
            counts = OutboxCounts()
            rows = conn.execute(
                f"SELECT pixel, {_STATE}, attempts > 0, COUNT(*), MIN(created) FROM events "
                "GROUP BY 1, 2, 3"
            ).fetchall()
            for pixel, state, retried, number, oldest in rows:
                per = counts.pixels.setdefault(pixel, PixelCounts())
                kind = "in_flight" if state == IN_FLIGHT else "retrying" if retried else "pending"
                _count(counts, per, kind, number, now - oldest)
            for pixel, number in conn.execute(
                "SELECT pixel, COUNT(*) FROM dead_letters GROUP BY pixel"
            ):
                counts.pixels.setdefault(pixel, PixelCounts()).dead = number
                counts.dead += number
            return counts

        return await self._db.read(read)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def read(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT id, source, pixel, test_code, data, code, reason, dead_at, attempts, "
                "request_id FROM dead_letters ORDER BY dead_at DESC LIMIT ?",
                (limit,),
            ).fetchall()

        rows = await self._db.read(read)
        return [
            DeadLetter(
                str(i),
                Event.from_tiktok(Destination(source, pixel, test), orjson.loads(data)),
                code,
                reason,
                dead_at,
                attempts,
                request_id,
            )
            for i, source, pixel, test, data, code, reason, dead_at, attempts, request_id in rows
        ]

    async def find(self, wanted: str, limit: int = 50) -> list[Stored]:
        found: list[Stored] = []
        for table in ("events", "dead_letters"):
            high: int | None = None
            while len(found) < limit:
                page = await self._db.read(functools.partial(_find_page, table, wanted, high))
                found.extend(page.rows)
                if page.lowest is None:
                    break
                high = page.lowest
        return found[:limit]

    async def replay(
        self, pixel: str | None = None, code: int | None = None, *, dry_run: bool = False
    ) -> int:
        where, params = _dead_filter(pixel, code)
        now = time.time()
        if dry_run:
            return await self._count_dead(where, params)

        def move(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO events (id, pixel, source, test_code, event, event_id, event_time, "
                "data, created, due) SELECT id, pixel, source, test_code, event, event_id, "
                "event_time, data, created, ? "
                f"FROM dead_letters {where}",
                (now, *params),
            )
            conn.execute(f"DELETE FROM dead_letters {where}", params)
            return cursor.rowcount

        return await self._db.transaction(move)

    async def purge_dead(self, older_than: float, *, dry_run: bool = False) -> int:
        if dry_run:
            return await self._count_dead("WHERE dead_at < ?", (older_than,))
        return await self._db.statement(
            lambda conn: (
                conn.execute("DELETE FROM dead_letters WHERE dead_at < ?", (older_than,)).rowcount
            )
        )

    async def _count_dead(self, where: str, params: tuple[Any, ...]) -> int:
        def read(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute(f"SELECT COUNT(*) FROM dead_letters {where}", params).fetchone()[0]
            )

        return await self._db.read(read)


_PAGE = 2000
_STATE = f"iif(state = {IN_FLIGHT} OR id IN (SELECT id FROM leases), {IN_FLIGHT}, state)"
"""An event's state: leased in place (a retry) or in `leases` (a fresh event)."""
_COLUMNS = {
    "events": f"source, pixel, test_code, data, {_STATE}, attempts, created, last_error, NULL, "
    "NULL",
    "dead_letters": "source, pixel, test_code, data, NULL, attempts, dead_at, reason, code, "
    "request_id",
}


@dataclass
class _Page:
    rows: list[Stored]
    lowest: int | None
    """The lowest id read (the next page reads below it); None: the table is read."""


def _find_page(table: str, wanted: str, high: int | None, conn: sqlite3.Connection) -> _Page:
    """One page of `table` below id `high`: its rows whose event_id or order_id match."""
    page = f"SELECT * FROM {table} WHERE id < ? ORDER BY id DESC LIMIT {_PAGE}"
    below = high if high is not None else 2**62
    lowest, number = conn.execute(f"SELECT MIN(id), COUNT(*) FROM ({page})", (below,)).fetchone()
    rows = conn.execute(
        f"SELECT {_COLUMNS[table]} FROM ({page}) WHERE event_id = ? "
        "OR CAST(data ->> '$.properties.order_id' AS TEXT) = ? ORDER BY id DESC",
        (below, wanted, wanted),
    ).fetchall()
    found = []
    for source, pixel, test, data, state, attempts, at, reason, code, rid in rows:
        event = Event.from_tiktok(Destination(source, pixel, test), orjson.loads(data))
        where = "in_flight" if state == IN_FLIGHT else "retrying" if attempts else "pending"
        where = "dead_lettered" if state is None else where
        found.append(Stored(where, event, attempts, at, reason or "", code, rid))
    return _Page(found, lowest if number == _PAGE else None)


def _count(counts: OutboxCounts, per: PixelCounts, kind: str, number: int, age: float) -> None:
    setattr(per, kind, getattr(per, kind) + number)
    setattr(counts, kind, getattr(counts, kind) + number)
    per.oldest_age_seconds = max(per.oldest_age_seconds or 0.0, age)
    counts.oldest_age_seconds = max(counts.oldest_age_seconds or 0.0, age)


def _dead_filter(pixel: str | None, code: int | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if pixel is not None:
        clauses.append("pixel = ?")
        params.append(pixel)
    if code is not None:
        clauses.append("code = ?")
        params.append(code)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
