"""The browser beacon endpoint: one event (or a few) from the snippet, enriched and stored.

`navigator.sendBeacon` posts `text/plain` without a CORS preflight, so the Origin header is
the gate: only configured origins are served, and the origin picks the pixel. What the
browser says about itself is not trusted where the server knows better: the IP and user
agent come from the connection, `_ttp` and `ttclid` from first-party cookies and the URLs by
the spec's precedence. The answer is 202 only once the events are in the outbox; the same
answer sets the first-party cookies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.config import PixelConfig, Settings
from gateway.cookies import ClickRecord, VisitorCookies
from gateway.enrich import (
    ClientIpResolver,
    is_bot,
    is_tag_testing,
    locale_from_header,
    resolve_click_id,
    valid_token,
)
from gateway.errors import EventError, PayloadTooLarge
from gateway.event import Event
from gateway.event_parser import parse_event
from gateway.metrics import Metrics
from gateway.outbox import OutboxUnavailable
from gateway.pipeline import Pipeline
from gateway.server_api import parse_json, read_body

log = logging.getLogger(__name__)
_BROWSER_ONLY_KEYS = frozenset({"consent", "pixel_id"})
_MEDIA_TYPES = frozenset({"text/plain", "application/json"})
_SERVER_KNOWS = ("ip", "user_agent")


@dataclass(frozen=True, slots=True)
class _Visitor:
    ip: str | None
    user_agent: str
    ttp: str | None
    accept_language: str | None


class BeaconEndpoint:
    def __init__(
        self, pipeline: Pipeline, settings: Settings, metrics: Metrics, cookies: VisitorCookies
    ) -> None:
        browser = settings.browser
        self._pipeline = pipeline
        self._metrics = metrics
        self._cookies = cookies
        self._ips = ClientIpResolver(browser.trusted_proxies, browser.client_ip_header)
        self._max_body = browser.max_body_bytes
        self._max_events = browser.max_events
        self._drop_bots = browser.drop_bots
        self._tag_hosts = browser.tag_testing_hosts
        self._generate_ttp = browser.generate_ttp
        self._pixels_by_origin: dict[str, list[PixelConfig]] = {}
        for pixel in settings.pixels:
            if pixel.event_source == "web":
                for origin in pixel.origins:
                    self._pixels_by_origin.setdefault(origin, []).append(pixel)

    def _cors(self, origin: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    async def __call__(self, request: Request) -> Response:
        origin = request.headers.get("origin", "").lower()
        pixels = self._pixels_by_origin.get(origin)
        if pixels is None:
            message = "this origin may not send events here" if origin else "Origin header missing"
            return JSONResponse({"error": "forbidden_origin", "message": message}, 403)
        cors = self._cors(origin)
        if request.method == "OPTIONS":
            cors.update(
                {
                    "Access-Control-Allow-Methods": "POST",
                    "Access-Control-Allow-Headers": "Content-Type",
                    "Access-Control-Max-Age": "86400",
                }
            )
            return Response(status_code=204, headers=cors)
        try:
            return await self._accept(request, pixels, cors)
        except EventError as exc:
            return JSONResponse(exc.to_json(), status_code=exc.status_code, headers=cors)

    async def _accept(
        self, request: Request, pixels: list[PixelConfig], cors: dict[str, str]
    ) -> Response:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in _MEDIA_TYPES:
            return JSONResponse(
                {
                    "error": "unsupported_media_type",
                    "message": "send text/plain or application/json",
                },
                415,
                headers=cors,
            )
        body = parse_json(await read_body(request, self._max_body))
        items = body if isinstance(body, list) else [body]
        if not items:
            raise EventError("body", "no event")
        if len(items) > self._max_events:
            raise PayloadTooLarge("body", f"more than {self._max_events} events in one beacon")
        headers = request.headers
        user_agent = headers.get("user-agent", "")
        if self._drop_bots and is_bot(user_agent):
            self._metrics.dropped.labels("bot").inc(len(items))
            return JSONResponse({"accepted": 0, "dropped": len(items)}, 202, headers=cors)
        ip = self._ips.resolve(request.client.host if request.client else None, headers)
        now = self._pipeline.now()
        cookies = request.cookies
        record = self._cookies.read_click(cookies.get(self._cookies.signed_name))
        ttp = valid_token(cookies.get("_ttp"))
        events: list[Event] = []
        dropped = 0
        click: ClickRecord | None = None
        for index, item in enumerate(items):
            where = f"[{index}]" if isinstance(body, list) else ""
            try:
                raw, pixel, consent = self._split(item, pixels)
                page_value = raw.get("page")
                page: dict[str, Any] = page_value if isinstance(page_value, dict) else {}
                page_url, referrer = page.get("url"), page.get("referrer")
                if is_tag_testing(page_url if isinstance(page_url, str) else None, self._tag_hosts):
                    self._metrics.dropped.labels("tag_testing").inc()
                    dropped += 1
                    continue
                if pixel.require_consent and consent != "granted":
                    self._metrics.dropped.labels("no_consent").inc()
                    dropped += 1
                    continue
                user = raw.get("user")
                if user is None or isinstance(user, dict):
                    visitor = _Visitor(ip, user_agent, ttp, headers.get("accept-language"))
                    raw["user"], ttp, click = self._enrich_user(
                        dict(user or {}), visitor, page_url, referrer, cookies, record, now
                    )
                parsed = parse_event(
                    raw, pixel=pixel, rules=self._pipeline.rules, now=now, from_browser=True
                )
            except EventError as exc:
                raise type(exc)(f"{where}.{exc.field}".lstrip("."), exc.message) from None
            if parsed.warnings:
                self._metrics.identifiers_dropped.inc(len(parsed.warnings))
            events.extend(parsed.events)
        try:
            await self._pipeline.accept(events)
        except OutboxUnavailable:
            return JSONResponse(
                {"error": "unavailable", "message": "events cannot be stored now; retry"},
                503,
                headers={**cors, "Retry-After": "5"},
            )
        if events:
            self._metrics.received.labels("browser").inc(len(events))
        response = JSONResponse({"accepted": len(events), "dropped": dropped}, 202, headers=cors)
        self._set_cookies(response, click, record, ttp, cookies)
        return response

    def _enrich_user(
        self,
        user: dict[str, Any],
        visitor: _Visitor,
        page_url: Any,
        referrer: Any,
        cookies: Mapping[str, str],
        record: ClickRecord | None,
        now: float,
    ) -> tuple[dict[str, Any], str | None, ClickRecord | None]:
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
        ttclid, click = self._click(
            page_url, referrer, user.pop("ttclid", None), cookies.get("ttclid"), record, now
        )
        if ttclid:
            user["ttclid"] = ttclid
        if "locale" not in user:
            locale = locale_from_header(visitor.accept_language)
            if locale:
                user["locale"] = locale
        return user, ttp, click

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

    def _click(
        self,
        page_url: Any,
        referrer: Any,
        explicit: Any,
        cookie: str | None,
        record: ClickRecord | None,
        now: float,
    ) -> tuple[str | None, ClickRecord | None]:
        """The ttclid to send (None once older than the attribution window) and its record."""
        ttclid, _ = resolve_click_id(
            page_url if isinstance(page_url, str) else None,
            referrer if isinstance(referrer, str) else None,
            explicit,
            cookie or (record.ttclid if record else None),
        )
        if ttclid is None:
            return None, None
        if record is not None and record.ttclid == ttclid:
            current = record
        else:
            current = ClickRecord(ttclid, int(now))
        if now - current.first_seen > self._cookies.attribution_window_seconds:
            return None, None
        return ttclid, current

    def _set_cookies(
        self,
        response: Response,
        click: ClickRecord | None,
        previous: ClickRecord | None,
        ttp: str | None,
        cookies: dict[str, str],
    ) -> None:
        if click is not None:
            if cookies.get("ttclid") != click.ttclid:
                response.headers.append("set-cookie", self._cookies.ttclid_cookie(click.ttclid))
            if previous != click:
                response.headers.append("set-cookie", self._cookies.click_cookie(click))
        if ttp:
            response.headers.append("set-cookie", self._cookies.ttp_cookie(ttp))
