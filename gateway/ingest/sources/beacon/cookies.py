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
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

from itsdangerous import BadSignature, Signer

from gateway.ingest.sources.beacon.enrich import valid_token
from gateway.settings import CookieSettings

log = logging.getLogger(__name__)
_DAY = 86400
_SALT = "ttgw-visitor-v1"
_VISITOR_ID = re.compile(r"[A-Za-z0-9_-]{16}")


def new_visitor_id() -> str:
    """16 URL-safe characters (96 random bits): unguessable, so nobody can claim to be another."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class VisitorRecord:
    """What the signed cookie remembers about a visitor.

    The click id with the Unix time the gateway first saw it (to restore a lost `ttclid` and
    to stop sending one older than the attribution window), the day `_ttp` was last re-set,
    so it is re-set once a day rather than on every beacon, and the visitor's random id.
    """

    ttclid: str | None = None
    first_seen: int = 0
    ttp_day: int = 0
    visitor: str = ""
    """A random id given at the first beacon: who wrote a lead-context entry, so another
    visitor cannot overwrite it (docs/design/lead-context.md). "" in a cookie older than it."""


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
        # itsdangerous signs with the LAST key and verifies with all: ours are newest first.
        # The payload is tiny ("<ttclid>:<first seen>:<day>"), so a plain HMAC-SHA256 signer built
        # once beats a serializer (JSON, zlib, base64 and a new signer on every call).
        self._signer = Signer(list(reversed(keys)), salt=_SALT, digest_method=hashlib.sha256)
        self._ttp_key = hashlib.sha256(("ttp:" + keys[0]).encode()).digest()
        self._window = settings.attribution_window_days * _DAY
        self._ttclid_max_age = settings.ttclid_max_age_days * _DAY
        self._verified = lru_cache(maxsize=8192)(self._verify)
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

    def read_visitor(self, value: str | None) -> VisitorRecord | None:
        """The signed record, or None when absent or tampered with.

        An expired click is still returned: it proves its click id is too old to send.
        A visitor sends the same value with every beacon, so verdicts are cached (per
        instance, bounded; the value holds no personal data).
        """
        if not value or len(value) > 1024:
            return None
        return self._verified(value)

    def _verify(self, value: str) -> VisitorRecord | None:
        try:
            payload = self._signer.unsign(value).decode()
        except (BadSignature, UnicodeDecodeError):
            return None
        ttclid, _, rest = payload.partition(":")
        seen, _, rest = rest.partition(":")
        day, _, visitor = rest.partition(":")
        if (ttclid and valid_token(ttclid) is None) or not seen.isdigit() or not day.isdigit():
            return None
        if visitor and not _VISITOR_ID.fullmatch(visitor):
            return None
        return VisitorRecord(ttclid or None, int(seen), int(day), visitor)

    def signed_value(self, record: VisitorRecord) -> str:
        payload = f"{record.ttclid or ''}:{record.first_seen}:{record.ttp_day}:{record.visitor}"
        return self._signer.sign(payload).decode()

    def visitor_cookie(self, record: VisitorRecord, now: float) -> str:
        """Set-Cookie value for the signed record (HttpOnly: page scripts have no use for it).

        With a click it lives as long as a `ttclid` cookie set now: a `ttclid` cookie that
        outlived its record would come back as a new click, its age lost.
        """
        if record.ttclid:
            remaining = record.first_seen + self._window - int(now)
            max_age = max(2 * _DAY, self._ttclid_max_age, remaining)
        else:
            max_age = 2 * _DAY
        return (
            f"{self.signed_name}={self.signed_value(record)}; Max-Age={max_age}"
            f"{self._attributes}; HttpOnly"
        )

    def ttclid_cookie(self, ttclid: str) -> str:
        return f"ttclid={ttclid}; Max-Age={self._ttclid_max_age}{self._attributes}"

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
