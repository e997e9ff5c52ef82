"""The lead context in the SQLite outbox's file: one table, written by the outbox's writer.

Sharing the outbox's single writer thread keeps SQLite's one-writer rule and its group
commit: a batch of contexts is one transaction among the events' own. Entries are JSON with
an expiry; the sweep deletes expired rows and, past the bound, those expiring soonest.
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
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS lead_context_expires ON lead_context (expires);
"""


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
        await self._db.statement(lambda conn: conn.executescript(SCHEMA))

    async def _write(self, entries: dict[str, LeadContext], now: float) -> None:
        expires = now + self.ttl

        def merge(conn: sqlite3.Connection) -> None:
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
                merged = earlier.merged(context) if earlier is not None else context
                rows.append((key, orjson.dumps(merged.to_json()).decode(), expires))
            conn.executemany(
                "INSERT INTO lead_context (key, data, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET data = excluded.data, expires = excluded.expires",
                rows,
            )

        await self._db.transaction(merge)

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

    async def _sweep(self, now: float) -> int:
        bound = self.max_entries

        def sweep(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM lead_context WHERE expires <= ?", (now,))
            count: int = conn.execute("SELECT COUNT(*) FROM lead_context").fetchone()[0]
            if count > bound:
                conn.execute(
                    "DELETE FROM lead_context WHERE key IN (SELECT key FROM lead_context "
                    "ORDER BY expires LIMIT ?)",
                    (count - bound,),
                )
                count = bound
            return count

        return await self._db.transaction(sweep)
