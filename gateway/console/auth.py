"""Who may use the console: one admin password, a signed session cookie, a CSRF token.

The console is off until a password is configured. A correct password gets a cookie signed
with itsdangerous (HttpOnly, `SameSite=Strict`, the console's path, `session_hours`) by a
key derived from the password: changing it ends every session, and replicas sharing the
configuration accept each other's sessions; a logout revokes one in the storage backend
(`storage/revoked_sessions.py`). Actions and logout carry a CSRF token, an HMAC of the
session id sent back in a header or a form field. A login also marks the browser with a
signed device cookie, which the global login budget spares (`console/login.py`).
Why: docs/design/console.md, docs/design/console-sessions.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import NamedTuple

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

from gateway.http.auth import matches
from gateway.settings import ConsoleSettings

COOKIE = "ttgw_console"
DEVICE_COOKIE = "ttgw_console_device"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
DEVICE_SECONDS = 90 * 24 * 3600
"""How long a browser that logged in is known as the operator's (renewed at each login)."""


class Session(NamedTuple):
    sid: str
    expires: float
    """When its cookie stops being accepted anyway (Unix time)."""


class ConsoleAuth:
    def __init__(self, settings: ConsoleSettings) -> None:
        password = settings.admin_password.reveal().encode()
        key = hmac.new(password, b"tiktok-gateway console session", hashlib.sha256)
        self._key = key.digest()
        self._sessions = URLSafeTimedSerializer(key.hexdigest(), salt="console-session")
        self._devices = URLSafeTimedSerializer(key.hexdigest(), salt="console-device")
        self.max_age = int(settings.session_hours * 3600)
        self.path = settings.path

    def new_session(self) -> str:
        """The cookie value of a fresh session."""
        return str(self._sessions.dumps({"sid": secrets.token_urlsafe(16)}))

    def session(self, request: Request) -> Session | None:
        """The session of the request's cookie, or None (missing, forged or expired); whether
        it was revoked since is for `RevokedSessions` to say."""
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        try:
            data, signed = self._sessions.loads(value, max_age=self.max_age, return_timestamp=True)
        except BadSignature:  # includes SignatureExpired
            return None
        sid = data.get("sid") if isinstance(data, dict) else None
        return Session(sid, signed.timestamp() + self.max_age) if isinstance(sid, str) else None

    def new_device(self) -> str:
        """The device cookie's value for a browser that just logged in."""
        return str(self._devices.dumps({"did": secrets.token_urlsafe(16)}))

    def device(self, request: Request) -> str | None:
        """The id of the browser's device cookie, or None (it never logged in here)."""
        value = request.cookies.get(DEVICE_COOKIE)
        if not value:
            return None
        try:
            data = self._devices.loads(value, max_age=DEVICE_SECONDS)
        except BadSignature:
            return None
        did = data.get("did") if isinstance(data, dict) else None
        return did if isinstance(did, str) else None

    def csrf_token(self, sid: str) -> str:
        return hmac.new(self._key, f"csrf:{sid}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: Request, sid: str, form_value: str = "") -> bool:
        """Whether the header (or, for a plain HTML form, `form_value`) carries sid's token."""
        given = request.headers.get(CSRF_HEADER) or form_value
        return matches(given, (self.csrf_token(sid).encode(),))

    def cookie_header(
        self,
        value: str,
        request: Request,
        *,
        max_age: int | None = None,
        name: str = COOKIE,
    ) -> str:
        """Set-Cookie for the session (or the device cookie); Secure whenever the page was
        reached over HTTPS."""
        age = self.max_age if max_age is None else max_age
        parts = [
            f"{name}={value}",
            f"Path={self.path}",
            f"Max-Age={age}",
            "HttpOnly",
            "SameSite=Strict",
        ]
        https = request.url.scheme == "https" or (
            request.headers.get("x-forwarded-proto", "").lower() == "https"
        )
        if https:
            parts.append("Secure")
        return "; ".join(parts)
