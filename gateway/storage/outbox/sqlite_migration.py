"""The SQLite outbox's schema, and the in-place migration of files written by older versions.

Version 1 stored each event as one JSON record (`{"v": 1, "source", "source_id",
"test_code", "data"}`); version 2 keeps the destination and `event_time` in columns beside
the `data` element, so delivery splices stored JSON without parsing it; the `leases` table
(fresh events are leased there, see sqlite.py) needs no new version: an older gateway reads
such a file correctly. An upgraded gateway opening a version-1 file converts it in one
transaction: nothing waiting is lost.
"""

from __future__ import annotations

import sqlite3

VERSION = 3
READY, IN_FLIGHT = 0, 1  # events.state: claimable when due, or leased until due
FRESH = 0
"""events.due of an event never claimed: claimed in id order, leased in `leases`."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pixel TEXT NOT NULL,
    source TEXT NOT NULL,
    test_code TEXT,
    event TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    data TEXT NOT NULL,
    created REAL NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS events_due ON events (due, id);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, until REAL NOT NULL);
CREATE TRIGGER IF NOT EXISTS events_deleted AFTER DELETE ON events
BEGIN DELETE FROM leases WHERE id = old.id; END;
CREATE TRIGGER IF NOT EXISTS events_rescheduled AFTER UPDATE OF due ON events
BEGIN DELETE FROM leases WHERE id = old.id; END;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    pixel TEXT NOT NULL,
    source TEXT NOT NULL,
    test_code TEXT,
    event TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    data TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL,
    code INTEGER,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL,
    request_id TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS import_checkpoints (key TEXT PRIMARY KEY, created REAL NOT NULL);
"""
_FROM_V1 = """
ALTER TABLE events RENAME TO events_v1;
ALTER TABLE dead_letters RENAME TO dead_letters_v1;
DROP INDEX IF EXISTS events_due;
{schema}
INSERT INTO events (id, pixel, source, test_code, event, event_id, event_time, data, created,
                    state, due, attempts, last_error)
SELECT id, pixel, record ->> 'source', record ->> 'test_code', record -> 'data' ->> 'event',
       record -> 'data' ->> 'event_id', record -> 'data' ->> 'event_time',
       json(record -> 'data'), created, state, due, attempts, last_error FROM events_v1;
INSERT INTO dead_letters (id, pixel, source, test_code, event, event_id, event_time, data,
                          created, attempts, code, reason, dead_at)
SELECT id, pixel, record ->> 'source', record ->> 'test_code', record -> 'data' ->> 'event',
       record -> 'data' ->> 'event_id', record -> 'data' ->> 'event_time',
       json(record -> 'data'), created, attempts, code, reason, dead_at FROM dead_letters_v1;
DELETE FROM sqlite_sequence WHERE name = 'events';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events', seq FROM sqlite_sequence
WHERE name = 'events_v1';
DROP TABLE events_v1;
DROP TABLE dead_letters_v1;
"""


class NewerOutbox(Exception):
    """The file was written by a newer version of the gateway: this one cannot read it."""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the file to VERSION; a new file just gets the stamp (its tables come after).
    A file of a newer version is refused (NewerOutbox), never read or changed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > VERSION:
            raise NewerOutbox(
                f"the outbox file has schema version {version}, written by a newer gateway; "
                f"this one reads up to version {VERSION}: run the newer version, or restore "
                "the backup taken before the upgrade"
            )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if version < VERSION and "record" in columns:
            for statement in _FROM_V1.format(schema=SCHEMA).split(";\n"):
                if statement.strip():
                    conn.execute(statement)
        dead = {row[1] for row in conn.execute("PRAGMA table_info(dead_letters)")}
        if dead and "request_id" not in dead:  # version 2: TikTok's request id kept since 3
            conn.execute("ALTER TABLE dead_letters ADD COLUMN request_id TEXT")
        if version < VERSION:
            conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
