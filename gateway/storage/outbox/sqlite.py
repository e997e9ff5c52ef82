"""The embedded outbox: one SQLite file in WAL mode, written by one thread with group commit.

With `synchronous=FULL` (the default) a committed event survives `kill -9` and power loss
(`sqlite_writer.py`: how writes are grouped). One gateway process owns a file at a time (an
exclusive lock file) and on open releases the leases a crashed predecessor held; its delivery
process and operator commands open the file beside it (`exclusive=False`). The operators'
queries are `sqlite_admin.py`, the schema and its migration `sqlite_migration.py`.
Why: docs/design/sqlite-outbox.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from gateway.core.errors import EventError, OutboxUnavailable
from gateway.core.event import Destination, Event
from gateway.storage.outbox.base import (
    CHECKPOINT_DAYS,
    Backlog,
    Claimed,
    ClaimedBatch,
    Outbox,
    Prepared,
)
from gateway.storage.outbox.sqlite_admin import SqliteAdmin
from gateway.storage.outbox.sqlite_migration import (
    FRESH,
    IN_FLIGHT,
    READY,
    SCHEMA,
    NewerOutbox,
    migrate,
)
from gateway.storage.outbox.sqlite_writer import GroupCommitWriter

T = TypeVar("T")

_RELEASE_LEASES = (
    # leased in place (retries) or in `leases` (fresh events): due at their arrival again
    f"UPDATE events SET state = {READY}, due = created WHERE state = {IN_FLIGHT} "
    "OR id IN (SELECT id FROM leases)"
)
_EXPIRE = (  # fresh events whose lease ran out: due at their arrival (a trigger drops the lease)
    f"UPDATE events SET due = created WHERE due = {FRESH} "
    "AND id IN (SELECT id FROM leases WHERE until <= ?)"
)
_INSERT_JSON = (
    "INSERT INTO events (pixel, source, test_code, event, event_id, event_time, data, created, "
    f"due) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, "
    f"value ->> 6, value ->> 7, {FRESH} FROM json_each(?)"
)
_FRESH = f"SELECT * FROM events WHERE id > :cursor AND +due = {FRESH} ORDER BY id LIMIT :limit"
_SCHEDULED = "SELECT * FROM events WHERE due > 0 AND due <= :now ORDER BY due, id LIMIT :limit"
_ANY_SCHEDULED = "SELECT 1 FROM events WHERE due > 0 AND due <= ? LIMIT 1"
_READY = (
    # fresh events above the cursor, in id order (no sort); with retries due as well, both
    # merged by time. A fresh event's time is the latest arrival up to its id, so that the
    # fresh events taken are always the lowest ids: the cursor then skips none untaken
    f"({_FRESH})",
    "(SELECT * FROM (SELECT *, max(created) OVER (ORDER BY id) AS at FROM "
    f"({_FRESH}) UNION ALL SELECT *, due AS at FROM ({_SCHEDULED})) "
    "ORDER BY at, id LIMIT :limit)",
)
_LEASE_KIND = (
    # which rows are leased in `leases` (the highest, for the cursor) and which in place
    "max(iif(due = 0, id, NULL)), group_concat(iif(due > 0, id, NULL))"
)
_CLAIMABLE = tuple(
    # one statement, one row (every row stepped costs a GIL hand-back): a JSON array of the
    # rows' columns, and their data elements joined by a record separator (0x1E), which
    # minified JSON never holds unescaped, so they are split apart without being parsed
    "SELECT coalesce(json_group_array(json_array(id, source, pixel, test_code, event, "
    "event_id, event_time, attempts)), '[]'), coalesce(group_concat(data, char(30)), ''), "
    f"{_LEASE_KIND} FROM {ready}"
    for ready in _READY
)
_SEPARATOR = "\x1e"
_COLUMNS = (
    # in one aggregate pass, so the n-th element of every column is the same row's
    "group_concat(id), json_group_array(event), json_group_array(event_id), count(*), "
    "json_group_array(event_time), group_concat(data, char(30)), json_group_array(attempts), "
    f"{_LEASE_KIND}"
)
_CLAIMABLE_COLUMNS = tuple(
    # one destination (the usual case) needs no grouping, which would sort the rows
    f"SELECT min(source), min(pixel), min(test_code), {_COLUMNS}, min(source) = max(source) "
    "AND min(pixel) = max(pixel) AND (count(test_code) = 0 OR count(test_code) = count(*) "
    f"AND min(test_code) = max(test_code)) FROM {ready}"
    for ready in _READY
)
_CLAIMABLE_GROUPED = tuple(
    f"SELECT source, pixel, test_code, {_COLUMNS} FROM {ready} GROUP BY source, pixel, test_code"
    for ready in _READY
)
_LEASE_FRESH = (
    # no event above the cursor is leased or changed by anyone else (one claimer), so the
    # ids go in as they are, without looking their rows up again
    "INSERT OR IGNORE INTO leases (id, until) SELECT value, ? FROM json_each(?)"
)
_LEASE_SCHEDULED = (
    f"UPDATE events SET state = {IN_FLIGHT}, due = ? "
    "WHERE id IN (SELECT value FROM json_each(?)) AND due > 0 AND due <= ?"
)


class SqliteOutbox(SqliteAdmin, Outbox):
    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        lease_seconds: float = 300.0,
        max_group: int = 512,
        exclusive: bool = True,
    ) -> None:
        """`exclusive=False` is for processes beside the owning gateway (operator commands,
        its delivery process): they neither take the owner's lock nor release its leases."""
        self._path = path
        self._exclusive = exclusive
        self._synchronous = synchronous
        self._lease = lease_seconds
        self._max_group = max_group
        self._writer: GroupCommitWriter | None = None
        self._lock_fd: int | None = None
        self._cursor: int | None = None
        """The highest fresh id this outbox leased (`claim`); read from `leases` at first."""
        self._next_expiry = 0.0
        """When the earliest lease in `leases` can run out (`_expire`)."""

    def __repr__(self) -> str:
        return f"SqliteOutbox({self._path!r})"

    @property
    def path(self) -> str:
        return self._path

    @property
    def commits(self) -> int:
        """Transactions committed: fewer than operations when group commit works."""
        return self._writer.commits if self._writer is not None else 0

    @property
    def writer(self) -> GroupCommitWriter:
        """The file's one writer, for stores that live beside the events (lead context)."""
        return self._db

    @property
    def _db(self) -> GroupCommitWriter:
        if self._writer is None or not self._writer.alive:
            raise OutboxUnavailable("the outbox is not open")
        return self._writer

    # --- lifecycle -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        _private(self._path, exclusive=self._exclusive)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        migrate(conn)
        conn.executescript(SCHEMA)
        if self._exclusive:  # the previous owner is gone: its leases are void
            conn.execute(_RELEASE_LEASES)
        conn.execute("PRAGMA busy_timeout=0")  # from here on, the writer waits for the lock
        return conn

    def _lock_file(self) -> int:
        """Take the exclusive lock that makes this process the file's only user. The lock
        file is removed on release, so a lock taken on a file another owner just removed is
        let go and taken again on the file now at the path."""
        path = self._path + ".lock"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
            while True:
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise OutboxUnavailable(
                        f"outbox {self._path} is in use by another gateway process "
                        "(use a redis:// outbox to run several replicas)"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_ino == os.fstat(fd).st_ino:
                        return fd
                os.close(fd)  # removed by the owner that released it: take the new one
        except OSError as exc:
            raise OutboxUnavailable(f"cannot use outbox {self._path}: {exc.strerror}") from None

    async def open(self) -> None:
        if self._writer is not None:
            return
        if self._exclusive:
            self._lock_fd = await asyncio.to_thread(self._lock_file)
        try:
            conn = await asyncio.to_thread(self._connect)
        except (sqlite3.Error, NewerOutbox) as exc:
            self._release_lock()
            raise OutboxUnavailable(f"cannot open outbox {self._path}: {exc}") from None
        except OSError as exc:  # the file cannot be made (a process beside the owner)
            self._release_lock()
            raise OutboxUnavailable(f"cannot use outbox {self._path}: {exc.strerror}") from None
        self._writer = GroupCommitWriter(conn, _INSERT_JSON, max_group=self._max_group)

    def _release_lock(self) -> None:
        """Remove the lock file while still holding it, then let go (nothing left behind)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path + ".lock")
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        self._release_lock()

    # --- the queue -------------------------------------------------------------------------

    async def add(self, events: Sequence[Event], *, checkpoint: str | None = None) -> None:
        if not events and checkpoint is None:
            return
        if checkpoint is None:  # every beacon: one coroutine less than through add_prepared
            await self._db.add(self.prepare(events).payload)
            return
        await self.add_prepared(self.prepare(events), checkpoint=checkpoint)

    @staticmethod
    def prepare(events: Sequence[Event]) -> Prepared:
        now = time.time()
        try:  # serialised here, so a bad value fails its own request, not the writer
            # the data element goes in as a string: SQLite re-parses a row's JSON for each
            # column it extracts, and skipping a string costs far less than walking an object
            rows = [
                [
                    e.destination.event_source_id,
                    e.destination.event_source,
                    e.destination.test_event_code,
                    e.event,
                    e.event_id,
                    e.event_time,
                    orjson.dumps(e.to_tiktok()).decode(),
                    now,
                ]
                for e in events
            ]
            return Prepared(len(rows), orjson.dumps(rows))
        except orjson.JSONEncodeError:
            raise EventError("event", "holds a value that cannot be stored") from None

    async def add_prepared(self, prepared: Prepared, *, checkpoint: str | None = None) -> None:
        payload: bytes = prepared.payload
        if checkpoint is None:
            if prepared.count:
                await self._db.add(payload)
            return
        now = time.time()

        def with_checkpoint(conn: sqlite3.Connection) -> None:
            # one transaction: the checkpoint exists exactly when the chunk's events do
            conn.execute(_INSERT_JSON, (payload.decode(),))
            conn.execute(
                "INSERT OR REPLACE INTO import_checkpoints (key, created) VALUES (?, ?)",
                (checkpoint, now),
            )
            conn.execute(
                "DELETE FROM import_checkpoints WHERE created < ?", (now - CHECKPOINT_DAYS * 86400,)
            )

        await self._db.transaction(with_checkpoint)

    async def checkpoint_stored(self, key: str) -> bool:
        row = await self._db.read(
            lambda conn: conn.execute(
                "SELECT 1 FROM import_checkpoints WHERE key = ?", (key,)
            ).fetchone()
        )
        return row is not None

    async def claim(self, limit: int, now: float) -> list[Claimed]:
        """Read the ready events, then lease those still ready in a short write.

        Fresh events (never claimed, `due` = FRESH) are read in id order above a cursor and
        leased in the `leases` table: ids grow in commit order, so every fresh event at or
        below the cursor is leased or gone, and a lease moves neither the event's row nor
        its index entry. Retries due (and events released) are read by `due` and leased in
        place. A row changed in between is left out of the lease, never sent twice.
        """
        await self._expire(now)
        cursor, (columns, data, fresh_max, scheduled) = await self._db.read(
            lambda conn: _ready(
                conn,
                self._cursor,
                limit,
                now,
                lambda merged, params: conn.execute(_CLAIMABLE[merged], params).fetchone(),
            )
        )
        self._cursor = cursor
        rows = orjson.loads(columns)
        if not rows:
            return []
        claimed = [
            Claimed(str(i), Destination(source, pixel, code), name, event_id, at, element, tries)
            for (i, source, pixel, code, name, event_id, at, tries), element in zip(
                rows, data.split(_SEPARATOR), strict=True
            )
        ]
        ids = ",".join(str(row[0]) for row in rows)
        held = await self._hold(ids, scheduled, len(rows), fresh_max, now)
        return claimed if held is None else [c for c in claimed if c.id in held]

    async def claim_batches(self, limit: int, now: float, batch_size: int) -> list[ClaimedBatch]:
        """`claim` as columns (`ClaimedBatch`): each column read as one aggregate and split
        or parsed in C, so the delivery loop builds no object per event."""
        await self._expire(now)
        cursor, groups = await self._db.read(
            lambda conn: _ready(
                conn, self._cursor, limit, now, functools.partial(_claimable_columns, conn)
            )
        )
        self._cursor = cursor
        if not groups:
            return []
        fresh_max = max((g[10] for g in groups if g[10] is not None), default=None)
        scheduled = ",".join(g[11] for g in groups if g[11] is not None) or None
        ids = ",".join(group[3] for group in groups)
        held = await self._hold(ids, scheduled, sum(g[6] for g in groups), fresh_max, now)
        batches = []
        for group in groups:
            source, pixel, code, id_list, names, event_ids, _, times, data, attempts = group[:10]
            destination = Destination(source, pixel, code)
            columns = (
                id_list.split(","),
                orjson.loads(names),
                orjson.loads(event_ids),
                orjson.loads(times),
                data.split(_SEPARATOR),
                orjson.loads(attempts),
            )
            for start in range(0, len(columns[0]), batch_size):
                end = start + batch_size
                batches.append(ClaimedBatch(destination, *(c[start:end] for c in columns)))
        if held is None:
            return batches
        kept = ((b.destination, [c for c in b.items() if c.id in held]) for b in batches)
        return [ClaimedBatch.of(destination, items) for destination, items in kept if items]

    async def _expire(self, now: float) -> None:
        """Fresh events whose lease ran out are made due again (at their arrival); looked
        for only once the earliest lease can have ended, so a claim seldom pays for it."""
        if now < self._next_expiry:
            return

        def expire(conn: sqlite3.Connection) -> float | None:
            conn.execute(_EXPIRE, (now,))
            earliest: float | None = conn.execute("SELECT min(until) FROM leases").fetchone()[0]
            return earliest

        earliest = await self._db.statement(expire)
        self._next_expiry = now + self._lease if earliest is None else earliest

    async def _hold(
        self, ids: str, scheduled: str | None, count: int, fresh_max: int | None, now: float
    ) -> set[str] | None:
        """Lease the rows `ids` (comma-separated) that are still ready: fresh ones in
        `leases`, `scheduled` ones in place. None when all `count` were, else the ids this
        lease holds (rare: an ack or retry came in between)."""
        db = self._db
        lease_end = now + self._lease
        leased = 0
        fresh = ids
        if scheduled is not None:
            moved = set(scheduled.split(","))
            fresh = ",".join(i for i in ids.split(",") if i not in moved)
            leased += await db.statement(
                lambda conn: (
                    conn.execute(_LEASE_SCHEDULED, (lease_end, f"[{scheduled}]", now)).rowcount
                )
            )
        if fresh:
            leased += await db.statement(
                lambda conn: conn.execute(_LEASE_FRESH, (lease_end, f"[{fresh}]")).rowcount
            )
        if fresh_max is not None:  # leased (or gone): the next claim reads above it
            self._cursor = max(self._cursor or 0, fresh_max)
        if leased == count:
            return None
        return await db.read(
            lambda conn: {
                str(i)
                for (i,) in conn.execute(
                    "SELECT id FROM leases WHERE id IN (SELECT value FROM json_each(?)) "
                    "AND until = ? UNION SELECT id FROM events WHERE id IN (SELECT value "
                    f"FROM json_each(?)) AND state = {IN_FLIGHT} AND due = ?",
                    (f"[{ids}]", lease_end, f"[{ids}]", lease_end),
                )
            }
        )

    async def release_leases(self) -> None:
        await self._db.statement(lambda conn: conn.execute(_RELEASE_LEASES))

    async def ack(self, ids: Sequence[str]) -> None:
        await self._db.statement(
            lambda conn: conn.execute(
                "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))", (_ids(ids),)
            )
        )

    async def retry(self, ids: Sequence[str], due: float, reason: str) -> None:
        await self._db.statement(
            lambda conn: conn.execute(
                "UPDATE events SET state = 0, due = ?, attempts = attempts + 1, last_error = ? "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (due, reason, _ids(ids)),
            )
        )

    async def dead_letter(
        self,
        ids: Sequence[str],
        reason: str,
        code: int | None,
        now: float,
        *,
        request_id: str | None = None,
    ) -> None:
        selected = _ids(ids)

        def move(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters (id, pixel, source, test_code, event, "
                "event_id, event_time, data, created, attempts, code, reason, dead_at, "
                "request_id) SELECT id, pixel, source, test_code, event, event_id, "
                "event_time, data, created, attempts + 1, ?, ?, ?, ? FROM events "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (code, reason, now, request_id, selected),
            )
            conn.execute(
                "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))", (selected,)
            )

        await self._db.transaction(move)

    async def check_writable(self) -> None:
        """Write (and remove) a row big enough to need fresh pages: fails when the disk is full."""

        def probe(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', randomblob(16384))"
            )
            conn.execute("DELETE FROM meta WHERE key = 'probe'")

        await self._db.transaction(probe)

    async def backlog(self, now: float) -> Backlog:
        """The file's used pages (not its WAL, which checkpoints keep small, nor pages freed
        for reuse), the oldest event (the lowest id: ids grow
        with time and a retry keeps its id), and the disk's free space."""

        path = self._path

        def read(conn: sqlite3.Connection) -> Backlog:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            row = conn.execute("SELECT created FROM events ORDER BY id LIMIT 1").fetchone()
            try:
                free: int | None = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
            except OSError:
                free = None
            return Backlog(
                stored_bytes=(pages - free_pages) * page_size,
                oldest_age_seconds=None if row is None else max(0.0, now - row[0]),
                free_bytes=free,
            )

        return await self._db.read(read)


def _private(path: str, *, exclusive: bool) -> None:
    """The file readable by its owner only: it holds hashed identifiers and URLs. SQLite
    gives its -wal and -shm files the database file's mode. An owning gateway also narrows
    a file an older version created with the default mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    if exclusive:
        for name in (path, f"{path}-wal", f"{path}-shm"):
            with contextlib.suppress(OSError):
                if os.stat(name).st_mode & 0o077:
                    os.chmod(name, 0o600)


def _claimable_columns(conn: sqlite3.Connection, merged: bool, params: dict[str, Any]) -> list[Any]:
    """The ready events as columns, one row per destination (see `_COLUMNS`)."""
    *columns, one = conn.execute(_CLAIMABLE_COLUMNS[merged], params).fetchone()
    if one is None:  # nothing ready
        return []
    if one:
        return [columns]
    return conn.execute(_CLAIMABLE_GROUPED[merged], params).fetchall()


def _ready(
    conn: sqlite3.Connection,
    cursor: int | None,
    limit: int,
    now: float,
    query: Callable[[bool, dict[str, Any]], T],
) -> tuple[int, T]:
    """(the cursor, `query` of the ready events): the cursor is read from `leases` at the
    first claim; whether retries are due besides fresh events takes one index probe."""
    if cursor is None:
        cursor = int(conn.execute("SELECT coalesce(max(id), 0) FROM leases").fetchone()[0])
    merged = conn.execute(_ANY_SCHEDULED, (now,)).fetchone() is not None
    return cursor, query(merged, {"cursor": cursor, "limit": limit, "now": now})


def _ids(ids: Sequence[str]) -> str:
    return orjson.dumps([int(i) for i in ids]).decode()
