"""`tiktok-gateway outbox backup PATH`: a consistent copy of the SQLite outbox, while serving.

The copy is taken with SQLite's online backup API beside the running gateway (no lock of
its taken, nothing paused); a Redis outbox is refused in one line that says what backs it
up instead. Restoring: docs/operations.md#backups.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict

from gateway.cli.common import EXIT_FAILED, Commands, add_config, command, settings_of
from gateway.settings import OutboxSettings
from gateway.storage.backend import open_backend
from gateway.storage.outbox.sqlite_backup import BackupRefused, BackupReport


def register(actions: Commands) -> None:
    backup = command(
        actions,
        "backup",
        "copy the SQLite outbox to PATH, consistent while the gateway serves",
        description="Restore: stop the gateway, copy the file to the [outbox] url path "
        "(removing its -wal and -shm files), start the gateway.",
    )
    backup.add_argument("path", metavar="PATH", help="the copy to write (a new file)")
    backup.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")
    backup.add_argument("--json", action="store_true", help="print what was copied as JSON")
    add_config(backup, nested=True)
    backup.set_defaults(run=run)


async def take_backup(outbox: OutboxSettings, path: str, *, replace: bool) -> BackupReport:
    backend = open_backend(outbox, owner=False)  # never opened: the file is copied
    try:
        return await backend.backup(path, replace=replace)
    finally:
        await backend.close()


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args, secrets=False)
    try:
        report = asyncio.run(take_backup(settings.outbox, args.path, replace=args.overwrite))
    except BackupRefused as exc:
        print(f"tiktok-gateway outbox backup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(asdict(report)))
        return 0
    print(
        f"outbox backed up to {report.path}: {report.events} event(s) waiting, "
        f"{report.dead_letters} dead letter(s), schema version {report.schema_version}, "
        f"{report.size_bytes:,} bytes"
    )
    return 0
