"""Start-up failures end `serve` and `check-config` in one line naming `[outbox] url` and the
cause, with exit status 3 (docs/commands.md#exit-status), never a traceback (issue 23.3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.storage.outbox.sqlite import SqliteOutbox
from tests.conftest import PIXEL, TOKEN, free_port, make_event, run_cli
from tests.gateway_process import GatewayProcess, write_config

SETTING = "[outbox] url (GATEWAY_OUTBOX_URL): "


def _config(tmp_path: Path, outbox_url: str) -> Path:
    return write_config(
        tmp_path / "gateway.toml", api_base="http://127.0.0.1:9", outbox_url=outbox_url
    )


def _serve(config: Path) -> tuple[int, str]:
    result = run_cli(
        "serve", "--config", str(config), "--port", str(free_port()), "--metrics-port", "0"
    )
    return result.returncode, result.stderr


def _the_one_line(stderr: str) -> str:
    """The line about the outbox; log lines (JSON) and warnings may come before it."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if "[outbox] url" in line]
    assert len(lines) == 1, stderr
    others = [line for line in stderr.splitlines() if line not in lines]
    assert all(line.startswith(('{"time"', "warning: ")) for line in others), stderr
    return lines[0]


def test_an_unusable_outbox_path_is_one_line_with_exit_status_3(tmp_path: Path) -> None:
    status, stderr = _serve(_config(tmp_path, "sqlite:////proc/nope/outbox.sqlite3"))
    assert status == 3, stderr
    assert _the_one_line(stderr) == (
        f"tiktok-gateway: cannot start: {SETTING}"
        "cannot use outbox /proc/nope/outbox.sqlite3: No such file or directory"
    )


def test_an_unreachable_redis_is_one_line_with_exit_status_3(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    status, stderr = _serve(_config(tmp_path, f"redis://127.0.0.1:{port}/0"))
    assert status == 3, stderr
    line = _the_one_line(stderr)
    assert line.startswith(f"tiktok-gateway: cannot start: {SETTING}redis outbox: "), line
    assert f"127.0.0.1:{port}" in line and "refused" in line, line


def test_a_second_gateway_on_the_same_file_is_one_line_with_exit_status_3(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, "sqlite:///outbox.sqlite3")
    first = GatewayProcess(config, tmp_path / "first.log").start()
    try:
        result = run_cli(
            "serve", "--config", str(config), "--port", str(free_port()), "--metrics-port", "0",
            cwd=str(tmp_path),
        )  # fmt: skip
    finally:
        first.stop()
    assert result.returncode == 3, result.stderr
    assert _the_one_line(result.stderr) == (
        f"tiktok-gateway: cannot start: {SETTING}outbox outbox.sqlite3 is in use by another "
        "gateway process (use a redis:// outbox to run several replicas)"
    )


def test_check_config_opens_the_outbox_and_fails_in_one_line(tmp_path: Path) -> None:
    result = run_cli("check-config", "--config", str(_config(tmp_path, "sqlite:////proc/x/o.db")))
    assert result.returncode == 3, result.stderr
    assert "configuration OK" not in result.stderr
    assert _the_one_line(result.stderr) == (
        f"{SETTING}cannot use outbox /proc/x/o.db: No such file or directory"
    )
    as_json = run_cli(
        "check-config", "--json", "--config", str(_config(tmp_path, "sqlite:////proc/x/o.db"))
    )
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 3 and report["ok"] is False
    assert report["outbox"]["opened"] is False and SETTING in report["outbox"]["error"]


@pytest.fixture
def owned(tmp_path: Path) -> Iterator[Path]:
    """An outbox file held by its owner (a gateway's lock) with two events waiting."""
    path = tmp_path / "owned.sqlite3"
    outbox = SqliteOutbox(str(path))
    loop = asyncio.new_event_loop()

    async def fill() -> None:
        await outbox.open()
        await outbox.add([make_event(1), make_event(2)])

    loop.run_until_complete(fill())
    yield path
    loop.run_until_complete(outbox.close())
    loop.close()


def test_check_config_opens_a_running_gateways_outbox_without_its_lock(
    tmp_path: Path, owned: Path
) -> None:
    config = _config(tmp_path, f"sqlite:///{owned}")
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"outbox sqlite:///{owned}: opened (2 event(s) waiting, 0 dead letter(s))" in (
        result.stderr
    )
    assert result.stderr.strip().endswith("configuration OK")
    report = json.loads(run_cli("check-config", "--json", "--config", str(config)).stdout)
    assert report["ok"] is True and report["outbox"]["waiting"] == 2
    assert report["configuration"]["pixels"][0]["id"] == PIXEL
    assert TOKEN not in json.dumps(report)
    skipped = run_cli(
        "check-config", "--no-outbox", "--config", str(_config(tmp_path, "sqlite:////proc/x/o.db"))
    )
    assert skipped.returncode == 0 and "opened" not in skipped.stderr, skipped.stderr
