"""No request grows the gateway's memory without bound: a gigabyte of chunked trailers, or
requests pipelined in a loop on one connection, leave its RSS within 20 MB of the start."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from tests.gateway_process import GatewayProcess, write_config

MB = 1 << 20


@pytest.fixture
def gateway(tmp_path: Path, fake_api: FakeEventsApi) -> Iterator[GatewayProcess]:
    config = write_config(
        tmp_path / "gateway.toml",
        api_base=fake_api.url,
        outbox_url=f"sqlite:///{tmp_path}/outbox.sqlite3",
    )
    process = GatewayProcess(config, tmp_path / "gateway.log").start()
    for _ in range(20):  # warm up: what a normal client makes it allocate
        httpx.get(f"{process.url}/healthz")
    yield process
    process.stop()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss(threading.Thread):
    """The highest RSS of a process, sampled until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.start_rss = pid, _rss(pid)
        self.peak = self.start_rss
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            with contextlib.suppress(OSError, AssertionError):
                self.peak = max(self.peak, _rss(self.pid))

    def stop(self) -> int:
        self._stop_event.set()
        self.join(5)
        self.peak = max(self.peak, _rss(self.pid))
        return self.peak - self.start_rss


def test_a_gigabyte_of_trailers_is_refused_before_memory_grows(gateway: GatewayProcess) -> None:
    watch = PeakRss(gateway.pid)
    watch.start()
    line = b"X-T: " + b"a" * 8185 + b"\r\n"  # 8 KB a line
    sent = 0
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
        )
        block = line * 128  # 1 MB
        with contextlib.suppress(OSError):
            while sent < 1024 * MB:
                sock.sendall(block)
                sent += len(block)
    grown = watch.stop()
    assert sent < 1024 * MB, "the gateway read a gigabyte of trailers"
    assert grown < 20 * MB, f"RSS grew by {grown / MB:.0f} MB"
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def test_requests_pipelined_in_a_loop_are_read_only_as_they_are_answered(
    gateway: GatewayProcess,
) -> None:
    watch = PeakRss(gateway.pid)
    watch.start()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    stop = threading.Event()
    answered = 0

    def read(sock: socket.socket) -> None:
        nonlocal answered
        with contextlib.suppress(OSError):
            while not stop.is_set() and (data := sock.recv(65536)):
                answered += data.count(b"HTTP/1.1 200")

    def write(sock: socket.socket) -> None:
        block = request * 2000
        with contextlib.suppress(OSError):
            while not stop.is_set():
                sock.sendall(block)  # blocks while the gateway does not read

    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        threads = [threading.Thread(target=f, args=(sock,), daemon=True) for f in (read, write)]
        for thread in threads:
            thread.start()
        others, until = [], time.monotonic() + 4
        while time.monotonic() < until:
            started = time.monotonic()
            status = httpx.get(f"{gateway.url}/healthz", timeout=5).status_code
            others.append((status, time.monotonic() - started))
        stop.set()
        sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)
    grown = watch.stop()
    assert grown < 20 * MB, f"RSS grew by {grown / MB:.0f} MB"
    assert answered > 100  # the pipelined requests are answered, only not read ahead
    assert all(status == 200 and took < 0.5 for status, took in others), others
