"""Outboxes written by version 1 (one JSON record per event) are read by this version.

A user upgrades the gateway with events waiting (an outage, dead letters kept for replay):
every one of them must still be delivered or replayed, on SQLite and on Redis.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from gateway.core.errors import OutboxUnavailable
from gateway.storage.outbox.sqlite import SqliteOutbox
from gateway.storage.outbox.sqlite_migration import VERSION
from tests.conftest import OTHER_PIXEL, PIXEL, BackendFactory, make_event

pytestmark = pytest.mark.anyio

_V1_SCHEMA = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pixel TEXT NOT NULL, record TEXT NOT NULL,
    created REAL NOT NULL, state INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
CREATE INDEX events_due ON events (due, id);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY, pixel TEXT NOT NULL, record TEXT NOT NULL, created REAL NOT NULL,
    attempts INTEGER NOT NULL, code INTEGER, reason TEXT NOT NULL, dead_at REAL NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _write_version_1_file(path: Path) -> None:
    now = time.time()
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    for number in range(3):  # ids 1..3; the third is in flight, held by a crashed gateway
        conn.execute(
            "INSERT INTO events (pixel, record, created, state, due) VALUES (?, ?, ?, ?, ?)",
            (PIXEL, orjson.dumps(make_event(number).to_record()).decode(), now, number // 2, now),
        )
    conn.execute(
        "INSERT INTO dead_letters VALUES (9, ?, ?, ?, 1, 40002, 'bad', ?)",
        (
            OTHER_PIXEL,
            orjson.dumps(make_event(9, pixel=OTHER_PIXEL).to_record()).decode(),
            now,
            now,
        ),
    )
    conn.execute("UPDATE sqlite_sequence SET seq = 9 WHERE name = 'events'")
    conn.commit()
    conn.close()


async def test_a_version_1_sqlite_file_is_migrated_with_nothing_lost(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    _write_version_1_file(path)
    outbox = SqliteOutbox(str(path))
    await outbox.open()
    try:
        claimed = await outbox.claim(10, time.time() + 1)
        assert [c.decode() for c in claimed] == [
            make_event(n, event_time=claimed[n].event_time) for n in range(3)
        ]
        [letter] = await outbox.dead_letters()
        assert (letter.event.event_id, letter.code) == (f"ev-{OTHER_PIXEL}-9", 40002)
        # new ids continue after the old ones: none collides with the old dead letter's 9
        await outbox.add([make_event(n) for n in range(10, 17)])
        assert await outbox.replay() == 1
        again = await outbox.claim(10, time.time() + 1)
        assert sorted(c.decode().event_id for c in again) == sorted(
            [f"ev-{OTHER_PIXEL}-9", *(f"ev-{PIXEL}-{n}" for n in range(10, 17))]
        )
    finally:
        await outbox.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (VERSION,)


async def test_a_version_2_file_keeps_its_dead_letters_and_gains_their_request_ids(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.sqlite3"
    outbox = SqliteOutbox(str(path))
    await outbox.open()
    await outbox.add([make_event(1)])
    [claimed] = await outbox.claim(10, time.time())
    await outbox.dead_letter([claimed.id], "bad", 40002, time.time())
    await outbox.close()
    with sqlite3.connect(path) as conn:  # as version 2 left it: no request_id column
        conn.execute("ALTER TABLE dead_letters DROP COLUMN request_id")
        conn.execute("PRAGMA user_version = 2")
    outbox = SqliteOutbox(str(path))
    await outbox.open()
    try:
        [letter] = await outbox.dead_letters()
        assert (letter.event.event_id, letter.request_id) == (f"ev-{PIXEL}-1", None)
        assert await outbox.replay() == 1
        [again] = await outbox.claim(10, time.time() + 1)
        await outbox.dead_letter([again.id], "bad", 40002, time.time(), request_id="2026-r1")
        assert [d.request_id for d in await outbox.dead_letters()] == ["2026-r1"]
    finally:
        await outbox.close()


async def test_a_file_of_a_newer_version_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    """A rollback after an upgrade: the older gateway says so in one line, changes nothing."""
    path = tmp_path / "newer.sqlite3"
    outbox = SqliteOutbox(str(path))
    await outbox.open()
    await outbox.add([make_event(1)])
    await outbox.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(OutboxUnavailable, match=f"schema version {VERSION + 1}.*newer gateway"):
        await SqliteOutbox(str(path)).open()
    assert path.read_bytes() == before


async def test_redis_entries_of_version_1_are_delivered_and_dead_lettered(
    redis_url: str, make_backend: BackendFactory
) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url)
    old = make_event(1)
    await client.xadd(
        "tiktok-gateway:stream",
        {"r": orjson.dumps(old.to_record()), "a": "0", "c": repr(time.time()), "p": PIXEL},
    )
    await client.aclose()
    outbox = make_backend(redis_url).outbox
    await outbox.open()
    try:
        [claimed] = await outbox.claim(10, time.time())
        assert claimed.decode() == old and claimed.destination == old.destination
        await outbox.dead_letter([claimed.id], "bad", 40002, time.time())
        [letter] = await outbox.dead_letters()
        assert letter.event == old
        assert await outbox.replay() == 1
        [again] = await outbox.claim(10, time.time())
        assert again.decode() == old
    finally:
        await outbox.close()


async def test_the_outbox_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = SqliteOutbox(str(path))
    await outbox.open()
    try:
        await outbox.add([make_event(1)])
        for name in (path, tmp_path / "outbox.sqlite3-wal", tmp_path / "outbox.sqlite3-shm"):
            assert name.stat().st_mode & 0o777 == 0o600, name
    finally:
        await outbox.close()


async def test_the_lock_file_is_gone_after_close_and_the_next_owner_takes_the_file(
    tmp_path: Path,
) -> None:
    """A `.lock` file stayed after shutdown (issue 23.5); removing it must not let two
    owners in at once."""
    path = tmp_path / "outbox.sqlite3"
    first = SqliteOutbox(str(path))
    await first.open()
    second = SqliteOutbox(str(path))
    with pytest.raises(OutboxUnavailable, match="in use by another gateway"):
        await second.open()
    await first.close()
    assert not (tmp_path / "outbox.sqlite3.lock").exists()
    await second.open()  # the file is free: the next owner takes it
    try:
        with pytest.raises(OutboxUnavailable, match="in use by another gateway"):
            await SqliteOutbox(str(path)).open()
    finally:
        await second.close()
    assert not (tmp_path / "outbox.sqlite3.lock").exists()
