"""The browser beacon endpoint: one event (or a few) from the snippet, enriched and stored.

`navigator.sendBeacon` posts `text/plain` without a CORS preflight, so the Origin header is
the gate: only configured origins are served, and the origin picks the pixel. What the
browser says about itself is not trusted where the server knows better: the IP and user
agent come from the connection, `_ttp` and `ttclid` from first-party cookies and the URLs by
the spec's precedence. The answer is 204 only once the events are in the outbox (headers
`X-Accepted` / `X-Dropped` count them); the same answer sets the first-party cookies.

This is the hottest path of the gateway, so it is a plain ASGI app (no Request/Response
objects) that reads only the headers and cookies it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from gateway.core.errors import EventError, PayloadTooLarge
from gateway.core.event import Event
from gateway.ingest.parser import parse_event
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.sources.beacon.cookies import VisitorCookies, VisitorRecord
from gateway.ingest.sources.beacon.enrich import (
    ClientIpResolver,
    is_bot,
    is_tag_testing,
    locale_from_header,
    resolve_click_id,
    valid_token,
)
from gateway.outbox import OutboxUnavailable
from gateway.settings import PixelConfig, Settings
from gateway.web.metrics import Metrics
from gateway.web.request_body import parse_json, read_body

log = logging.getLogger(__name__)
Scope = Mapping[str, Any]
Headers = list[tuple[bytes, bytes]]
_BROWSER_ONLY_KEYS = frozenset({"consent", "pixel_id"})
_MEDIA_TYPES = frozenset({"text/plain", "application/json"})
_SERVER_KNOWS = ("ip", "user_agent")
_COOKIES_READ = ("_ttp", "ttclid")
_HEADERS_READ = (
    "origin",
    "content-type",
    "content-length",
    "user-agent",
    "cookie",
    "accept-language",
    "x-forwarded-for",
    "forwarded",
)
_JSON = (b"content-type", b"application/json")
_NO_BODY = {"type": "http.response.body", "body": b""}


@dataclass(frozen=True, slots=True)
class _Visitor:
    ip: str | None
    user_agent: str
    ttp: str | None
    accept_language: str | None


@dataclass(slots=True)
class _Answer:
    status: int
    body: dict[str, Any]
    headers: Headers


def read_cookies(header: str, names: tuple[str, ...]) -> dict[str, str]:
    """Only the named cookies of a Cookie header (a full parse costs more than it gives)."""
    found: dict[str, str] = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name in names:
            found[name] = value.strip().strip('"')
    return found


class BeaconEndpoint:
    """ASGI app for POST (and OPTIONS) on the beacon path."""

    def __init__(
        self, pipeline: Pipeline, settings: Settings, metrics: Metrics, cookies: VisitorCookies
    ) -> None:
        browser = settings.browser
        self._pipeline = pipeline
        self._cookies = cookies
        self._cookie_names = (*_COOKIES_READ, cookies.signed_name)
        self._ips = ClientIpResolver(browser.trusted_proxies, browser.client_ip_header)
        self._wanted_headers = frozenset(
            name.encode() for name in (*_HEADERS_READ, browser.client_ip_header) if name is not None
        )
        self._max_body = browser.max_body_bytes
        self._max_events = browser.max_events
        self._drop_bots = browser.drop_bots
        self._tag_hosts = browser.tag_testing_hosts
        self._generate_ttp = browser.generate_ttp
        self._received = metrics.received.labels("browser")
        self._dropped = {r: metrics.dropped.labels(r) for r in ("bot", "tag_testing", "no_consent")}
        self._identifiers_dropped = metrics.identifiers_dropped
        self._pixels_by_origin: dict[str, list[PixelConfig]] = {}
        for pixel in settings.pixels:
            if pixel.event_source == "web":
                for origin in pixel.origins:
                    self._pixels_by_origin.setdefault(origin, []).append(pixel)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            answer = await self._answer(scope, receive)
        except EventError as exc:
            answer = _Answer(exc.status_code, exc.to_json(), self._cors_of(scope))
        except OutboxUnavailable:
            body = {"error": "unavailable", "message": "events cannot be stored now; retry"}
            answer = _Answer(503, body, [*self._cors_of(scope), (b"retry-after", b"5")])
        except Exception:
            log.exception("beacon failed")
            answer = _Answer(500, {"error": "internal error"}, [])
        if answer.status == 204:  # no body: the answer leaves in one write, one packet
            await send({"type": "http.response.start", "status": 204, "headers": answer.headers})
            await send(_NO_BODY)
            return
        payload = orjson.dumps(answer.body)
        headers = [*answer.headers, (b"content-length", str(len(payload)).encode()), _JSON]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _headers(self, raw: Headers) -> dict[str, str]:
        """The headers this endpoint reads; repeated ones joined as HTTP allows (', ')."""
        headers: dict[str, str] = {}
        for name, value in raw:
            if name in self._wanted_headers:
                key, text = name.decode("latin-1"), value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return headers

    def _cors_of(self, scope: Scope) -> Headers:
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1").lower()
                return _cors(origin) if origin in self._pixels_by_origin else []
        return []

    async def _answer(self, scope: Scope, receive: Any) -> _Answer:
        headers = self._headers(scope["headers"])
        origin = headers.get("origin", "").lower()
        pixels = self._pixels_by_origin.get(origin)
        if pixels is None:
            message = "this origin may not send events here" if origin else "Origin header missing"
            return _Answer(403, {"error": "forbidden_origin", "message": message}, [])
        cors = _cors(origin)
        method = scope["method"]
        if method == "OPTIONS":
            return _Answer(204, {}, [*cors, *_PREFLIGHT])
        if method != "POST":
            body = {"error": "method_not_allowed", "message": "POST a JSON event"}
            return _Answer(405, body, [*cors, (b"allow", b"POST, OPTIONS")])
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in _MEDIA_TYPES:
            message = "send text/plain or application/json"
            return _Answer(415, {"error": "unsupported_media_type", "message": message}, cors)
        length = headers.get("content-length")
        body = parse_json(await read_body(receive, length, self._max_body))
        items = body if isinstance(body, list) else [body]
        if not items:
            raise EventError("body", "no event")
        if len(items) > self._max_events:
            raise PayloadTooLarge("body", f"more than {self._max_events} events in one beacon")
        user_agent = headers.get("user-agent", "")
        if self._drop_bots and is_bot(user_agent):
            self._dropped["bot"].inc(len(items))
            return _Answer(204, {}, [*cors, *_counts(0, len(items))])
        client = scope.get("client")
        ip = self._ips.resolve(client[0] if client else None, headers)
        cookies = read_cookies(headers.get("cookie", ""), self._cookie_names)
        previous = self._cookies.read_visitor(cookies.get(self._cookies.signed_name))
        record = previous or VisitorRecord()
        ttp = valid_token(cookies.get("_ttp"))
        now = self._pipeline.now()
        events: list[Event] = []
        dropped = 0
        for index, item in enumerate(items):
            where = f"[{index}]" if isinstance(body, list) else ""
            try:
                raw, pixel, consent = self._split(item, pixels)
                page_value = raw.get("page")
                page: dict[str, Any] = page_value if isinstance(page_value, dict) else {}
                page_url, referrer = page.get("url"), page.get("referrer")
                if is_tag_testing(page_url if isinstance(page_url, str) else None, self._tag_hosts):
                    self._dropped["tag_testing"].inc()
                    dropped += 1
                    continue
                if consent == "denied" or (pixel.require_consent and consent != "granted"):
                    self._dropped["no_consent"].inc()
                    dropped += 1
                    continue
                user = raw.get("user")
                if user is None or isinstance(user, dict):
                    visitor = _Visitor(ip, user_agent, ttp, headers.get("accept-language"))
                    raw["user"], ttp, record = self._enrich_user(
                        dict(user or {}), visitor, page_url, referrer, cookies, record, now
                    )
                parsed = parse_event(
                    raw, pixel=pixel, rules=self._pipeline.rules, now=now, from_browser=True
                )
            except EventError as exc:
                raise type(exc)(f"{where}.{exc.field}".lstrip("."), exc.message) from None
            if parsed.warnings:
                self._identifiers_dropped.inc(len(parsed.warnings))
            events.extend(parsed.events)
        await self._pipeline.accept(events)
        headers_out = cors
        if events:  # cookies only for a visitor whose events were forwarded: no consent, no cookie
            self._received.inc(len(events))
            headers_out = [*cors, *self._cookies_to_set(record, previous, ttp, cookies, now)]
        return _Answer(204, {}, [*headers_out, *_counts(len(events), dropped)])

    def _enrich_user(
        self,
        user: dict[str, Any],
        visitor: _Visitor,
        page_url: Any,
        referrer: Any,
        cookies: Mapping[str, str],
        record: VisitorRecord,
        now: float,
    ) -> tuple[dict[str, Any], str | None, VisitorRecord]:
        """Server-observed facts replace or complete what the browser sent about its user."""
        for key in _SERVER_KNOWS:
            user.pop(key, None)
        if visitor.ip:
            user["ip"] = visitor.ip
        if visitor.user_agent:
            user["user_agent"] = visitor.user_agent
        ttp = visitor.ttp or valid_token(user.get("ttp"))
        if ttp is None and self._generate_ttp:
            ttp = self._cookies.derived_ttp(visitor.ip, visitor.user_agent, now)
        if ttp:
            user["ttp"] = ttp
        ttclid, _ = resolve_click_id(
            page_url if isinstance(page_url, str) else None,
            referrer if isinstance(referrer, str) else None,
            user.pop("ttclid", None),
            cookies.get("ttclid") or record.ttclid,
        )
        if ttclid:
            if ttclid != record.ttclid:
                record = replace(record, ttclid=ttclid, first_seen=int(now))
            if now - record.first_seen <= self._cookies.attribution_window_seconds:
                user["ttclid"] = ttclid  # an older click is remembered but no longer sent
        if "locale" not in user:
            locale = locale_from_header(visitor.accept_language)
            if locale:
                user["locale"] = locale
        return user, ttp, record

    def _split(
        self, item: Any, pixels: list[PixelConfig]
    ) -> tuple[dict[str, Any], PixelConfig, Any]:
        if not isinstance(item, dict):
            raise EventError("event", "each event must be a JSON object")
        raw = {k: v for k, v in item.items() if k not in _BROWSER_ONLY_KEYS}
        consent = item.get("consent")
        if consent not in (None, "granted", "denied"):
            raise EventError("consent", "must be 'granted' or 'denied'")
        pixel_id = item.get("pixel_id")
        if pixel_id is None:
            return raw, pixels[0], consent
        for pixel in pixels:
            if pixel.id == pixel_id:
                return raw, pixel, consent
        raise EventError("pixel_id", "is not a pixel of this site")

    def _cookies_to_set(
        self,
        record: VisitorRecord,
        previous: VisitorRecord | None,
        ttp: str | None,
        cookies: Mapping[str, str],
        now: float,
    ) -> Headers:
        """Only what changed: a returning visitor's beacons usually set no cookie at all."""
        out: Headers = []
        cookie_jar = self._cookies
        fresh = now - record.first_seen <= cookie_jar.attribution_window_seconds
        if record.ttclid and fresh and cookies.get("ttclid") != record.ttclid:
            out.append((b"set-cookie", cookie_jar.ttclid_cookie(record.ttclid).encode()))
        today = int(now // 86400)
        if ttp and record.ttp_day != today:
            out.append((b"set-cookie", cookie_jar.ttp_cookie(ttp).encode()))
            record = replace(record, ttp_day=today)
        if record != (previous or VisitorRecord()):
            out.append((b"set-cookie", cookie_jar.visitor_cookie(record).encode()))
        return out


_PREFLIGHT: Headers = [
    (b"access-control-allow-methods", b"POST"),
    (b"access-control-allow-headers", b"Content-Type"),
    (b"access-control-max-age", b"86400"),
]


def _counts(accepted: int, dropped: int) -> Headers:
    """What became of the beacon's events, for whoever debugs with curl (browsers ignore it)."""
    return [(b"x-accepted", str(accepted).encode()), (b"x-dropped", str(dropped).encode())]


def _cors(origin: str) -> Headers:
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]
