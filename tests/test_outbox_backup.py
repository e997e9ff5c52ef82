"""`tiktok-gateway outbox backup PATH` while a gateway serves and writes (issue 23.10)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

from gateway.storage.outbox.sqlite import SqliteOutbox
from tests.conftest import free_port, run_cli, wait_until
from tests.gateway_process import GatewayProcess, Sender, write_config


async def _stored_ids(path: Path) -> set[str]:
    """Every event id a fresh outbox finds in the file: waiting or dead-lettered."""
    outbox = SqliteOutbox(str(path))
    await outbox.open()
    try:

        def read(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT event_id FROM events UNION SELECT event_id FROM dead_letters"
            )
            return {row[0] for row in rows}

        return await outbox.writer.read(read)
    finally:
        await outbox.close()


def test_a_backup_taken_while_events_are_written_holds_every_acknowledged_one(
    tmp_path: Path,
) -> None:
    # TikTok unreachable: every acknowledged event stays in the outbox, retrying
    config = write_config(
        tmp_path / "gateway.toml",
        api_base=f"http://127.0.0.1:{free_port()}",
        outbox_url=f"sqlite:///{tmp_path}/outbox.sqlite3",
    )
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    sender = Sender(gateway, per_request=10)
    sender.start()
    try:
        wait_until(lambda: len(sender.acked) >= 200, "200 events acknowledged")
        acknowledged = set(sender.acked)  # before the backup starts
        result = run_cli(
            "outbox", "backup", str(tmp_path / "backup.sqlite3"), "--config", str(config)
        )
        written_during = len(sender.acked)
        wait_until(lambda: len(sender.acked) > written_during + 50, "writes after the backup")
    finally:
        sender.stop()
        gateway.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"outbox backed up to {tmp_path / 'backup.sqlite3'}: ")
    backup = tmp_path / "backup.sqlite3"
    assert backup.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    restored = tmp_path / "restored" / "outbox.sqlite3"  # the restore: a copy in place
    restored.parent.mkdir()
    shutil.copyfile(backup, restored)
    ids = asyncio.run(_stored_ids(restored))
    assert acknowledged <= ids, len(acknowledged - ids)
    assert len(ids) < len(sender.acked)  # a snapshot: later writes are not in it


def test_a_second_backup_to_the_same_path_is_refused_unless_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    asyncio.run(_stored_ids(path))  # an empty outbox file
    config = write_config(
        tmp_path / "gateway.toml", api_base="http://127.0.0.1:9", outbox_url=f"sqlite:///{path}"
    )
    target = str(tmp_path / "copy.sqlite3")
    assert run_cli("outbox", "--config", str(config), "backup", target).returncode == 0
    again = run_cli("outbox", "backup", target, "--config", str(config))
    assert again.returncode == 1
    assert (
        again.stderr == f"tiktok-gateway outbox backup: {target} exists (--overwrite replaces it)\n"
    )
    replaced = run_cli("outbox", "backup", target, "--overwrite", "--config", str(config), "--json")
    assert replaced.returncode == 0 and '"schema_version": 3' in replaced.stdout


def test_a_redis_outbox_is_refused_in_one_line_saying_what_to_do(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "gateway.toml", api_base="http://127.0.0.1:9", outbox_url="redis://127.0.0.1:9/0"
    )
    result = run_cli("outbox", "backup", str(tmp_path / "b.sqlite3"), "--config", str(config))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "backed up by Redis itself" in lines[0] and "BGSAVE" in lines[0]
    assert not (tmp_path / "b.sqlite3").exists()
