"""The listening sockets: a connection kept alive gets each answer as soon as it is written,
not after the client's delayed ACK (Nagle's algorithm off, as asyncio sets it on TCP)."""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable

import httpx

from gateway.http.listeners import bind
from tests.conftest import GatewayServer


def test_a_listening_socket_is_tcp_so_asyncio_turns_nagle_off() -> None:
    sock = bind("127.0.0.1", 0)
    try:  # asyncio sets TCP_NODELAY only on sockets whose proto says TCP
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_answers_on_a_kept_alive_connection_are_not_held_for_an_ack(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    """Headers and body are written apart: with Nagle on, the body waited for the client's
    delayed ACK (40 ms on Linux) on every request after a connection's first."""
    server = serve_gateway()
    took = []
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/healthz").status_code == 200  # the connection is open
        for _ in range(21):
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            took.append(time.monotonic() - started)
    assert statistics.median(took) < 0.02, took
