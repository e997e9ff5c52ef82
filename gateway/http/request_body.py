"""Reading a request body safely: a size limit enforced while reading, and JSON errors as 4xx.

Shared by every endpoint that takes a body, so a hostile client gets the same 413 / 400
answer everywhere and never makes the gateway buffer more than the limit.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Message, Receive

from gateway.core.errors import EventError, PayloadTooLarge


def check_length(declared_length: str | None, limit: int) -> None:
    """Refuse a declared Content-Length that is not a number (400) or over `limit` (413),
    before anything of the body is read."""
    if declared_length is not None:
        if not (declared_length.isascii() and declared_length.isdigit()):
            raise EventError("body", "invalid Content-Length")
        if int(declared_length) > limit:
            raise PayloadTooLarge("body", f"larger than {limit} bytes")


def whole_body(message: Message, limit: int) -> bytes | None:
    """The body when `message`, the first received, holds all of it (a beacon's usually
    does: no loop, no coroutine); None when `read_body` must read on."""
    if message["type"] != "http.request" or message.get("more_body"):
        return None
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise PayloadTooLarge("body", f"larger than {limit} bytes")
    return body


async def read_body(
    receive: Receive, declared_length: str | None, limit: int, *, first: Message | None = None
) -> bytes:
    """The ASGI request body, refusing (413) anything over `limit` before reading it all;
    `first`: a first message received already (see `whole_body`)."""
    check_length(declared_length, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = first if first is not None else await receive()
        first = None
        if message["type"] != "http.request":
            raise EventError("body", "the client went away before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("body", f"larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body or body.isspace():  # no copy of the body, as strip() makes
        raise EventError("body", "empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventError("body", f"not valid JSON ({exc})") from None
