"""The lead context in the SQLite outbox's file: one table, written by the outbox's writer.

Sharing the outbox's single writer thread keeps SQLite's one-writer rule and its group
commit: a batch of contexts is one transaction among the events' own. Entries are JSON with
an expiry and whether a backend event has found them (`joined`); the sweep deletes expired
rows and, past the bound, those never joined and expiring soonest.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.storage.leads.base import ContextStore, LeadContext
from gateway.storage.outbox.sqlite_writer import GroupCommitWriter

SCHEMA = """
CREATE TABLE IF NOT EXISTS lead_context (
    key TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    expires REAL NOT NULL,
    joined INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS lead_context_expires ON lead_context (expires);
"""
# a table of an earlier release has no `joined` column: added (every entry not joined yet)
_ADD_JOINED = "ALTER TABLE lead_context ADD COLUMN joined INTEGER NOT NULL DEFAULT 0"
_EVICTION_INDEX = (
    "CREATE INDEX IF NOT EXISTS lead_context_eviction ON lead_context (joined, expires)"
)


class SqliteContextStore(ContextStore):
    def __init__(self, writer: Any, **options: Any) -> None:
        """`writer`: a callable giving the open outbox's `GroupCommitWriter`."""
        super().__init__(**options)
        self._writer_of = writer

    @property
    def _db(self) -> GroupCommitWriter:
        writer: GroupCommitWriter = self._writer_of()
        return writer

    async def _prepare(self) -> None:
        def prepare(conn: sqlite3.Connection) -> None:
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(lead_context)")}
            if "joined" not in columns:
                conn.execute(_ADD_JOINED)
            conn.execute(_EVICTION_INDEX)

        await self._db.statement(prepare)

    async def _write(self, entries: dict[str, LeadContext], now: float) -> int:
        expires = now + self.ttl

        def merge(conn: sqlite3.Connection) -> int:
            keys = orjson.dumps(list(entries)).decode()
            stored = {
                key: LeadContext.from_json(orjson.loads(data))
                for key, data in conn.execute(
                    "SELECT key, data FROM lead_context WHERE expires > ? "
                    "AND key IN (SELECT value FROM json_each(?))",
                    (now, keys),
                )
            }
            rows = []
            for key, context in entries.items():
                earlier = stored.get(key)
                written = earlier.written_over_by(context) if earlier is not None else context
                if written is not None:
                    rows.append((key, orjson.dumps(written.to_json()).decode(), expires))
            # an expired row is replaced whole: it no longer belongs to anyone
            conn.executemany(
                "INSERT INTO lead_context (key, data, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET data = excluded.data, expires = excluded.expires,"
                " joined = CASE WHEN lead_context.expires > ? THEN lead_context.joined ELSE 0 END",
                [(*row, now) for row in rows],
            )
            return len(entries) - len(rows)

        return await self._db.transaction(merge)

    async def _mark_joined(self, keys: Sequence[str]) -> None:
        listed = orjson.dumps(list(keys)).decode()

        def mark(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE lead_context SET joined = 1 WHERE key IN (SELECT value FROM json_each(?))",
                (listed,),
            )

        await self._db.transaction(mark)

    async def _read(self, keys: Sequence[str], now: float) -> dict[str, LeadContext]:
        listed = orjson.dumps(list(keys)).decode()

        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return conn.execute(
                "SELECT key, data FROM lead_context WHERE expires > ? "
                "AND key IN (SELECT value FROM json_each(?))",
                (now, listed),
            ).fetchall()

        rows = await self._db.read(read)
        return {key: LeadContext.from_json(orjson.loads(data)) for key, data in rows}

    async def _sweep(self, now: float) -> tuple[int, int]:
        bound = self.max_entries

        def sweep(conn: sqlite3.Connection) -> tuple[int, int]:
            conn.execute("DELETE FROM lead_context WHERE expires <= ?", (now,))
            count: int = conn.execute("SELECT COUNT(*) FROM lead_context").fetchone()[0]
            if count <= bound:
                return count, 0
            conn.execute(
                "DELETE FROM lead_context WHERE key IN (SELECT key FROM lead_context "
                "ORDER BY joined, expires LIMIT ?)",
                (count - bound,),
            )
            return bound, count - bound

        return await self._db.transaction(sweep)
