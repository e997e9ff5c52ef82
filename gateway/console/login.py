"""Logging in and out of the console: a budget per address before a password is compared,
and a logout that ends the session on every replica.

Every attempt counts against its client address (`login_attempts_per_minute`). Logout needs
the session's CSRF token and revokes the session in the storage backend.
Why: docs/design/console-sessions.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.console.auth import CSRF_FIELD, ConsoleAuth
from gateway.console.pages import HEADERS, login_page
from gateway.core.errors import EventError, OutboxUnavailable, PayloadTooLarge, TooManyRequests
from gateway.http.client_ip import ClientIpResolver
from gateway.http.request_body import read_body

if TYPE_CHECKING:
    from gateway.runtime import Gateway

MAX_FORM = 4096


class Login:
    """The login and logout routes, and the budget a login passes first."""

    def __init__(self, gateway: Gateway, auth: ConsoleAuth, ips: ClientIpResolver) -> None:
        settings = gateway.settings.console
        self.path = settings.path
        self._auth = auth
        self._ips = ips
        self._password = gateway.auth
        self._revoked = gateway.revoked_sessions
        per_minute = settings.login_attempts_per_minute
        burst = max(1, int(per_minute))
        self._per_address = gateway.limits.limit("console_login", per_minute / 60.0, burst)

    async def login(self, request: Request) -> Response:
        client = request.client
        try:  # behind a trusted proxy, the visitor's address
            ip = self._ips.resolve(client.host if client else None, request.headers)
            await self._per_address.admit(ip)  # every attempt counts here
        except TooManyRequests as exc:
            return _too_many(self.path, exc)
        try:  # a few KB at most, read before anything is parsed
            length = request.headers.get("content-length")
            body = await read_body(request.receive, length, MAX_FORM)
        except PayloadTooLarge:
            return login_page(self.path, error="Request too large.", status=413)
        except EventError:  # a bad Content-Length, or the client left mid-body: no traceback
            return login_page(self.path, error="Incomplete request.", status=400)
        form = parse_qs(body.decode("utf-8", "replace"))
        password = form.get("password", [""])[0]
        if not self._password.current.console(password):
            return login_page(self.path, error="Wrong password.", status=401)
        response = Response(status_code=303, headers={**HEADERS, "Location": self.path})
        response.headers.append(
            "set-cookie", self._auth.cookie_header(self._auth.new_session(), request)
        )
        return response

    async def logout(self, request: Request) -> Response:
        """Ends the session everywhere, given its CSRF token (a form field or the header)."""
        done = Response(status_code=303, headers={**HEADERS, "Location": self.path})
        done.headers.append("set-cookie", self._auth.cookie_header("", request, max_age=0))
        session = self._auth.session(request)
        if session is None:  # nothing to end: the cookie goes all the same
            return done
        try:
            length = request.headers.get("content-length")
            body = await read_body(request.receive, length, MAX_FORM)
        except (PayloadTooLarge, EventError):
            body = b""
        token = parse_qs(body.decode("utf-8", "replace")).get(CSRF_FIELD, [""])[0]
        if not self._auth.csrf_ok(request, session.sid, token):
            return _answer({"error": "forbidden", "message": "missing or wrong CSRF token"}, 403)
        try:
            await self._revoked.revoke(session.sid, session.expires)
        except OutboxUnavailable as exc:  # refused here already; log out again for the others
            message = f"logged out on this replica only ({exc}); log out again"
            answer = _answer({"error": "unavailable", "message": message}, 503)
            answer.headers["Retry-After"] = str(exc.retry_after_seconds)
            return answer
        return done


def _too_many(path: str, exc: TooManyRequests) -> Response:
    refused = login_page(path, error="Too many attempts; wait.", status=429)
    refused.headers["Retry-After"] = str(max(1, int(exc.retry_after_seconds)))
    return refused


def _answer(data: dict[str, str], status: int) -> Response:
    return Response(orjson.dumps(data), status, HEADERS, media_type="application/json")
