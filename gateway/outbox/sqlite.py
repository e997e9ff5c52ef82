"""The embedded outbox: one SQLite file in WAL mode, written by one thread with group commit.

Every operation is queued to a single writer thread, which takes everything waiting (up to
`max_group` operations), runs it in ONE transaction — each operation in its own savepoint, so
one failure does not sink its neighbours — commits once, and only then answers each caller.
Durability therefore costs one fsync per group, not one per request. With
`synchronous=FULL` (the default) a committed event survives `kill -9` and power loss.

One gateway process owns a file at a time (an exclusive lock file enforces it); on open it
releases the leases a crashed predecessor held, so those events are sent again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from gateway.core.errors import EventError, OutboxUnavailable
from gateway.core.event import Event
from gateway.outbox.base import (
    Claimed,
    DeadLetter,
    Outbox,
    OutboxCounts,
    PixelCounts,
)

T = TypeVar("T")
_STOP = object()
_READY, _IN_FLIGHT = 0, 1
_RELEASE_LEASES = f"UPDATE events SET state = {_READY}, due = created WHERE state = {_IN_FLIGHT}"
_READ = b"read"  # payloads that mark how an operation runs (see _run_group)
_STATEMENT = b"statement"
_LOCK_WAIT_SECONDS = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pixel TEXT NOT NULL,
    record TEXT NOT NULL,
    created REAL NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS events_due ON events (due, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    pixel TEXT NOT NULL,
    record TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL,
    code INTEGER,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

Operation = Callable[[sqlite3.Connection], Any]
_INSERT_JSON = (
    "INSERT INTO events (pixel, record, created, due) "
    "SELECT value ->> 0, json(value -> 1), value ->> 2, value ->> 2 FROM json_each(?)"
)


class SqliteOutbox(Outbox):
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
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        """Transactions committed: fewer than operations when group commit works."""

    def __repr__(self) -> str:
        return f"SqliteOutbox({self._path!r})"

    # --- the writer thread ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        if self._exclusive:  # the previous owner is gone: its leases are void
            conn.execute(_RELEASE_LEASES)
        conn.execute("PRAGMA busy_timeout=0")  # from here on, _locked waits for the lock
        return conn

    def _writer(self, conn: sqlite3.Connection) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            group = [item]
            stop_after = False
            while len(group) < self._max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop_after = True
                    break
                group.append(more)
            self._run_group(conn, group)
            if stop_after:
                break
        conn.close()

    def _run_group(self, conn: sqlite3.Connection, group: list[Any]) -> None:
        """Everything waiting, holding the file's write lock as briefly as possible.

        - reads first, outside any transaction: they never take the write lock;
        - all adds in ONE autocommitted statement (INSERT … SELECT FROM json_each): one
          commit, one fsync for the whole group;
        - single-statement operations (leases, acks, retries) each autocommitted;
        - anything else in its own transaction.
        The sqlite3 module releases the GIL around every statement, and getting it back
        means waiting for the event loop thread. A transaction spanning statements would
        hold the write lock through those waits while the other process (the gateway or its
        delivery process) stalls on it; a single statement holds it only while SQLite runs.
        Every caller of the group is then answered by a single wake-up of the loop.
        """
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for operation, kind, future in group:
            if kind is _READ:
                results.append(self._apply(future, operation, conn))
        adds = [(payload, future) for operation, payload, future in group if operation is None]
        if adds:
            # each add is a JSON array already: splice them into one, without re-encoding
            payload = (b"[" + b",".join(rows[1:-1] for rows, _ in adds) + b"]").decode()
            outcome = self._apply(None, self._write, conn.execute, _INSERT_JSON, (payload,))
            results.extend((future, None, outcome[2]) for _, future in adds)
        for operation, kind, future in group:
            if kind is _STATEMENT:
                results.append(self._apply(future, self._write, operation, conn))
            elif operation is not None and kind is None:
                results.append(self._apply(future, self._transaction, conn, operation))
        if conn.in_transaction:  # never carry a lock into the wait for the next group
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(_settle_all, results)

    @staticmethod
    def _apply(future: Any, step: Callable[..., Any], *args: Any) -> tuple[Any, Any, Any]:
        """(future, result, error) of one step; the writer must outlive any one of them."""
        try:
            return future, step(*args), None
        except sqlite3.Error as exc:
            return future, None, OutboxUnavailable(f"outbox write failed: {exc}")
        except Exception as exc:
            return future, None, exc

    def _write(self, step: Callable[..., T], *args: Any) -> T:
        """One autocommitted write statement: one commit."""
        result = _locked(step, *args)
        self.commits += 1
        return result

    def _transaction(self, conn: sqlite3.Connection, operation: Operation) -> Any:
        _locked(conn.execute, "BEGIN IMMEDIATE")
        try:
            result = operation(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        return result

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(operation, None)  # type: ignore[no-any-return]

    async def _read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read outside any write transaction, so it never holds the write lock that
        the gateway's group commits (or the delivery process) wait for. It sees the state
        before the writes of its own group."""
        return await self._submit(operation, _READ)  # type: ignore[no-any-return]

    async def _statement(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run an operation that is ONE write statement, autocommitted (see _run_group)."""
        return await self._submit(operation, _STATEMENT)  # type: ignore[no-any-return]

    async def _submit(self, operation: Operation | None, payload: bytes | None) -> Any:
        if self._thread is None or not self._thread.is_alive():
            raise OutboxUnavailable("the outbox is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put((operation, payload, future))
        return await future

    # --- lifecycle -------------------------------------------------------------------------

    def _lock_file(self) -> int:
        """Take the exclusive lock that makes this process the file's only user."""
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
            fd = os.open(self._path + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise OutboxUnavailable(f"cannot use outbox {self._path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutboxUnavailable(
                f"outbox {self._path} is in use by another gateway process "
                "(use a redis:// outbox to run several replicas)"
            ) from None
        return fd

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self._exclusive:
            self._lock_fd = await asyncio.to_thread(self._lock_file)
        try:
            conn = await asyncio.to_thread(self._connect)
        except sqlite3.Error as exc:
            self._release_lock()
            raise OutboxUnavailable(f"cannot open outbox {self._path}: {exc}") from None
        self._thread = threading.Thread(
            target=self._writer, args=(conn,), name="outbox-writer", daemon=True
        )
        self._thread.start()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join)
        self._release_lock()

    # --- operations ------------------------------------------------------------------------

    async def add(self, events: Sequence[Event]) -> None:
        if not events:
            return
        now = time.time()
        rows = [[e.destination.event_source_id, e.to_record(), now] for e in events]
        try:  # serialised here, so a bad value fails its own request, not the writer
            payload = orjson.dumps(rows)
        except orjson.JSONEncodeError:
            raise EventError("event", "holds a value that cannot be stored") from None
        await self._submit(None, payload)

    async def claim(self, limit: int, now: float) -> list[Claimed]:
        """Read the ready events, then lease those still due in a short write.

        Only this outbox's dispatcher changes existing rows, one claim at a time, and leased
        rows are not due; the lease is written only where a row is still due, so a row an
        acknowledgement or retry changed in between is left out, never sent twice.
        """

        def select(conn: sqlite3.Connection) -> str:
            # one statement, one row: the events as a JSON array (see _run_group); records
            # are stored as minified JSON, so they are spliced in without being parsed again
            (claimed,) = conn.execute(_CLAIMABLE, (now, limit)).fetchone()
            return str(claimed)

        rows = orjson.loads(await self._read(select))
        if not rows:
            return []
        ids = orjson.dumps([row[0] for row in rows]).decode()
        lease_end = now + self._lease

        leased = await self._statement(
            lambda conn: (
                conn.execute(
                    "UPDATE events SET state = 1, due = ? "
                    "WHERE id IN (SELECT value FROM json_each(?)) AND due <= ?",
                    (lease_end, ids, now),
                ).rowcount
            )
        )
        if leased != len(rows):  # rare: keep only the rows this lease holds
            held = await self._read(
                lambda conn: {
                    i
                    for (i,) in conn.execute(
                        "SELECT id FROM events WHERE id IN (SELECT value FROM json_each(?)) "
                        "AND state = 1 AND due = ?",
                        (ids, lease_end),
                    )
                }
            )
            rows = [row for row in rows if row[0] in held]
        return [
            Claimed(str(i), Event.from_record(record), attempts) for i, record, attempts in rows
        ]

    async def release_leases(self) -> None:
        await self._statement(lambda conn: conn.execute(_RELEASE_LEASES))

    async def ack(self, ids: Sequence[str]) -> None:
        await self._statement(
            lambda conn: conn.execute(
                "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))", (_ids(ids),)
            )
        )

    async def retry(self, ids: Sequence[str], due: float, reason: str) -> None:
        await self._statement(
            lambda conn: conn.execute(
                "UPDATE events SET state = 0, due = ?, attempts = attempts + 1, last_error = ? "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (due, reason, _ids(ids)),
            )
        )

    async def dead_letter(
        self, ids: Sequence[str], reason: str, code: int | None, now: float
    ) -> None:
        selected = _ids(ids)

        def move(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters "
                "(id, pixel, record, created, attempts, code, reason, dead_at) "
                "SELECT id, pixel, record, created, attempts + 1, ?, ?, ? FROM events "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (code, reason, now, selected),
            )
            conn.execute(
                "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))", (selected,)
            )

        await self._run(move)

    async def counts(self, now: float) -> OutboxCounts:
        def read(conn: sqlite3.Connection) -> OutboxCounts:
            counts = OutboxCounts()
            rows = conn.execute(
                "SELECT pixel, state, attempts > 0, COUNT(*), MIN(created) FROM events "
                "GROUP BY pixel, state, attempts > 0"
            ).fetchall()
            for pixel, state, retried, number, oldest in rows:
                per = counts.pixels.setdefault(pixel, PixelCounts())
                if state == _IN_FLIGHT:
                    per.in_flight += number
                    counts.in_flight += number
                elif retried:
                    per.retrying += number
                    counts.retrying += number
                else:
                    per.pending += number
                    counts.pending += number
                age = now - oldest
                per.oldest_age_seconds = max(per.oldest_age_seconds or 0.0, age)
                counts.oldest_age_seconds = max(counts.oldest_age_seconds or 0.0, age)
            for pixel, number in conn.execute(
                "SELECT pixel, COUNT(*) FROM dead_letters GROUP BY pixel"
            ):
                counts.pixels.setdefault(pixel, PixelCounts()).dead = number
                counts.dead += number
            return counts

        return await self._read(read)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def read(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                "SELECT id, record, code, reason, dead_at, attempts FROM dead_letters "
                "ORDER BY dead_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [
                DeadLetter(str(r[0]), Event.from_json(r[1]), r[2], r[3], r[4], r[5]) for r in rows
            ]

        return await self._read(read)

    async def replay(self, pixel: str | None = None, code: int | None = None) -> int:
        where, params = _dead_filter(pixel, code)
        now = time.time()

        def move(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO events (id, pixel, record, created, due) "
                f"SELECT id, pixel, record, created, ? FROM dead_letters {where}",
                (now, *params),
            )
            conn.execute(f"DELETE FROM dead_letters {where}", params)
            return cursor.rowcount

        return await self._run(move)

    async def purge_dead(self, older_than: float) -> int:
        return await self._statement(
            lambda conn: (
                conn.execute("DELETE FROM dead_letters WHERE dead_at < ?", (older_than,)).rowcount
            )
        )

    async def check_writable(self) -> None:
        """Write (and remove) a row big enough to need fresh pages: fails when the disk is full."""

        def probe(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', randomblob(16384))"
            )
            conn.execute("DELETE FROM meta WHERE key = 'probe'")

        await self._run(probe)


_CLAIMABLE = (
    "SELECT '[' || coalesce(group_concat('[' || id || ',' || record || ',' || attempts || ']'),"
    " '') || ']' FROM (SELECT id, record, attempts FROM events WHERE due <= ? "
    "ORDER BY due, id LIMIT ?)"
)


def _locked(step: Callable[..., T], *args: Any) -> T:
    """Run a step that takes the write lock, retrying from ~0.1 ms on while another process
    holds it. SQLite's own busy handler sleeps 1, 2, 5, 10 … ms: a stall for every waiting
    beacon whenever the delivery process writes for a fraction of a millisecond. A statement
    refused for the lock has changed nothing, so it is safe to run again."""
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    pause = 0.0001
    while True:
        try:
            return step(*args)
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.002)  # a long hold is not polled ten thousand times a second


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


def _ids(ids: Sequence[str]) -> str:
    return orjson.dumps([int(i) for i in ids]).decode()


def _settle_all(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in results:
        if future.done():  # the caller was cancelled; the write happened all the same
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
