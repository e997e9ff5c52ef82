"""`outbox`, `replay` and `purge-dead` in real child processes, beside an owner of the outbox."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.storage.outbox.sqlite import SqliteOutbox
from tests.conftest import OTHER_PIXEL, PIXEL, TOKEN, make_event, run_cli


def write_config(path: Path, other_token: str = TOKEN) -> Path:
    """Two pixels on the outbox beside `path`; the second's token as given."""
    path.write_text(
        f"""
[outbox]
url = "sqlite:///{path.parent}/outbox.sqlite3"
[[pixels]]
id = "{PIXEL}"
access_token = "{TOKEN}"
[[pixels]]
id = "{OTHER_PIXEL}"
access_token = "{other_token}"
"""
    )
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "gateway.toml")


@pytest.fixture
def owned_outbox(tmp_path: Path) -> Iterator[SqliteOutbox]:
    """The outbox as a running gateway holds it: open, locked, with pending and dead events."""
    outbox = SqliteOutbox(str(tmp_path / "outbox.sqlite3"))
    loop = asyncio.new_event_loop()

    async def fill() -> None:
        await outbox.open()
        await outbox.add([make_event(i) for i in range(4)] + [make_event(9, pixel=OTHER_PIXEL)])
        claimed = await outbox.claim(10, time.time())
        ids = {c.decode().event_id: c.id for c in claimed}
        await outbox.dead_letter(
            [ids[f"ev-{PIXEL}-0"]],
            "code 40002: Invalid value",
            40002,
            time.time(),
            request_id="20261206010203ABCDEF",
        )
        await outbox.dead_letter(
            [ids[f"ev-{OTHER_PIXEL}-9"]], "code 40105: token", 40105, time.time()
        )
        await outbox.retry([ids[f"ev-{PIXEL}-1"]], time.time() + 600, "HTTP 503")

    loop.run_until_complete(fill())
    yield outbox
    loop.run_until_complete(outbox.close())
    loop.close()


def test_outbox_shows_counts_per_pixel(config: Path, owned_outbox: SqliteOutbox) -> None:
    result = run_cli("outbox", "--config", str(config), "--json", "--dead", "10")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    counts = report["counts"]
    assert (counts["in_flight"], counts["retrying"], counts["dead"]) == (2, 1, 2)
    assert counts["pixels"][OTHER_PIXEL]["dead"] == 1
    reasons = {d["event_id"]: d["reason"] for d in report["dead_letters"]}
    assert reasons[f"ev-{PIXEL}-0"] == "code 40002: Invalid value"
    request_ids = {d["event_id"]: d["request_id"] for d in report["dead_letters"]}
    assert request_ids == {f"ev-{PIXEL}-0": "20261206010203ABCDEF", f"ev-{OTHER_PIXEL}-9": None}
    table = run_cli("outbox", "--config", str(config))
    assert table.returncode == 0 and PIXEL in table.stdout and "retrying" in table.stdout
    listed = run_cli("outbox", "--config", str(config), "--dead", "10").stdout
    assert "(TikTok request_id 20261206010203ABCDEF)" in listed


def test_replay_moves_dead_letters_back_by_pixel_and_code(
    config: Path, owned_outbox: SqliteOutbox
) -> None:
    result = run_cli("replay", "--config", str(config), "--code", "40105")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 dead letter(s) moved back to pending"
    again = run_cli("replay", "--config", str(config), "--pixel", PIXEL)
    assert again.stdout.strip() == "1 dead letter(s) moved back to pending"
    report = json.loads(run_cli("outbox", "--config", str(config), "--json").stdout)
    assert report["counts"]["dead"] == 0 and report["counts"]["pending"] == 2


def test_purge_dead_deletes_only_old_letters(config: Path, owned_outbox: SqliteOutbox) -> None:
    kept = run_cli("purge-dead", "--config", str(config), "--older-than", "1")
    assert kept.stdout.strip() == "0 dead letter(s) older than 1 day(s) deleted"
    gone = run_cli("purge-dead", "--config", str(config), "--older-than", "0")
    assert gone.stdout.strip() == "2 dead letter(s) older than 0 day(s) deleted"
    negative = run_cli("purge-dead", "--config", str(config), "--older-than", "-3")
    assert negative.returncode == 2 and "--older-than" in negative.stderr


def test_operator_commands_fail_clearly_without_an_outbox(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[outbox]\nurl = "redis://127.0.0.1:9/0"\n[[pixels]]\nid = "{PIXEL}"\naccess_token = "t"\n'
    )
    result = run_cli("outbox", "--config", str(config))
    assert result.returncode == 3  # documented: the outbox cannot be used (issue 23.3)
    assert result.stderr.startswith("[outbox] url (GATEWAY_OUTBOX_URL): redis outbox: ")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_replay_and_purge_dead_dry_runs_count_and_change_nothing(
    config: Path, owned_outbox: SqliteOutbox
) -> None:
    """`--dry-run` says what would move or go; `--json` prints it (issue 23.6)."""
    replay = run_cli("replay", "--config", str(config), "--pixel", PIXEL, "--dry-run")
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.strip() == (
        "1 dead letter(s) would move back to pending (dry run: nothing changed)"
    )
    as_json = run_cli("replay", "--config", str(config), "--dry-run", "--json")
    assert json.loads(as_json.stdout) == {"dry_run": True, "replayed": 2}
    purge = run_cli("purge-dead", "--config", str(config), "--older-than", "0", "--dry-run")
    assert purge.stdout.strip() == (
        "2 dead letter(s) older than 0 day(s) would be deleted (dry run: nothing changed)"
    )
    kept = run_cli(
        "purge-dead", "--config", str(config), "--older-than", "1", "--json", "--dry-run"
    )
    assert json.loads(kept.stdout) == {"dry_run": True, "older_than_days": 1.0, "deleted": 0}
    report = json.loads(run_cli("outbox", "--config", str(config), "--json").stdout)
    assert report["counts"]["dead"] == 2 and report["counts"]["pending"] == 0
    done = run_cli("replay", "--config", str(config), "--json")
    assert json.loads(done.stdout) == {"dry_run": False, "replayed": 2}


def test_read_only_commands_need_no_token(tmp_path: Path, owned_outbox: SqliteOutbox) -> None:
    """A pixel whose token variable is unset here does not stop `outbox`, `postbacks`,
    `replay` or `purge-dead` (they send nothing); `check-config` still names it."""
    config = write_config(tmp_path / "unset.toml", "env:TOKEN_OF_ANOTHER_TEAM")
    for args in (
        ("outbox",),
        ("postbacks", "crm"),
        ("replay", "--dry-run"),
        ("purge-dead", "--older-than", "30", "--dry-run"),
    ):
        result = run_cli(*args, "--config", str(config))
        assert result.returncode == 0, (args, result.stderr)
    check = run_cli("check-config", "--config", str(config))
    assert check.returncode == 2
    assert "TOKEN_OF_ANOTHER_TEAM is not set or empty" in check.stderr
