"""`/console/login` reads a few KB at most before it answers, and a client that leaves
mid-body leaves no traceback in the log."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import GatewayServer

PASSWORD = "console-password-0123"


@pytest.fixture
def server(serve_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    return serve_gateway(console={"admin_password": PASSWORD})


def _answer(server: GatewayServer, head: bytes, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        sock.sendall(head + body)
        return sock.recv(65536)  # times out if the gateway waits for the rest


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 500000000\r\n", b"Transfer-Encoding: chunked\r\n"],
    ids=["declared", "chunked"],
)
def test_a_huge_login_body_is_refused_without_being_read(
    server: GatewayServer, framing: bytes
) -> None:
    head = (
        b"POST /console/login HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n" + framing + b"\r\n"
    )
    piece = b"password=" + b"a" * 60_000
    body = (b"%x\r\n" % len(piece) + piece + b"\r\n") if b"chunked" in framing else piece
    answer = _answer(server, head, body)  # ~60 KB of 500 MB: the rest never comes
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_login_within_the_limit_still_works(server: GatewayServer) -> None:
    answer = httpx.post(f"{server.url}/console/login", data={"password": PASSWORD})
    assert answer.status_code == 303


def test_a_client_leaving_mid_body_leaves_no_traceback(
    server: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
            sock.sendall(
                b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\npassword=abc"
            )
    # a sentinel after the three: answered once they have been dealt with
    wrong = httpx.post(f"{server.url}/console/login", data={"password": "wrong"})
    assert wrong.status_code == 401
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage() for r in noisy]
