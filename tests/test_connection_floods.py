"""One client cannot deny service to everyone: floods of idle and dripping connections from
other addresses (127.0.0.2…, all routed to lo) leave a normal client served at once."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import PIXEL, TOKEN, GatewayServer

SHOP = "http://shop.test"
BEACON = b'{"event":"AddToCart","event_id":"flood-%d","page":{"url":"http://shop.test/p"}}'
LIMITS = {
    "header_timeout_seconds": 30.0,  # the idle flood is not simply timed out here
    "body_timeout_seconds": 1.0,
    "min_body_rate": 1024,
    "max_connections": 120,
    "max_connections_per_client": 16,
}
DRIP_HEAD = (
    b"POST /b HTTP/1.1\r\nHost: x\r\nOrigin: http://shop.test\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 16000\r\n\r\n{"
)


@pytest.fixture
def server(serve_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    pixels = [{"id": PIXEL, "access_token": TOKEN, "origins": [SHOP]}]
    return serve_gateway(server=LIMITS, pixels=pixels)


def _connect_from(address: str, server: GatewayServer) -> socket.socket | None:
    sock = socket.socket()
    sock.settimeout(2)
    try:
        sock.bind((address, 0))
        sock.connect(("127.0.0.1", server.port))
    except OSError:
        sock.close()
        return None
    return sock


class Flood:
    """Sockets from other addresses, closed at the end; `drip` sends a byte now and then."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._dripper: threading.Thread | None = None

    def open(self, server: GatewayServer, address: str, count: int, first: bytes = b"") -> None:
        for _ in range(count):
            sock = _connect_from(address, server)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.sendall(first)
                self.sockets.append(sock)

    def drip(self, every: float) -> None:
        def run() -> None:
            while not self._stop.wait(every):
                for sock in self.sockets:
                    with contextlib.suppress(OSError):
                        sock.send(b" ")

        self._dripper = threading.Thread(target=run, daemon=True)
        self._dripper.start()

    def close(self) -> None:
        self._stop.set()
        if self._dripper is not None:
            self._dripper.join(5)
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def flood() -> Iterator[Flood]:
    made = Flood()
    yield made
    made.close()


def _timed(call: Callable[[], httpx.Response]) -> tuple[int, float]:
    started = time.monotonic()
    status = call().status_code
    return status, time.monotonic() - started


def test_a_normal_client_is_served_at_once_under_idle_and_dripping_floods(
    server: GatewayServer, flood: Flood
) -> None:
    flood.open(server, "127.0.0.2", 60)  # idle sockets, far over its share
    for n in range(11):  # 11 addresses, each a body that drips
        flood.open(server, f"127.0.0.{n + 3}", 12, DRIP_HEAD)
    flood.drip(every=0.3)
    # a new client, on a new connection each time (its address holds none)
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=server.url, timeout=5, limits=limits) as client:
        for n in range(5):
            health = _timed(lambda: client.get("/healthz"))
            headers = {"Origin": SHOP, "Content-Type": "text/plain"}
            body = BEACON % n
            beacon = _timed(lambda: client.post("/b", content=body, headers=headers))  # noqa: B023
            assert health[0] == 200 and beacon[0] == 204, (health, beacon)
            assert health[1] < 0.1 and beacon[1] < 0.1, (health, beacon)
    refused = server.call(_refusals(server))
    assert refused.get("per_client", 0) >= 60 - 16 and refused.get("evicted", 0) >= 1, refused


async def _refusals(server: GatewayServer) -> dict[str, float]:
    assert server.gateway is not None
    metric = server.gateway.metrics.connections_refused
    return {
        s.labels["reason"]: s.value
        for s in metric.collect()[0].samples
        if s.name.endswith("_total")
    }


def test_an_address_over_its_share_is_refused_and_no_other(
    server: GatewayServer, flood: Flood
) -> None:
    flood.open(server, "127.0.0.2", 16)
    extra = _connect_from("127.0.0.2", server)
    assert extra is not None
    with extra:
        answer = extra.recv(4096)
    assert answer.startswith(b"HTTP/1.1 503") and b"busy" in answer
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # another address


def test_a_body_dripping_a_byte_at_a_time_is_closed_at_its_deadline(
    server: GatewayServer, flood: Flood
) -> None:
    """Every drip comes well within the body timeout; only the whole-body rate stops it."""
    flood.open(server, "127.0.0.2", 1, DRIP_HEAD)
    flood.drip(every=0.2)
    [sock] = flood.sockets
    sock.settimeout(5)
    started = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(4096):
            pass
    assert time.monotonic() - started < 3  # closed by the server, not our 5 s timeout
