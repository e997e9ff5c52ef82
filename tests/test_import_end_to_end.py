"""File imports end to end: the command and the HTTP upload into a real outbox, delivered
by a real gateway to the fake Events API; `kill -9` half-way and `--resume`."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from tests.conftest import TOKEN, GatewayServer, run_cli, wait_until

OFFLINE = "7301234567890123456"
API_KEY = "import-api-key-0123456789"
ROWS = 25_000
NOW = int(time.time())

ENDLESS_LINE_GZIP = gzip.compress(b"email,event,timestamp\na@example.com," + b"x" * 20_000_000)
"""20 MB in one line, 20 KB compressed: refused at the line limit, never read whole."""
TRUNCATED_GZIP = gzip.compress(
    b"email,event,timestamp\n" + b"a@example.com,Purchase,1700000000\n" * 2000
)[:-200]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_rows(path: Path, rows: int = ROWS) -> list[str]:
    """An offline export: one purchase per row, email and phone on every row."""
    lines = ["email,phone,event,timestamp,value,currency,order_id"]
    for n in range(rows):
        lines.append(
            f"Customer{n}@Example.com,+1 213 555 {n % 10000:04d},Purchase,"
            f"{NOW - 3600 - n},{n % 97}.5,USD,order-{n}"
        )
    path.write_text("\n".join(lines) + "\n")
    return lines


def write_config(path: Path, outbox: Path, api_base: str) -> Path:
    path.write_text(
        f"""
api_base = "{api_base}"
[outbox]
url = "sqlite:///{outbox}"
[server_api]
api_keys = ["{API_KEY}"]
[[pixels]]
id = "{OFFLINE}"
event_source = "offline"
access_token = "{TOKEN}"
"""
    )
    return path


def import_from_stdin(
    tmp_path: Path, fake_api: FakeEventsApi, **popen: Any
) -> tuple[list[str], Path, Path, subprocess.Popen[bytes]]:
    """The export's lines, the outbox, the config, and `import -` with 2 workers started on
    them (nothing written to its stdin yet)."""
    lines = write_rows(tmp_path / "orders.csv")
    outbox = tmp_path / "outbox.sqlite3"
    config = write_config(tmp_path / "gateway.toml", outbox, fake_api.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "GATEWAY_"))}
    popen.setdefault("stderr", subprocess.DEVNULL)
    importer = subprocess.Popen(
        [sys.executable, "-m", "gateway", "import", "-", "--config", str(config), "--jobs", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        **popen,
    )
    return lines, outbox, config, importer


def children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def stored(outbox: Path) -> list[tuple[str, str]]:
    """(event_id, data) of every event in a SQLite outbox, read beside its writers."""
    with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as conn:
        return list(conn.execute("SELECT event_id, data FROM events ORDER BY id"))


def offline_gateway(serve: Callable[..., GatewayServer], outbox: Path) -> GatewayServer:
    return serve(
        pixels=[{"id": OFFLINE, "access_token": TOKEN, "event_source": "offline"}],
        outbox={"url": f"sqlite:///{outbox}"},
        server_api={"api_keys": [API_KEY]},
        delivery={"linger_ms": 0},
    )


def test_25000_rows_arrive_as_25_requests_of_1000_offline_events_hashed_once(
    tmp_path: Path, fake_api: FakeEventsApi, serve_gateway: Callable[..., GatewayServer]
) -> None:
    write_rows(tmp_path / "orders.csv")
    outbox = tmp_path / "outbox.sqlite3"
    config = write_config(tmp_path / "gateway.toml", outbox, fake_api.url)
    done = run_cli("import", str(tmp_path / "orders.csv"), "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["rows"], summary["events"], summary["rejected"]) == (ROWS, ROWS, 0)
    assert summary["match_key_coverage"]["email"] == 1.0
    assert "Customer" not in done.stdout + done.stderr

    offline_gateway(serve_gateway, outbox)
    wait_until(lambda: len(fake_api.accepted_events()) >= ROWS, "all rows delivered", within=60.0)
    requests = fake_api.requests
    assert [len(r.body["data"]) for r in requests] == [1000] * 25
    assert {(r.body["event_source"], r.body["event_source_id"]) for r in requests} == {
        ("offline", OFFLINE)
    }
    events = sorted(fake_api.accepted_events(), key=lambda e: e["properties"]["order_id"])
    first = next(e for e in events if e["properties"]["order_id"] == "order-0")
    assert first["user"]["email"] == [sha("customer0@example.com")]  # hashed once
    assert first["user"]["phone"] == [sha("+12135550000")]
    assert len({e["event_id"] for e in events}) == ROWS


def test_kill_9_half_way_then_resume_stores_every_row_exactly_once(
    tmp_path: Path, fake_api: FakeEventsApi
) -> None:
    lines, outbox, config, importer = import_from_stdin(tmp_path, fake_api)
    assert importer.stdin is not None
    half = 1 + ROWS // 2 + 500  # the header, 12,500 rows and 500 of the next chunk
    importer.stdin.write(("\n".join(lines[:half]) + "\n").encode())
    importer.stdin.flush()
    try:  # it has stored 12 chunks, read the 13th and waits for its end: kill it there
        wait_until(
            lambda: outbox.exists() and len(stored(outbox)) >= 12_000, "12 chunks", within=60.0
        )
        workers = children(importer.pid)
        assert len(workers) >= 2  # its parsing processes
    finally:
        os.kill(importer.pid, signal.SIGKILL)
        importer.wait(10)
        importer.stdin.close()
    assert len(stored(outbox)) == 12_000
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers gone")

    resumed = run_cli(
        "import", str(tmp_path / "orders.csv"), "--config", str(config), "--resume", "--json"
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert (summary["resumed_rows"], summary["events"]) == (12_000, ROWS - 12_000)
    rows = stored(outbox)
    assert len(rows) == ROWS and len({event_id for event_id, _ in rows}) == ROWS
    orders = sorted(json.loads(data)["properties"]["order_id"] for _, data in rows)
    assert orders == sorted(f"order-{n}" for n in range(ROWS))

    again = run_cli("import", str(tmp_path / "orders.csv"), "--config", str(config), "--resume")
    assert again.returncode == 0 and len(stored(outbox)) == ROWS  # nothing left to store
    anew = run_cli("import", str(tmp_path / "orders.csv"), "--config", str(config))
    assert anew.returncode == 0
    rows = stored(outbox)  # without --resume: stored again, with the same event ids
    assert len(rows) == 2 * ROWS and len({event_id for event_id, _ in rows}) == ROWS


def test_ctrl_c_with_worker_processes_stops_cleanly_and_resume_finishes(
    tmp_path: Path, fake_api: FakeEventsApi
) -> None:
    """Ctrl-C reaches the whole foreground group: the workers ignore it, the command says how
    to go on and exits 130, no process is left, and --resume stores the rest exactly once."""
    lines, outbox, config, importer = import_from_stdin(
        tmp_path,
        fake_api,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a shell gives a pipeline
    )
    assert importer.stdin is not None and importer.stderr is not None
    importer.stdin.write(("\n".join(lines[: 1 + ROWS // 2]) + "\n").encode())
    importer.stdin.flush()
    wait_until(lambda: outbox.exists() and len(stored(outbox)) >= 10_000, "10 chunks", 60.0)
    workers = children(importer.pid)
    os.killpg(importer.pid, signal.SIGINT)  # the terminal's Ctrl-C: every process of the group
    importer.stdin.close()  # as the interrupted `zcat … |` before it
    assert importer.wait(30) == 130
    errors = importer.stderr.read().decode()
    importer.stderr.close()
    assert "run the same command with --resume" in errors and "Traceback" not in errors
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers gone")

    resumed = run_cli(
        "import", str(tmp_path / "orders.csv"), "--config", str(config), "--resume", "--json"
    )
    assert resumed.returncode == 0, resumed.stderr
    rows = stored(outbox)
    assert len(rows) == ROWS and len({event_id for event_id, _ in rows}) == ROWS


def test_the_http_upload_gives_the_same_result_as_the_command(
    tmp_path: Path, fake_api: FakeEventsApi, serve_gateway: Callable[..., GatewayServer]
) -> None:
    path = tmp_path / "orders.csv"
    write_rows(path, 5000)
    by_command = tmp_path / "command.sqlite3"
    config = write_config(tmp_path / "gateway.toml", by_command, fake_api.url)
    assert run_cli("import", str(path), "--config", str(config)).returncode == 0

    by_upload = tmp_path / "upload.sqlite3"
    gateway = offline_gateway(serve_gateway, by_upload)
    answer = httpx.post(
        f"{gateway.url}/v1/imports",
        params={"pixel": OFFLINE},
        content=path.read_bytes(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "text/csv"},
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "stored" and body["summary"]["events"] == 5000
    shown = httpx.get(
        f"{gateway.url}/v1/imports/{body['import_id']}",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert shown.status_code == 200 and shown.json()["summary"]["events"] == 5000
    wait_until(lambda: len(fake_api.accepted_events()) >= 5000, "the upload delivered", within=60.0)
    delivered = {e["event_id"]: e for e in fake_api.accepted_events()}
    by_cli = {event_id: json.loads(data) for event_id, data in stored(by_command)}
    assert delivered.keys() == by_cli.keys()
    some = next(iter(by_cli))
    assert delivered[some]["user"] == by_cli[some]["user"]
    assert delivered[some]["properties"] == by_cli[some]["properties"]


def test_a_gzip_bomb_stops_at_the_decompressed_limit(
    serve_gateway: Callable[..., GatewayServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21.8: a small gzip of a huge CSV ran for seconds and gigabytes. Past the
    decompressed limit (here lowered to 1 MB) the upload is a 400 naming it."""
    from gateway.ingest.sources.imports import readers

    monkeypatch.setattr(readers, "MAX_DECOMPRESSED", 1_000_000)
    gateway = serve_gateway(
        pixels=[{"id": OFFLINE, "access_token": TOKEN, "event_source": "offline"}],
        server_api={"api_keys": [API_KEY]},
    )
    rows = "".join(f"a{n}@example.com,Purchase,{NOW - 60}\n" for n in range(100_000))
    bomb = gzip.compress(("email,event,timestamp\n" + rows).encode())
    answer = httpx.post(
        f"{gateway.url}/v1/imports", content=bomb, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert answer.status_code == 400, answer.text
    assert "decompresses to more than 1000000 bytes" in answer.json()["message"]


@pytest.mark.parametrize(
    ("params", "body", "headers", "status", "field"),
    [
        ({}, b"email,event,timestamp\n", {}, 401, None),
        ({"pixel": "nope"}, b"email,event,timestamp\n", None, 400, "pixel"),
        ({"colour": "red"}, b"x", None, 400, "colour"),
        ({"map": "E-Mail"}, b"x", None, 400, "map"),
        ({"dry_run": "perhaps"}, b"x", None, 400, "dry_run"),
        ({"max_age_days": "90"}, b"x", None, 400, "max_age_days"),
        ({"currency": "EURO"}, b"x", None, 400, "currency"),
        ({}, b"", None, 400, "body"),
        ({}, b"email,timestamp\na@example.com,1\n", None, 400, "event"),
        ({}, b"\xff\xfe\x00bad", None, 400, "body"),
        ({}, b"x" * (2 * 1_048_576), None, 413, "body"),
        ({}, TRUNCATED_GZIP, None, 400, "body"),  # was a 500 (EOFError)
        ({}, TRUNCATED_GZIP[:30] + b"\xff" * 40, None, 400, "body"),  # damaged: zlib.error
        ({"max_age_days": "²"}, b"x", None, 400, "max_age_days"),  # '²'.isdigit(): was a 500
        ({}, ENDLESS_LINE_GZIP, None, 400, "body"),  # one endless line: read whole before
    ],
)
def test_uploads_are_refused_with_4xx_json_never_500(
    tmp_path: Path,
    serve_gateway: Callable[..., GatewayServer],
    params: dict[str, str],
    body: bytes,
    headers: dict[str, str] | None,
    status: int,
    field: str | None,
) -> None:
    gateway = serve_gateway(
        pixels=[{"id": OFFLINE, "access_token": TOKEN, "event_source": "offline"}],
        server_api={"api_keys": [API_KEY]},
        imports={"max_upload_mb": 1},
    )
    auth = {"Authorization": f"Bearer {API_KEY}"} if headers is None else headers
    answer = httpx.post(f"{gateway.url}/v1/imports", params=params, content=body, headers=auth)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json().get("field") == field
    missing = httpx.get(f"{gateway.url}/v1/imports/unknown", headers=auth)
    assert missing.status_code == (401 if status == 401 else 404)


def test_an_upload_posted_again_with_resume_stores_nothing_twice(
    tmp_path: Path, fake_api: FakeEventsApi, serve_gateway: Callable[..., GatewayServer]
) -> None:
    path = tmp_path / "orders.csv"
    write_rows(path, 2500)
    gateway = offline_gateway(serve_gateway, tmp_path / "outbox.sqlite3")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    url = f"{gateway.url}/v1/imports"
    first = httpx.post(url, content=path.read_bytes(), headers=auth, timeout=60)
    again = httpx.post(url, params={"resume": "true"}, content=path.read_bytes(), headers=auth)
    assert first.status_code == again.status_code == 202
    assert first.json()["summary"]["events"] == 2500
    assert (again.json()["summary"]["resumed_rows"], again.json()["summary"]["events"]) == (
        2500,
        0,
    )
    wait_until(lambda: len(fake_api.accepted_events()) >= 2500, "the upload delivered", within=60.0)
    assert len({e["event_id"] for e in fake_api.accepted_events()}) == 2500
