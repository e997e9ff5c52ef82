"""SQLite's one writer thread with group commit, shared by every operation of the outbox.

Every operation is queued to a single thread, which takes everything waiting (up to
`max_group` operations), runs it as briefly as the file's write lock allows, and only then
answers each caller. Durability therefore costs one fsync per group, not one per request.
sqlite3 errors are translated into `OutboxUnavailable` here, the one boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.core.errors import OutboxUnavailable

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], T]
_STOP = object()
_LOCK_WAIT_SECONDS = 5.0
_ADD, _READ, _STATEMENT, _TRANSACTION = range(4)


class GroupCommitWriter:
    """Owns the connection and the thread; `submit` hands it work and awaits the answer."""

    def __init__(self, conn: sqlite3.Connection, add_sql: str, *, max_group: int = 512) -> None:
        self._conn = conn
        self._add_sql = add_sql
        self._max_group = max_group
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._running = True
        """Cleared when the thread ends: cheaper to read for every write than `is_alive()`."""
        self._thread.start()
        self.commits = 0
        """Transactions committed: fewer than operations when group commit works."""

    @property
    def alive(self) -> bool:
        return self._running

    async def close(self) -> None:
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def add(self, rows_json: bytes) -> asyncio.Future[None]:
        """Insert rows given as one JSON array of arrays (see the outbox's insert); await the
        future returned. (No coroutine of its own: every beacon calls it.)"""
        future: asyncio.Future[None] = self._enqueue(_ADD, rows_json)
        return future

    async def read(self, operation: Operation[T]) -> T:
        """Run a read outside any write transaction, so it never holds the write lock that
        the gateway's group commits (or the delivery process) wait for. It sees the state
        before the writes of its own group."""
        result: T = await self._submit(_READ, operation)
        return result

    async def statement(self, operation: Operation[T]) -> T:
        """Run an operation that is ONE write statement, autocommitted."""
        result: T = await self._submit(_STATEMENT, operation)
        return result

    async def transaction(self, operation: Operation[T]) -> T:
        """Run several statements in one transaction."""
        result: T = await self._submit(_TRANSACTION, operation)
        return result

    async def _submit(self, kind: int, work: Any) -> Any:
        return await self._enqueue(kind, work)

    def _enqueue(self, kind: int, work: Any) -> asyncio.Future[Any]:
        if not self._running:
            raise OutboxUnavailable("the outbox is not open")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((kind, work, future))
        return future

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._running = False

    def _serve(self) -> None:
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
            self._run_group(group)
            if stop_after:
                break
        self._conn.close()

    def _run_group(self, group: list[Any]) -> None:
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
        conn = self._conn
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for kind, work, future in group:
            if kind == _READ:
                results.append(_apply(future, work, conn))
        adds = [(work, future) for kind, work, future in group if kind == _ADD]
        if adds:
            # each add is a JSON array already: splice them into one, without re-encoding
            payload = (b"[" + b",".join(rows[1:-1] for rows, _ in adds) + b"]").decode()
            outcome = _apply(None, self._write, conn.execute, self._add_sql, (payload,))
            results.extend((future, None, outcome[2]) for _, future in adds)
        for kind, work, future in group:
            if kind == _STATEMENT:
                results.append(_apply(future, self._write, work, conn))
            elif kind == _TRANSACTION:
                results.append(_apply(future, self._transaction, work))
        if conn.in_transaction:  # never carry a lock into the wait for the next group
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(_settle_all, results)

    def _write(self, step: Callable[..., T], *args: Any) -> T:
        """One autocommitted write statement: one commit."""
        result = locked(step, *args)
        self.commits += 1
        return result

    def _transaction(self, operation: Operation[T]) -> T:
        conn = self._conn
        locked(conn.execute, "BEGIN IMMEDIATE")
        try:
            result = operation(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        return result


def _apply(future: Any, step: Callable[..., Any], *args: Any) -> tuple[Any, Any, Any]:
    """(future, result, error) of one step; the writer must outlive any one of them."""
    try:
        return future, step(*args), None
    except sqlite3.Error as exc:
        return future, None, OutboxUnavailable(f"outbox write failed: {exc}")
    except Exception as exc:
        return future, None, exc


def locked(step: Callable[..., T], *args: Any) -> T:
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


def _settle_all(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in results:
        if future.done():  # the caller was cancelled; the write happened all the same
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
