"""deploy/vm/: Caddy in front of one gateway run by systemd, checked with the real tools.

Caddy serves the very Caddyfile on loopback with its own CA instead of ACME (only the site
address, the upstream's port and test-only global options differ); the gateway runs from the
very gateway.toml and gateway.env (only the outbox path and the token differ). The client
connects from 127.0.0.2 and Caddy reaches the gateway from 127.0.0.1, so the address TikTok
receives tells whose it is. The unit is checked by `systemd-analyze` (no systemd runs here),
and the stop it configures (SIGTERM to the gateway alone) is done by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from tests.conftest import TOKEN, free_port, wait_until
from tests.gateway_process import GatewayProcess

VM = Path(__file__).resolve().parent.parent / "deploy" / "vm"
CLIENT_IP = "127.0.0.2"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


def templated(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in the deploy file"
        text = text.replace(old, new)
    return text


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"this test needs {name} (./scripts/test installs it from Debian)")
    return path


def _unit() -> dict[str, list[str]]:
    """The [Service] section, every value of each key (systemd allows a key more than once)."""
    section, found = "", dict[str, list[str]]()
    for line in (VM / "tiktok-gateway.service").read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def _environment_file() -> dict[str, str]:
    lines = (VM / "gateway.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_caddyfile_is_valid_and_formatted() -> None:
    caddy = _tool("caddy")
    caddyfile = str(VM / "Caddyfile")
    checked = subprocess.run(
        [caddy, "validate", "--adapter", "caddyfile", "--config", caddyfile],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0 and "Valid configuration" in checked.stdout, checked.stderr
    formatted = subprocess.run([caddy, "fmt", caddyfile], capture_output=True, text=True)
    assert formatted.stdout == (VM / "Caddyfile").read_text(), "run: caddy fmt --overwrite"


def test_the_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    """`systemd-analyze verify` needs the ExecStart binary: this venv's stands in for it."""
    analyze = _tool("systemd-analyze")
    [start] = _unit()["ExecStart"]
    binary = start.split()[0]
    unit = tmp_path / "tiktok-gateway.service"
    installed = Path(sys.executable).parent / "tiktok-gateway"
    unit.write_text(templated((VM / unit.name).read_text(), {binary: str(installed)}))
    verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=15", str(unit)],
        capture_output=True, text=True,
    )  # fmt: skip
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert security.returncode == 0 and exposure, security.stdout[-2000:]
    assert float(exposure[1]) <= 1.5


def test_the_unit_and_the_configuration_agree() -> None:
    unit = _unit()
    config = tomllib.loads((VM / "gateway.toml").read_text())
    [start] = unit["ExecStart"]
    assert start.split()[1:] == ["serve", "--config", "/etc/tiktok-gateway/gateway.toml"]
    [state] = unit["StateDirectory"]
    [workdir] = unit["WorkingDirectory"]
    assert workdir == f"/var/lib/{state}"
    assert config["outbox"]["url"].startswith(f"sqlite:///{workdir}/")  # survives restarts
    named = set(re.findall(r'"env:(\w+)"', (VM / "gateway.toml").read_text()))
    assert named and named == set(_environment_file())
    assert unit["KillMode"] == ["mixed"] and unit["KillSignal"] == ["SIGTERM"]
    assert config["server"]["host"] == config["metrics"]["host"] == "127.0.0.1"
    assert config["network"]["trusted_proxies"] == ["127.0.0.1/32"]


@dataclass
class Site:
    url: str
    port: int
    tls: ssl.SSLContext
    gateway: GatewayProcess
    log: Path

    def client(self) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=CLIENT_IP, verify=self.tls)
        return httpx.Client(base_url=self.url, transport=transport, timeout=15)


@pytest.fixture
def site(tmp_path: Path, fake_api: FakeEventsApi) -> Iterator[Site]:
    caddy = _tool("caddy")
    config = tmp_path / "gateway.toml"
    config.write_text(
        templated(
            (VM / "gateway.toml").read_text(),
            {"sqlite:////var/lib/tiktok-gateway/": f"sqlite:///{tmp_path}/"},
        )
    )
    env = {
        **_environment_file(),
        "PIXEL_ACCESS_TOKEN": TOKEN,
        "TIKTOK_API_BASE": fake_api.url,
        "GATEWAY_METRICS_TOKEN": "metrics-token-0123456789",  # /metrics open on the public port
    }
    gateway = GatewayProcess(config, tmp_path / "gateway.log", env=env).start()
    port = free_port()
    options = (
        "{\n\tdebug\n\tadmin off\n\tdefault_bind 127.0.0.1\n\tlocal_certs\n\tskip_install_trust\n"
        f"\thttp_port {free_port()}\n\thttps_port {port}\n"
        f"\tstorage file_system {tmp_path}/caddy\n}}\n\n"
    )
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(
        options
        + templated(
            (VM / "Caddyfile").read_text(),
            {
                "t.shop.example {": f"https://127.0.0.1:{port} {{",
                "127.0.0.1:8080": f"127.0.0.1:{gateway.port}",  # each reverse_proxy's
            },
        )
    )
    home = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    with open(tmp_path / "caddy.log", "wb") as log:
        proxy = subprocess.Popen(
            [caddy, "run", "--adapter", "caddyfile", "--config", str(caddyfile)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **home},
        )  # fmt: skip
    try:
        root = tmp_path / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        wait_until(root.exists, "Caddy's local CA", 15)
        tls = ssl.create_default_context(cafile=root)
        site = Site(f"https://127.0.0.1:{port}", port, tls, gateway, tmp_path / "caddy.log")

        def answers() -> bool:
            assert proxy.poll() is None, (tmp_path / "caddy.log").read_text()
            try:
                with site.client() as client:
                    return client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, "Caddy to answer", 15)
        yield site
    finally:
        proxy.terminate()
        proxy.wait(10)
        gateway.stop()


def test_caddy_forwards_the_client_address_and_hides_metrics(
    site: Site, fake_api: FakeEventsApi
) -> None:
    with site.client() as client:
        answer = client.post(
            "/b",
            json={"event": "AddToCart", "event_id": "vm-1",
                  "page": {"url": "https://shop.example/p"}},
            headers={"Origin": "https://shop.example", "User-Agent": CHROME,
                     "X-Forwarded-For": "203.0.113.66"},  # a client's claim: replaced
        )  # fmt: skip
        assert answer.status_code == 204 and answer.headers["x-accepted"] == "1", answer.text
        bearer = {"Authorization": "Bearer metrics-token-0123456789"}
        for path in ("/metrics", "/%6detrics", "/METRICS", "/metrics?x=1"):
            refused = client.get(path, headers=bearer)
            assert refused.status_code == 404 and "tiktok_gateway_" not in refused.text, path
    direct = httpx.get(f"{site.gateway.url}/metrics", headers=bearer)
    assert direct.status_code == 200 and "tiktok_gateway_" in direct.text  # it would answer
    wait_until(lambda: len(fake_api.accepted_events()) == 1, "the event at TikTok", 15)
    [event] = fake_api.accepted_events()
    assert event["user"]["ip"] == CLIENT_IP  # neither Caddy's address nor the client's claim


def test_a_request_waits_for_a_restarting_gateway(site: Site, fake_api: FakeEventsApi) -> None:
    """Caddy holds a beacon it could not send (lb_try_duration) until the gateway is back:
    sent while the gateway is down, it is stored once the gateway has started again."""
    site.gateway.stop()
    body = b'{"event": "AddToCart", "event_id": "vm-restart", "page": {"url": "https://shop.example/"}}'
    request = (
        f"POST /b HTTP/1.1\r\nHost: 127.0.0.1:{site.port}\r\nOrigin: https://shop.example\r\n"
        f"User-Agent: {CHROME}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    refused = f"dial tcp 127.0.0.1:{site.gateway.port}: connect: connection refused"
    raw = socket.create_connection(("127.0.0.1", site.port), timeout=20)
    with site.tls.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(request)
        wait_until(lambda: refused in site.log.read_text(), "Caddy to find the gateway gone", 10)
        site.gateway.start()
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 204") and b"\r\nX-Accepted: 1\r\n" in answer, answer[:300]
    wait_until(lambda: len(fake_api.accepted_events()) == 1, "the event at TikTok", 15)


def test_sigterm_to_the_gateway_alone_stops_it_and_its_delivery_process(site: Site) -> None:
    """KillMode=mixed: systemd sends SIGTERM to the main process only, and SIGKILLs what is
    left after TimeoutStopSec. The gateway must stop its delivery process well before."""
    [timeout] = _unit()["TimeoutStopSec"]
    gateway = site.gateway
    assert gateway.process is not None
    child = gateway.delivery_pid
    started = time.monotonic()
    os.kill(gateway.pid, signal.SIGTERM)
    # uvicorn ends by raising the signal again once it has stopped: systemd counts an exit
    # by SIGTERM as a clean one (SuccessExitStatus), as it does status 0
    assert gateway.process.wait(float(timeout.removesuffix("s"))) in (0, -signal.SIGTERM)
    assert time.monotonic() - started < float(timeout.removesuffix("s")) / 2
    wait_until(lambda: not Path(f"/proc/{child}").exists(), "the delivery process to exit", 5)
    assert "restarting" not in gateway.log_path.read_text()
