"""First-party cookies set by the server: `ttclid`, `_ttp`, and the gateway's signed click record.

Browsers cap cookies written by JavaScript at 7 days or less, but not cookies a first-party
server sets in an HTTP response — which is why a gateway on the site's own subdomain keeps
click ids and visitor ids alive long enough to attribute conversions. The signed cookie
(HttpOnly, itsdangerous) remembers the click id with the time it was first seen, so a lost
`ttclid` can be restored and one older than the attribution window is no longer sent. A
cookie whose signature fails is ignored, never trusted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from gateway.config import CookieSettings
from gateway.enrich import valid_token

log = logging.getLogger(__name__)
_DAY = 86400
_SALT = "ttgw-click-v1"


@dataclass(frozen=True)
class ClickRecord:
    """A click id and the Unix time the gateway first saw it for this visitor."""

    ttclid: str
    first_seen: int


class VisitorCookies:
    """Reads and writes the gateway's first-party cookies; precomputes attributes once."""

    def __init__(self, settings: CookieSettings) -> None:
        self._settings = settings
        keys = [s.reveal() for s in settings.secrets]
        if not keys:
            log.warning(
                "no cookie secret configured (GATEWAY_COOKIE_SECRET or [cookies] secrets): "
                "signed cookies will not survive a restart or work across replicas"
            )
            keys = [secrets.token_urlsafe(32)]
        # itsdangerous signs with the LAST key and verifies with all: ours are newest first
        self._serializer = URLSafeTimedSerializer(list(reversed(keys)), salt=_SALT)
        self._ttp_key = hashlib.sha256(("ttp:" + keys[0]).encode()).digest()
        self._window = settings.attribution_window_days * _DAY
        attributes = "; Path=/"
        if settings.domain:
            attributes += f"; Domain={settings.domain}"
        if settings.secure:
            attributes += "; Secure"
        attributes += f"; SameSite={settings.same_site}"
        self._attributes = attributes
        self.signed_name = settings.signed_name

    @property
    def attribution_window_seconds(self) -> int:
        return self._window

    def read_click(self, value: str | None) -> ClickRecord | None:
        """The signed click record, or None when absent, tampered with, or expired."""
        if not value:
            return None
        try:
            data = self._serializer.loads(value, max_age=self._window)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        ttclid, first_seen = valid_token(data.get("c")), data.get("t")
        if ttclid is None or not isinstance(first_seen, int):
            return None
        return ClickRecord(ttclid, first_seen)

    def click_cookie(self, record: ClickRecord) -> str:
        """Set-Cookie value for the signed record (HttpOnly: page scripts have no use for it)."""
        token = self._serializer.dumps({"c": record.ttclid, "t": record.first_seen})
        remaining = max(1, record.first_seen + self._window - _now_int())
        return f"{self.signed_name}={token}; Max-Age={remaining}{self._attributes}; HttpOnly"

    def ttclid_cookie(self, ttclid: str) -> str:
        max_age = self._settings.ttclid_max_age_days * _DAY
        return f"ttclid={ttclid}; Max-Age={max_age}{self._attributes}"

    def ttp_cookie(self, ttp: str) -> str:
        """Re-set `_ttp` from the server so browser caps on script cookies do not shorten it.

        Not HttpOnly: the TikTok pixel in the page reads it.
        """
        max_age = self._settings.ttp_max_age_days * _DAY
        return f"_ttp={ttp}; Max-Age={max_age}{self._attributes}"

    def derived_ttp(self, ip: str | None, user_agent: str, now: float) -> str:
        """A new _ttp for a visitor without one, the same for near-simultaneous events.

        Derived (keyed hash of IP, user agent and a 10-minute bucket) rather than random, so
        two beacons a page sends at once agree without any shared state between replicas.
        """
        bucket = int(now // 600)
        digest = hmac.new(self._ttp_key, f"{ip}|{user_agent}|{bucket}".encode(), "sha256")
        return base64.urlsafe_b64encode(digest.digest()).decode()[:27]


def _now_int() -> int:
    return int(time.time())
