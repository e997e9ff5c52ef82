"""The browser beacon endpoint: one event (or a few) from the snippet, enriched and stored.

`navigator.sendBeacon` posts `text/plain` without a CORS preflight, so the Origin header is
the gate: only configured origins are served, and the origin picks the pixel. The IP and user
agent come from the connection, `_ttp` and `ttclid` from first-party cookies, the URLs by the
spec's precedence. The answer is 204 once the events are in the outbox (`X-Accepted` /
`X-Dropped` count them) and sets the first-party cookies. The hottest path of the gateway:
a plain ASGI app that reads only the headers and cookies it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from gateway.core.errors import (
    EventError,
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from gateway.http.client_ip import ClientIpResolver
from gateway.http.errors import ErrorRenderer, GatewayJson, log_unexpected
from gateway.http.rate_limit import RateLimit
from gateway.http.request_body import check_length, parse_json, read_body, whole_body
from gateway.ingest.pipeline import Pipeline, placed
from gateway.ingest.policy import BROWSER, Item
from gateway.ingest.sources.beacon.cookies import VisitorCookies
from gateway.ingest.sources.beacon.enrich import bot_rule, is_tag_testing
from gateway.ingest.sources.beacon.visitor import Visitor
from gateway.settings import PixelConfig, Settings, pick_pixel
from gateway.storage.outbox.guard import BacklogGuard

log = logging.getLogger(__name__)
Scope = Mapping[str, Any]
Headers = list[tuple[bytes, bytes]]
_BROWSER_ONLY_KEYS = frozenset({"consent", "pixel_id", "pixel_copy"})
_PIXEL_COPY = frozenset({"loaded", "blocked", "absent"})
"""What the snippet saw of the TikTok pixel (`ttq`) when the event was tracked; anything else
(an older snippet, a typo) is recorded as unknown rather than refused."""
_MEDIA_TYPES = frozenset({"text/plain", "application/json"})
_USUAL_CONTENT_TYPES = frozenset({*_MEDIA_TYPES, "text/plain;charset=UTF-8"})
"""Content-Type headers as browsers send them (`sendBeacon` of a string: the last), taken
without parsing."""
_NOT_THIS_SITE = "is not a pixel of this site"
Pixels = Mapping[str, PixelConfig]
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
_NO_BODY = {"type": "http.response.body", "body": b""}
_COOKIE_HEADERS_REMEMBERED = 4096
_MAX_REMEMBERED_COOKIE = 2048


class ForbiddenOrigin(Forbidden):
    error = "forbidden_origin"


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
        self,
        pipeline: Pipeline,
        cookies: VisitorCookies,
        *,
        limit: RateLimit,
        guard: BacklogGuard,
        renderer: ErrorRenderer | None = None,
    ) -> None:
        """`limit` counts beacons per client; `guard` sheds them while the backlog is past
        a limit (both are checked before the body is read: refusing must be cheap)."""
        browser, network = pipeline.settings.browser, pipeline.settings.network
        self._pipeline = pipeline
        self._limit = limit
        self._guard = guard
        self._renderer = renderer or GatewayJson()
        self._cookies = cookies
        self._cookie_names = (*_COOKIES_READ, cookies.signed_name)
        self._ips = ClientIpResolver(
            network.trusted_proxies,
            network.client_ip_header,
            on_invalid_hop=pipeline.metrics.invalid_forwarded_hops.inc,
        )
        self._wanted_headers = {
            name.encode(): name
            for name in (*_HEADERS_READ, network.client_ip_header)
            if name is not None
        }
        self._cookies_seen: dict[str, Mapping[str, str]] = {}
        self._max_body = browser.max_body_bytes
        self._max_events = browser.max_events
        self._drop_bots = browser.drop_bots
        self._tag_hosts = browser.tag_testing_hosts
        self._generate_ttp = browser.generate_ttp
        self._sites = _by_origin(pipeline.settings.pixels)

    def reconfigure(self, settings: Settings) -> None:
        """Take a reloaded configuration's pixels and origins: one reference swapped, read
        once per beacon, so a beacon sees the old table or the new."""
        self._sites = _by_origin(settings.pixels)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            status, headers = await self._answer(scope, receive)
        except Exception as exc:  # every error answers in our JSON, with CORS when allowed
            log_unexpected(exc, "the beacon")
            if not self._pipeline.told(exc):  # the pipeline told its own
                self._pipeline.refused(exc, BROWSER.name)
            answer = self._renderer.render(exc)
            payload = orjson.dumps(answer.body)
            cors = self._cors_of(scope) if isinstance(exc, GatewayError) else []
            headers = [*cors, *answer.raw_headers(payload)]
            start = {"type": "http.response.start", "status": answer.status, "headers": headers}
            await send(start)
            await send({"type": "http.response.body", "body": payload})
            return
        # no body: the answer leaves in one write, one packet
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(_NO_BODY)

    def _headers(self, raw: Headers) -> dict[str, str]:
        """The headers this endpoint reads; repeated ones joined as HTTP allows (', ')."""
        headers: dict[str, str] = {}
        wanted = self._wanted_headers
        for name, value in raw:
            key = wanted.get(name)
            if key is not None:
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return headers

    def _read_cookies(self, header: str) -> Mapping[str, str]:
        """`read_cookies` of a Cookie header, remembered: a visitor sends the same one with
        every beacon (bounded; the values are click ids and tokens, no personal data)."""
        found = self._cookies_seen.get(header)
        if found is None:
            found = read_cookies(header, self._cookie_names)
            if len(header) <= _MAX_REMEMBERED_COOKIE:
                if len(self._cookies_seen) >= _COOKIE_HEADERS_REMEMBERED:
                    self._cookies_seen.clear()
                self._cookies_seen[header] = found
        return found

    def _cors_of(self, scope: Scope) -> Headers:
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1").lower()
                site = self._sites.get(origin)
                return site.cors if site is not None else []
        return []

    async def _answer(self, scope: Scope, receive: Any) -> tuple[int, Headers]:
        """(204, headers) once the events are stored; raises what the visitor did wrong."""
        headers = self._headers(scope["headers"])
        origin = headers.get("origin", "").lower()
        site = self._sites.get(origin)
        if site is None:
            message = "this origin may not send events here" if origin else "Origin header missing"
            raise ForbiddenOrigin(message)
        cors = site.cors
        method = scope["method"]
        if method == "OPTIONS":
            return 204, [*cors, *_PREFLIGHT]
        if method != "POST":
            raise MethodNotAllowed("POST a JSON event", headers={"Allow": "POST, OPTIONS"})
        client = scope.get("client")
        peer = client[0] if client else None
        ip = self._ips.resolve(peer, headers)
        if not self._limit.admit_here(ip):
            await self._limit.admit(ip)
        self._guard.check()
        content_type = headers.get("content-type", "")
        if content_type not in _USUAL_CONTENT_TYPES:
            media = content_type.split(";", 1)[0].strip().lower()
            if media not in _MEDIA_TYPES:
                raise UnsupportedMediaType("send text/plain or application/json")
        check_length(headers.get("content-length"), self._max_body)
        message = await receive()
        data = whole_body(message, self._max_body)
        if data is None:
            data = await read_body(receive, None, self._max_body, first=message)
        body = parse_json(data)
        raw_items = body if isinstance(body, list) else [body]
        if not raw_items:
            raise EventError("body", "no event")
        if len(raw_items) > self._max_events:
            raise PayloadTooLarge("body", f"more than {self._max_events} events in one beacon")
        user_agent = headers.get("user-agent", "")
        if self._drop_bots and self._dropped_as_bot(user_agent, raw_items, site):
            return 204, [*cors, *_counts(0, len(raw_items))]
        cookies = self._read_cookies(headers.get("cookie", ""))
        visitor = Visitor(
            self._cookies,
            ip=ip,
            user_agent=user_agent,
            accept_language=headers.get("accept-language"),
            cookies=cookies,
            generate_ttp=self._generate_ttp,
            now=self._pipeline.now(),
            ip_from="socket" if ip == peer else "proxy header",
        )
        indexed = "" if isinstance(body, list) else None
        items: list[Item] = []
        for index, raw in enumerate(raw_items):
            try:
                item = self._item(raw, site, visitor)
            except EventError as exc:
                raise placed(exc, indexed, index) from None
            if item is not None:
                items.append(item)
        dropped = len(raw_items) - len(items)
        events = await self._pipeline.ingest(items, BROWSER, indexed=indexed)
        if not events:  # no consent, no cookie: nothing of this visitor is kept
            return 204, [*cors, *_counts(0, dropped)]
        return 204, [*cors, *visitor.cookies_to_set(), *_counts(len(events), dropped)]

    def _dropped_as_bot(self, user_agent: str, raw_items: list[Any], site: _Site) -> bool:
        """Whether a bot sent the beacon: then its events are dropped, with the rule."""
        rule = bot_rule(user_agent)
        if rule is None:
            return False
        default = site.default.id
        self._pipeline.dropped(
            "bot", len(raw_items), source=BROWSER.name, detail=rule, items=raw_items, pixel=default
        )
        return True

    def _item(self, raw: Any, site: _Site, visitor: Visitor) -> Item | None:
        """The pipeline's item for one browser event, or None when it is dropped on purpose."""
        if not isinstance(raw, dict):
            raise EventError("event", "each event must be a JSON object")
        consent = raw.get("consent")
        if consent not in (None, "granted", "denied"):
            raise EventError("consent", "must be 'granted' or 'denied'")
        named = raw.get("pixel_id")
        pixel = (
            site.default
            if named is None
            else pick_pixel(site.pixels, named, unknown=_NOT_THIS_SITE)
        )
        page = raw.get("page")
        page_url, referrer = (
            (page.get("url"), page.get("referrer")) if isinstance(page, dict) else (None, None)
        )
        if is_tag_testing(page_url if isinstance(page_url, str) else None, self._tag_hosts):
            self._pipeline.dropped("tag_testing", source=BROWSER.name, items=(raw,), pixel=pixel.id)
            return None
        if consent == "denied" or (pixel.require_consent and consent != "granted"):
            detail = "denied" if consent == "denied" else "not given"
            self._pipeline.dropped(
                "no_consent", source=BROWSER.name, detail=detail, items=(raw,), pixel=pixel.id
            )
            return None
        event = (
            raw
            if _BROWSER_ONLY_KEYS.isdisjoint(raw)
            else {k: v for k, v in raw.items() if k not in _BROWSER_ONLY_KEYS}
        )
        observed = visitor.observe(raw.get("user"), page_url, referrer)
        copy = raw.get("pixel_copy")
        if copy in _PIXEL_COPY:
            observed.pixel_copy = copy
        return Item(event, pixel, observed)


@dataclass(frozen=True, slots=True)
class _Site:
    """What a beacon's origin decides, worked out once per configuration: the web pixels
    it may send for (by id), the default one (the first), and the CORS headers."""

    pixels: Pixels
    default: PixelConfig
    cors: Headers


def _by_origin(pixels: Sequence[PixelConfig]) -> dict[str, _Site]:
    """Each site origin's `_Site`."""
    found: dict[str, dict[str, PixelConfig]] = {}
    for pixel in pixels:
        if pixel.event_source == "web":
            for origin in pixel.origins:
                found.setdefault(origin, {})[pixel.id] = pixel
    return {
        origin: _Site(by_id, next(iter(by_id.values())), _cors(origin))
        for origin, by_id in found.items()
    }


_PREFLIGHT: Headers = [
    (b"access-control-allow-methods", b"POST"),
    (b"access-control-allow-headers", b"Content-Type"),
    (b"access-control-max-age", b"86400"),
]


@lru_cache(maxsize=256)
def _counts(accepted: int, dropped: int) -> Headers:
    """What became of the beacon's events, for whoever debugs with curl (browsers ignore it).
    Cached: the answers repeat (callers copy, never change, the list)."""
    return [(b"x-accepted", str(accepted).encode()), (b"x-dropped", str(dropped).encode())]


def _cors(origin: str) -> Headers:
    """An allowed origin's CORS headers, built once per configuration (`_Site`)."""
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]
