"""Slow, oversized and excess clients are refused at once; everybody else is served."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import GatewayServer

LIMITS = {"header_timeout_seconds": 0.5, "body_timeout_seconds": 0.5, "max_header_bytes": 16384}


@pytest.fixture
def server(serve_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    return serve_gateway(server=LIMITS)


def _connect(server: GatewayServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def _answer(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started, data = time.monotonic(), b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


def test_a_client_that_never_finishes_its_headers_is_closed(server: GatewayServer) -> None:
    with _connect(server) as slow:
        slow.sendall(b"POST /b HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # others are served
        answer, waited = _answer(slow)
    assert answer.startswith(b"HTTP/1.1 408") and b'"error":"timeout"' in answer
    assert waited < 3


def test_a_client_that_stalls_in_its_body_is_closed(server: GatewayServer) -> None:
    with _connect(server) as slow:
        slow.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        _, waited = _answer(slow)
    assert waited < 3  # closed by the server, not by our 5 s socket timeout


def test_huge_headers_are_refused_at_once(server: GatewayServer) -> None:
    cookie = b"; ".join(b"c%d=v" % i for i in range(2_000_000))  # ~17 MB, as in the attack
    with _connect(server) as big:
        started = time.monotonic()
        big.sendall(b"POST /b HTTP/1.1\r\nHost: x\r\nCookie: " + cookie[:65536])
        answer, _ = _answer(big)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 431") and elapsed < 0.1
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_headers_within_the_limit_with_a_body_in_the_same_packet_are_served(
    server: GatewayServer,
) -> None:
    body = b'{"events": []}' + b" " * 30000
    with _connect(server) as client:
        client.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        answer, _ = _answer(client)
    assert answer.startswith(b"HTTP/1.1 401")  # the endpoint answered (no API key here)


def test_past_the_connection_bound_a_client_gets_a_fast_503(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    server = serve_gateway(server={**LIMITS, "header_timeout_seconds": 30, "max_connections": 3})
    idle = [_connect(server) for _ in range(3)]
    try:
        with _connect(server) as extra:
            answer, waited = _answer(extra)
        assert answer.startswith(b"HTTP/1.1 503") and b'"error":"busy"' in answer
        assert waited < 1
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while True:  # the idle ones gone, clients are served again
        try:
            if httpx.get(f"{server.url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.02)
