"""A consistent copy of the SQLite outbox file, taken while a gateway serves and writes.

SQLite's online backup API copies every page in one step inside one read transaction: the
copy is the file as of one commit (WAL readers do not block the gateway's writers). It is
written beside the target, checked (`quick_check`), made a one-file database (journal mode
DELETE), synced, then renamed into place: a target is a whole backup or is not there.
Restoring is copying it back with the gateway stopped (docs/operations.md#backups).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass

from gateway.core.errors import OutboxUnavailable


class BackupRefused(Exception):
    """A backup this outbox cannot take (a Redis server, a target already there)."""


@dataclass(frozen=True)
class BackupReport:
    path: str
    size_bytes: int
    events: int
    """Events waiting in the copy (pending, retrying or leased)."""
    dead_letters: int
    schema_version: int


def backup_file(source: str, target: str, *, replace: bool = False) -> BackupReport:
    """Copy the outbox file `source` to `target` (blocking; run it off the event loop)."""
    if not os.path.isfile(source):
        raise OutboxUnavailable(f"no outbox file at {source}")
    if os.path.exists(target) and not replace:
        raise BackupRefused(f"{target} exists (--overwrite replaces it)")
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, partial = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.", suffix=".partial", dir=directory
        )  # mode 0600: the copy holds what the outbox holds
    except OSError as exc:
        raise BackupRefused(f"cannot write in {directory}: {exc.strerror}") from None
    os.close(fd)
    try:
        report = _copy(source, partial)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    _sync_directory(directory)
    return BackupReport(target, os.path.getsize(target), *report)


def _copy(source: str, partial: str) -> tuple[int, int, int]:
    """(events, dead letters, schema version) of the copy written to `partial`."""
    try:
        with contextlib.closing(sqlite3.connect(source)) as src:
            src.execute("PRAGMA busy_timeout=5000")
            with contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as dst:
                src.backup(dst)  # pages=-1: every page in one step, one snapshot
                dst.execute("PRAGMA journal_mode=DELETE")
                (check,) = dst.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise OutboxUnavailable(f"the copy failed its check: {check}")
                (version,) = dst.execute("PRAGMA user_version").fetchone()
                events = _count(dst, "events")
                dead = _count(dst, "dead_letters")
        with open(partial, "rb+") as written:
            os.fsync(written.fileno())
    except sqlite3.Error as exc:
        raise OutboxUnavailable(f"cannot back up {source}: {exc}") from None
    return events, dead, int(version)


def _count(conn: sqlite3.Connection, table: str) -> int:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) if exists else 0


def _sync_directory(directory: str) -> None:
    """The rename survives a power cut only once the directory is synced."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
