"""Error renderers: how each HTTP surface answers a `GatewayError` (one renderer per surface).

Our endpoints answer with our JSON (`{"error", "field", "message"}`) and the error's status;
the TikTok-compatible relay answers as TikTok does: HTTP 200 with an envelope `code`, so an
existing integration reads our refusals exactly as it reads TikTok's. Anything else (a bug)
is logged by type only — never a traceback per request, never the input — and answered 500
in the surface's own format.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.core.errors import (
    EventError,
    Forbidden,
    GatewayError,
    OutboxUnavailable,
    Rejected,
    TooManyRequests,
    Unauthorized,
)

log = logging.getLogger(__name__)
Headers = list[tuple[bytes, bytes]]
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """A rendered error: status, JSON body and extra headers, ready for ASGI or Starlette."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def raw_headers(self, payload: bytes) -> Headers:
        extra = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()
        ]
        return [
            *extra,
            (b"content-type", _JSON.encode()),
            (b"content-length", str(len(payload)).encode()),
        ]

    def response(self) -> Response:
        return Response(orjson.dumps(self.body), self.status, self.headers, media_type=_JSON)


class ErrorRenderer(Protocol):
    def render(self, error: BaseException) -> ErrorAnswer: ...


class GatewayJson:
    """Our endpoints: the error's own status; `field` names the value at fault."""

    def render(self, error: BaseException) -> ErrorAnswer:
        if isinstance(error, Rejected):
            body = {"error": error.error, "message": error.message}
            if error.field:
                body["field"] = error.field
            return ErrorAnswer(error.status_code, body, error.headers)
        if isinstance(error, OutboxUnavailable):
            body = {"error": "unavailable", "message": "events cannot be stored now; retry"}
            return ErrorAnswer(503, body, {"Retry-After": str(error.retry_after_seconds)})
        return ErrorAnswer(500, {"error": "internal error"})


class RequestIds:
    """TikTok's `request_id` of each answer: 32 hex digits, unique, without a uuid4 each.

    64 random bits drawn once per instance (one per serving process: the app is built in the
    process that serves it, one process per replica), then a counter. Two processes clash
    only if their prefixes do: under 1 in 10^7 even after a million of them. os.urandom and a
    UUID object per request cost the relay a visible share of a one-event request."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


class JsonAnswer(Response):
    """HTTP 200 with a JSON body already encoded: Starlette's Response, less the generic
    header handling of its __init__ (half the cost of a relay's answer; the attributes set
    here are all that Response.__call__ sends)."""

    media_type = _JSON

    def __init__(self, body: bytes) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", b"%d" % len(body)), _JSON_HEADER]


_JSON_HEADER = (b"content-type", _JSON.encode())
_OK = b'{"code":0,"message":"OK","request_id":"%s","data":{}}'


class TikTokEnvelope:
    """The relay: HTTP 200 and TikTok's envelope codes (see docs/tiktok-events-api.md)."""

    def __init__(self, ids: RequestIds | None = None) -> None:
        self._ids = ids or RequestIds()

    def ok(self) -> Response:
        """TikTok's success answer: `envelope(0, "OK")`, from a template (every request)."""
        return JsonAnswer(_OK % self._ids.next().encode())

    def envelope(self, code: int, message: str) -> dict[str, Any]:
        """TikTok's answer: `code` 0 and "OK" for success, else its error code and message."""
        return {"code": code, "message": message, "request_id": self._ids.next(), "data": {}}

    def render(self, error: BaseException) -> ErrorAnswer:
        code, message = 50000, "internal error"
        if isinstance(error, Unauthorized):
            code, message = 40105, error.message
        elif isinstance(error, Forbidden):
            code, message = 40001, error.message
        elif isinstance(error, TooManyRequests):
            code, message = 40100, error.message
        elif isinstance(error, EventError):
            code, message = 40002, f"{error.field}: {error.message}"
        elif isinstance(error, Rejected):
            code, message = 40000, error.message
        elif isinstance(error, OutboxUnavailable):
            # 50002 as TikTok's "try again later"; the header says when (TikTok sends none)
            body = self.envelope(50002, "events cannot be stored now; retry later")
            return ErrorAnswer(200, body, {"Retry-After": str(error.retry_after_seconds)})
        headers = error.headers if isinstance(error, Rejected) else {}  # Retry-After of a 40100
        return ErrorAnswer(200, self.envelope(code, message), headers)


def log_unexpected(error: BaseException, where: str) -> None:
    """One line, the type only: an input that triggers a bug must not flood or leak."""
    if not isinstance(error, GatewayError):
        log.error("unexpected error on %s: %s", where, type(error).__name__)


Endpoint = Callable[[Request], Awaitable[Response]]


def rendered(endpoint: Endpoint, renderer: ErrorRenderer) -> Endpoint:
    """The endpoint behind an error boundary that answers in `renderer`'s format."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:  # every error, expected or not, answers in this surface's format
            log_unexpected(exc, f"{request.method} {request.url.path}")
            return renderer.render(exc).response()

    return guarded
