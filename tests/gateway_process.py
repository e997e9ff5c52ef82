"""A gateway running as a real child process, for tests about crashes and restarts."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import PIXEL, TOKEN, free_port

API_KEY = "test-api-key-0123456789"


def write_config(
    path: Path, *, api_base: str, outbox_url: str, lease_seconds: float = 3, **delivery: Any
) -> Path:
    options = {
        "batch_size": 50,
        "linger_ms": 10,
        "concurrency": 2,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.5,
        "breaker_cooldown_seconds": 0.2,
        "shutdown_grace_seconds": 2,
        **delivery,
    }
    lines = "\n".join(f"{k} = {v!r}" for k, v in options.items())
    path.write_text(
        f"""
api_base = "{api_base}"
api_timeout_seconds = 3
[outbox]
url = "{outbox_url}"
lease_seconds = {lease_seconds}
[delivery]
{lines}
[server_api]
api_keys = ["{API_KEY}"]
[[pixels]]
id = "{PIXEL}"
access_token = "{TOKEN}"
"""
    )
    return path


class GatewayProcess:
    def __init__(
        self,
        config: Path,
        log: Path,
        port: int | None = None,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        """`args` go after `serve`'s own; `env` adds to a copy without TIKTOK_/GATEWAY_ ones."""
        self.config = config
        self.log_path = log
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.args = args
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> GatewayProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "GATEWAY_"))}
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.config),
                 "--port", str(self.port), "--metrics-port", str(self.metrics_port), *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.config.parent,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def delivery_pid(self) -> int:
        """The delivery child's pid (`serve` delivers from a child process)."""
        children = [
            int(pid)
            for task in Path(f"/proc/{self.pid}/task").iterdir()
            for pid in (task / "children").read_text().split()
        ]  # the delivery child, and multiprocessing's resource tracker
        spawned = [p for p in children if b"spawn_main" in _cmdline(p)]
        assert len(spawned) == 1, children
        return spawned[0]

    def kill9(self) -> None:
        """SIGKILL the gateway; its orphaned delivery child must notice and exit by itself."""
        assert self.process is not None
        child = self.delivery_pid
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and _state(child) != "Z":
            assert time.monotonic() < deadline, "the orphaned delivery process did not exit"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Sender(threading.Thread):
    """Posts events with unique ids to a gateway until stopped; remembers which got a 2xx."""

    def __init__(
        self,
        gateway: GatewayProcess | Any,
        *,
        per_request: int = 20,
        prefix: str = "k",
        verify: ssl.SSLContext | bool = True,
        api_key: str = API_KEY,
    ) -> None:
        """`gateway`: anything with a `url` (a gateway, or a proxy in front of several)."""
        super().__init__(daemon=True)
        self.gateway = gateway
        self.verify = verify
        self.api_key = api_key
        self.per_request = per_request
        self.prefix = prefix
        self.sent: list[str] = []
        self.acked: list[str] = []
        self.failures = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        number = 0
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(timeout=5, headers=headers, verify=self.verify) as client:
            while not self._stop_event.is_set():
                ids = [f"{self.prefix}-{number + i}" for i in range(self.per_request)]
                number += self.per_request
                body = {
                    "events": [
                        {
                            "event": "Purchase",
                            "event_id": i,
                            "page": {"url": "https://shop.example/"},
                        }
                        for i in ids
                    ]
                }
                self.sent.extend(ids)
                try:
                    response = client.post(f"{self.gateway.url}/v1/events", json=body)
                except httpx.TransportError:
                    self.failures += 1
                    time.sleep(0.02)
                    continue
                if response.status_code == 202:
                    self.acked.extend(ids)
                else:
                    self.failures += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def _state(pid: int) -> str:
    """A process's state letter (Z: exited, not yet reaped), or "Z" if it is gone already."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def _cmdline(pid: int) -> bytes:
    try:  # empty for a zombie, gone once reaped
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
