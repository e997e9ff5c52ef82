"""A refused request in a pipeline: every request before it is answered first, in order,
then the refusal (431), then the connection closes cleanly; nothing after it is answered.

Each case writes all its requests at once on one kept-alive connection and reads until the
gateway closes it: a reset instead of a close fails the test, as it would lose answers.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from gateway.http.protocol import MAX_PIPELINED
from tests.conftest import PIXEL, TOKEN, GatewayServer

SHOP = "http://shop.test"
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
BEACON_BODY = b'{"event":"AddToCart","event_id":"pipe-1","page":{"url":"http://shop.test/p"}}'
BEACON = (
    b"POST /b HTTP/1.1\r\nHost: gw\r\nOrigin: http://shop.test\r\n"
    b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(BEACON_BODY), BEACON_BODY)
)
TRAILER_LINE = b"X-T: " + b"a" * 8185 + b"\r\n"  # 8 KB; the header limit is 16 KB


def _chunked(body: bytes, trailers: bytes, chunk: int = 1024) -> bytes:
    if not trailers.endswith(b"\r\n"):
        trailers += b"\r\n"
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return (
        b"POST /nope HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
        + framed
        + b"0\r\n"
        + trailers
        + b"\r\n"
    )


REFUSED = {
    # 64 KB of trailers after a 2-byte body: cut off while they arrive (framing bound)
    "trailers while arriving": _chunked(b"{}", TRAILER_LINE * 8),
    # 4 KB of body allows more framing: 20 KB of trailers are refused at the body's end
    "trailers at the end": _chunked(b"x" * 4096, TRAILER_LINE * 2 + b"X-U: " + b"b" * 4000),
    # 40 KB: over the limit however the requests before it fall into slices
    "headers": b"GET /healthz HTTP/1.1\r\nHost: gw\r\nCookie: " + b"c" * 40_000 + b"\r\n\r\n",
}
MESSAGES = {  # each case takes its own path to the refusal
    "trailers while arriving": "chunk framing or trailers over the limit",
    "trailers at the end": "trailers over the header limit",
    "headers": "request headers over the limit",
}
BEFORE = {
    "one": 1,
    "three": 3,
    # over one 16 KB slice of requests: the pipelining bound holds the refused one back
    # unparsed, and it is read only as the ones before it are answered
    "behind the pipelining bound": 600,
}


@pytest.fixture
def server(serve_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    pixels = [{"id": PIXEL, "access_token": TOKEN, "origins": [SHOP]}]
    return serve_gateway(server={"max_header_bytes": 16_384}, pixels=pixels)


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes (a reset raises: answers were lost)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _answers(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Responses with a Content-Length (or none: 204), in order."""
    answers = []
    while data:
        head, data = data.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines)}
        size = int(headers.get("content-length", "0"))
        answers.append((int(status_line.split()[1]), headers, data[:size]))
        data = data[size:]
    return answers


@pytest.mark.parametrize("refused", sorted(REFUSED))
@pytest.mark.parametrize("before", sorted(BEFORE))
def test_requests_before_a_refused_one_are_answered_first(
    server: GatewayServer, refused: str, before: str
) -> None:
    healths = BEFORE[before] - 1
    pipelined = BEACON + HEALTH * healths + REFUSED[refused] + HEALTH  # the last: never read
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(pipelined)
        answers = _answers(_until_closed(sock))
    statuses = [status for status, _, _ in answers]
    assert statuses == [204] + [200] * healths + [431], statuses[:3] + statuses[-3:]
    _, headers, body = answers[-1]
    assert headers["connection"] == "close"
    assert json.loads(body)["message"] == MESSAGES[refused]
    if before == "behind the pipelining bound":
        assert healths > MAX_PIPELINED and len(BEACON + HEALTH * healths) > 16_384


@pytest.mark.parametrize("refused", sorted(REFUSED))
def test_what_follows_a_refused_request_is_read_and_dropped(
    server: GatewayServer, refused: str
) -> None:
    """Half a megabyte pipelined after the refused request is read and dropped, not left
    unread: closing on unread bytes would reset the connection (answers lost with it)."""
    after = HEALTH * (512 * 1024 // len(HEALTH))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(BEACON + HEALTH + REFUSED[refused])
        sock.sendall(after)
        answers = _answers(_until_closed(sock))
    assert [status for status, _, _ in answers] == [204, 200, 431]
    assert json.loads(answers[-1][2])["message"] == MESSAGES[refused]
