"""The command line in real child processes: check-config, send-test, serve."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from tests.conftest import PIXEL, TOKEN, free_port, run_cli, wait_for_events, wait_for_http
from tests.gateway_process import GatewayProcess, write_config

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
ALICE = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"


def test_check_config_prints_the_redacted_configuration() -> None:
    result = run_cli("check-config", env={"TIKTOK_PIXEL_ID": PIXEL, "TIKTOK_ACCESS_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pixels"][0]["id"] == PIXEL
    assert TOKEN not in result.stdout + result.stderr


def test_check_config_on_a_broken_file_names_each_problem(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        'max_event_age_days = "7"\nfavourite_colour = "blue"\n[[pixels]]\nid = "CSHOP0001"\n'
    )
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert lines[0] == "configuration error:"
    assert "max_event_age_days: must be an integer, got str '7'" in lines
    assert "favourite_colour: unknown key" in lines
    assert any(line.startswith("pixels[0].access_token: missing") for line in lines)
    assert "Traceback" not in result.stderr


def test_send_test_prints_the_body_and_the_answer(fake_api: FakeEventsApi) -> None:
    env = {"TIKTOK_PIXEL_ID": PIXEL, "TIKTOK_ACCESS_TOKEN": TOKEN, "TIKTOK_API_BASE": fake_api.url}
    result = run_cli(
        "send-test", "--event", "purchase", "--email", " ALICE_abc@gmail.com ",
        "--url", "https://shop.example/thanks", "--value", "19.99", "--currency", "USD",
        "--test-event-code", "TEST42", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = result.stdout.split("\n", 1)[1].split("TikTok answered:")[0]
    body = json.loads(printed)
    assert body["test_event_code"] == "TEST42"
    assert body["data"][0]["event"] == "Purchase"
    assert body["data"][0]["user"]["email"] == [ALICE]
    assert body == fake_api.requests[-1].body
    assert '"code": 0' in result.stdout
    assert "match-key score: 2/10 (keys: email;" in result.stdout
    assert "alice_abc" not in result.stdout.lower() + result.stderr.lower()
    assert TOKEN not in result.stdout + result.stderr


def test_send_test_with_a_wrong_token_says_so_without_printing_it(fake_api: FakeEventsApi) -> None:
    wrong = "wrong-token-5555"
    env = {"TIKTOK_PIXEL_ID": PIXEL, "TIKTOK_ACCESS_TOKEN": wrong, "TIKTOK_API_BASE": fake_api.url}
    result = run_cli("send-test", "--event", "Lead", "--url", "https://shop.example/", env=env)
    assert result.returncode == 1
    assert '"code": 40105' in result.stdout
    assert "access token was rejected" in result.stderr
    assert wrong not in result.stdout + result.stderr


def test_send_test_rejects_bad_input_clearly(fake_api: FakeEventsApi) -> None:
    env = {"TIKTOK_PIXEL_ID": PIXEL, "TIKTOK_ACCESS_TOKEN": TOKEN, "TIKTOK_API_BASE": fake_api.url}
    result = run_cli(
        "send-test", "--event", "Purchase", "--value", "$5", "--currency", "USD", env=env
    )
    assert result.returncode == 1
    assert "invalid event: properties.value" in result.stderr
    assert not fake_api.requests


def test_serve_from_environment_variables_alone_serves_a_site(
    tmp_path: Path, fake_api: FakeEventsApi
) -> None:
    """The quick start: health, readiness and a site's beacons, with no config file; metrics
    on their own listener only."""
    port, metrics_port = free_port(), free_port()
    env = {
        "TIKTOK_PIXEL_ID": PIXEL,
        "TIKTOK_ACCESS_TOKEN": TOKEN,
        "TIKTOK_PIXEL_ORIGINS": "https://shop.example,https://www.shop.example",
        "TIKTOK_API_BASE": fake_api.url,
    }
    command = ["serve", "--port", str(port), "--metrics-port", str(metrics_port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", *command],
        env={**env, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        health = wait_for_http(f"http://127.0.0.1:{port}/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        missing = httpx.get(f"http://127.0.0.1:{port}/nope")
        assert missing.status_code == 404 and "error" in missing.json()
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metrics.status_code == 200 and "tiktok_gateway_" in metrics.text
        beacon = httpx.post(
            f"http://127.0.0.1:{port}/b",
            content=json.dumps({"event": "purchase", "page": {"url": "https://www.shop.example/"}}),
            headers={"Origin": "https://www.shop.example", "Content-Type": "text/plain",
                     "User-Agent": CHROME},
        )  # fmt: skip
        assert beacon.status_code == 204 and beacon.headers["x-accepted"] == "1"
        [event] = wait_for_events(fake_api, 1)
        assert event["event"] == "Purchase"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so supervisors see the signal
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in output
    assert TOKEN not in output


@pytest.mark.parametrize(
    ("option", "listener", "moved_by"),
    [
        ("--port", "public", "[server] port, --port"),
        ("--metrics-port", "metrics", "--metrics-port"),
    ],
)
def test_a_taken_port_is_named_with_its_listener_and_what_moves_it(
    option: str, listener: str, moved_by: str, tmp_path: Path
) -> None:
    """One line: which listener, which address, which setting (issue 23)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--metrics-port" if option == "--port" else "--port"
        result = run_cli(
            "serve", option, str(port), other, str(free_port()),
            env={"TIKTOK_PIXEL_ID": PIXEL, "TIKTOK_ACCESS_TOKEN": TOKEN,
                 "GATEWAY_OUTBOX_URL": f"sqlite:///{tmp_path / 'outbox.sqlite3'}"},
        )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"cannot listen on 127.0.0.1:{port} (the {listener} listener;"), line
    assert moved_by in line and "in use" in line, line


def test_serve_logs_every_address_it_listens_on(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "gateway.toml", api_base="http://127.0.0.1:9", outbox_url="sqlite:///o.db"
    )
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    try:
        log = (tmp_path / "gateway.log").read_text()
        assert f"listening on http://127.0.0.1:{gateway.port} (public)" in log, log
        assert f"listening on http://127.0.0.1:{gateway.metrics_port} (metrics)" in log, log
    finally:
        gateway.stop()
