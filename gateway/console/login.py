"""Logging in and out of the console: budgets before a password is compared, and a logout that
ends the session on every replica.

Every attempt counts against its client address (`login_attempts_per_minute`). Failures also
count against one budget for every address together (`login_failures_per_minute_all`, shared
by replicas through Redis), so many addresses cannot guess faster than that: past it a login
is refused (429) before the password is compared. A browser with the device cookie of an
earlier login here is spared that budget — its failures have one of their own — so guessers
cannot lock out the operator's browser. Logout needs the session's CSRF token and revokes
the session in the storage backend. Why: docs/design/console-sessions.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.console.auth import CSRF_FIELD, DEVICE_COOKIE, DEVICE_SECONDS, ConsoleAuth
from gateway.console.pages import HEADERS, login_page
from gateway.core.errors import EventError, OutboxUnavailable, PayloadTooLarge, TooManyRequests
from gateway.http.client_ip import ClientIpResolver
from gateway.http.failed_auth import FailedAuthLimit
from gateway.http.rate_limit import Budget
from gateway.http.request_body import read_body

if TYPE_CHECKING:
    from gateway.runtime import Gateway

MAX_FORM = 4096
_EVERYONE = "*"  # the global budget's one client


class Login:
    """The login and logout routes, and the budgets a login passes first."""

    def __init__(self, gateway: Gateway, auth: ConsoleAuth, ips: ClientIpResolver) -> None:
        settings = gateway.settings.console
        self.path = settings.path
        self._auth = auth
        self._ips = ips
        self._password = gateway.auth
        self._revoked = gateway.revoked_sessions
        limits, metrics = gateway.limits, gateway.metrics
        per_minute = settings.login_attempts_per_minute
        burst = max(1, int(per_minute))
        self._per_address = limits.limit("console_login", per_minute / 60.0, burst)

        def failures(name: str, budget: Budget) -> FailedAuthLimit:
            return FailedAuthLimit(
                budget,
                on_refused=lambda: metrics.rate_limited.labels(name).inc(),
                on_failed=lambda endpoint: metrics.failed_auth.labels(endpoint).inc(),
                shared=limits.shared(name, budget),
                clock=limits.clock,
            )

        everyone = settings.login_failures_per_minute_all
        self._everyone = failures(
            "console_login_all", Budget(everyone / 60.0, max(1, int(everyone)))
        )
        self._per_device = failures("console_login_device", Budget(per_minute / 60.0, burst))

    async def login(self, request: Request) -> Response:
        client = request.client
        device = self._auth.device(request)
        # behind a trusted proxy, the visitor's address; a known browser counts as itself
        budget, who = (self._everyone, _EVERYONE) if device is None else (self._per_device, device)
        try:
            ip = self._ips.resolve(client.host if client else None, request.headers)
            await self._per_address.admit(ip)  # every attempt counts here
            await budget.check(who)  # before the password is compared, the right one too
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
            try:
                await budget.failed(who, "console_login")
            except TooManyRequests as exc:  # other replicas spent the budget meanwhile
                return _too_many(self.path, exc)
            return login_page(self.path, error="Wrong password.", status=401)
        response = Response(status_code=303, headers={**HEADERS, "Location": self.path})
        response.headers.append(
            "set-cookie", self._auth.cookie_header(self._auth.new_session(), request)
        )
        device_cookie = self._auth.cookie_header(
            self._auth.new_device(), request, max_age=DEVICE_SECONDS, name=DEVICE_COOKIE
        )
        response.headers.append("set-cookie", device_cookie)
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
