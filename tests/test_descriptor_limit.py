"""`max_connections` fits the open-files limit: under `ulimit -n 256` the gateway still
answers a normal client through a flood, and `check-config` says what it lowered."""

from __future__ import annotations

import contextlib
import functools
import re
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from gateway.settings.descriptors import RESERVED, connection_bound
from tests.conftest import PIXEL, TOKEN, run_cli
from tests.gateway_process import GatewayProcess, write_config

LIMIT = 256


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def test_the_bound_keeps_room_for_everything_else() -> None:
    assert connection_bound(2048, LIMIT) == (LIMIT - RESERVED, connection_bound(2048, LIMIT)[1])
    assert "ulimit -n" in (connection_bound(2048, LIMIT)[1] or "")
    assert connection_bound(100, LIMIT) == (100, None)
    assert connection_bound(2048, 20)[0] == 10  # a tiny limit: half of it
    assert connection_bound(2048, 100_000) == (2048, None)


def test_check_config_says_when_the_limit_lowers_max_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"TIKTOK_PIXEL_ID": PIXEL, "TIKTOK_ACCESS_TOKEN": TOKEN}
    assert "max_connections" not in run_cli("check-config", env=env).stderr
    limited = functools.partial(subprocess.run, preexec_fn=_low_limit)
    monkeypatch.setattr("tests.conftest.subprocess.run", limited)
    lowered = run_cli("check-config", env=env)
    assert lowered.returncode == 0, lowered.stderr
    assert re.search(
        r"warning: \[server\] max_connections = 2048, .* is 256: at most 192", lowered.stderr
    )


@pytest.fixture
def limited_gateway(
    tmp_path: Path, fake_api: FakeEventsApi, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayProcess]:
    config = write_config(
        tmp_path / "gateway.toml",
        api_base=fake_api.url,
        outbox_url=f"sqlite:///{tmp_path}/outbox.sqlite3",
    )
    config.write_text(config.read_text() + "[server]\nheader_timeout_seconds = 30\n")
    popen = functools.partial(subprocess.Popen, preexec_fn=_low_limit)
    monkeypatch.setattr("tests.gateway_process.subprocess.Popen", popen)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    yield gateway
    gateway.stop()


def test_a_flood_past_the_open_files_limit_leaves_others_served(
    limited_gateway: GatewayProcess,
) -> None:
    flood: list[socket.socket] = []
    try:
        for n in range(16):  # 640 idle sockets from 16 addresses: past 256 descriptors
            for _ in range(40):
                sock = socket.socket()
                sock.bind((f"127.0.0.{n + 2}", 0))
                with contextlib.suppress(OSError):
                    sock.connect(("127.0.0.1", limited_gateway.port))
                flood.append(sock)
        for _ in range(5):
            started = time.monotonic()
            answer = httpx.get(f"{limited_gateway.url}/healthz", timeout=2)
            assert answer.status_code == 200 and time.monotonic() - started < 0.5
    finally:
        for sock in flood:
            sock.close()
    metrics = httpx.get(limited_gateway.metrics_url).text
    refused = re.findall(
        r'tiktok_gateway_connections_refused_total\{reason="(\w+)"\} (\S+)', metrics
    )
    assert sum(float(n) for _, n in refused) >= 640 - (LIMIT - RESERVED), refused
    log = limited_gateway.log_path.read_text()
    assert 1 <= log.count("connections refused since the last such line") <= 2  # not one each
