"""The server-to-server endpoint: backends, CRMs and shops post events with an API key.

    POST /v1/events
    Authorization: Bearer <api key>        (or X-Api-Key: <api key>)
    {"pixel_id": "C…", "events": [{"event": "Purchase", "event_id": "o-1", "user": {…}}, …]}

A single event object is accepted too. The request is all or nothing: one invalid event
rejects the whole request with the field at fault (`events[3].user.email`), so a retry after
the fix cannot half-duplicate. 202 means every event is durably in the outbox.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.context import LeadMemory
from gateway.core.errors import EventError, PayloadTooLarge, Unauthorized, UnsupportedMediaType
from gateway.ingest.pipeline import Pipeline, placed
from gateway.ingest.policy import SERVER, Item
from gateway.settings import Settings
from gateway.web.client_ip import ClientIpResolver
from gateway.web.errors import GatewayJson, rendered
from gateway.web.failed_auth import FailedAuthLimit
from gateway.web.rate_limit import RateLimit
from gateway.web.request_body import parse_json, read_body

PATH = "/v1/events"
_ENVELOPE_KEYS = frozenset({"pixel_id", "test_event_code", "events"})


def authorised(request: Request, keys: tuple[bytes, ...]) -> bool:
    """A bearer token or X-Api-Key equal to one of `keys`, compared in constant time."""
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    given = given or request.headers.get("x-api-key", "").strip()
    if not given:
        return False
    candidate = given.encode()
    # compare against every key, always, so timing does not tell which prefix matched
    return any([hmac.compare_digest(candidate, key) for key in keys])


class ServerCallers:
    """Who may call a server-to-server endpoint (`/v1/events`, `/v1/imports`, the relay): a
    client neither locked out by its failed authentications nor over its rate limit — both
    checked before the key is, so no free guesses — that sends one of the API keys."""

    def __init__(
        self, settings: Settings, limit: RateLimit, failed: FailedAuthLimit, endpoint: str
    ) -> None:
        """`failed`: the budget of failed authentications, counted here as `endpoint`."""
        self._limit = limit
        self._failed = failed
        self._endpoint = endpoint
        browser = settings.browser
        self._ips = ClientIpResolver(browser.trusted_proxies, browser.client_ip_header)
        self._keys = tuple(k.reveal().encode() for k in settings.server_api.api_keys)

    async def admit(self, request: Request) -> None:
        """Return when the caller may go on; raise TooManyRequests or Unauthorized."""
        await self.count(request)
        if not self._keys:
            raise Unauthorized("the server API is off: configure an API key")
        if not authorised(request, self._keys):
            await self.failed(request)
            raise Unauthorized("missing or wrong API key")

    async def count(self, request: Request) -> None:
        """The lockout and the rate limit alone (the relay checks TikTok's tokens itself);
        a client that never failed is not even looked up while nobody has failed."""
        watching = self._failed.watching
        if watching or self._limit.enabled:
            ip = self._ip(request)
            if watching:
                await self._failed.check(ip)
            if self._limit.enabled:
                await self._limit.admit(ip)

    async def failed(self, request: Request) -> None:
        """Count a missing or wrong credential (raises TooManyRequests when one too many)."""
        await self._failed.failed(self._ip(request), self._endpoint)

    def _ip(self, request: Request) -> str | None:
        peer = request.client.host if request.client else None
        return self._ips.resolve(peer, request.headers)


class ServerEventsEndpoint:
    """POST /v1/events; precomputes keys and limits once."""

    def __init__(
        self,
        pipeline: Pipeline,
        limit: RateLimit,
        failed: FailedAuthLimit,
        leads: LeadMemory | None = None,
    ) -> None:
        """`limit` counts requests and `failed` wrong keys per client, both checked before
        the key (no free guesses); `leads` fills in the browser context of events that name
        a lead the browser showed."""
        self._leads = leads
        options = pipeline.settings.server_api
        self._pipeline = pipeline
        self._callers = ServerCallers(pipeline.settings, limit, failed, "server_api")
        self._max_body = options.max_body_bytes
        self._max_events = options.max_events

    async def handle(self, request: Request) -> Response:
        await self._callers.admit(request)
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise UnsupportedMediaType("send Content-Type: application/json")
        length = request.headers.get("content-length")
        body = parse_json(await read_body(request.receive, length, self._max_body))
        items, indexed = self._items(body)
        if self._leads is not None:
            await self._leads.fill_items(items)
        events = await self._pipeline.ingest(items, SERVER, indexed=indexed)
        return JSONResponse(
            {"accepted": len(events), "event_ids": sorted({e.event_id for e in events})},
            status_code=202,
        )

    def _items(self, body: Any) -> tuple[list[Item], str | None]:
        envelope: dict[str, Any]
        raw_items: Any
        if isinstance(body, dict) and "event" in body and "events" not in body:
            raw_items, envelope, indexed = [body], {}, None
        elif isinstance(body, dict):
            unknown = sorted(set(body) - _ENVELOPE_KEYS)
            if unknown:
                raise EventError(unknown[0], "unknown field (pixel_id, test_event_code, events)")
            raw_items, envelope, indexed = body.get("events"), body, "events"
            if not isinstance(raw_items, list) or not raw_items:
                raise EventError("events", "must be a non-empty list of events")
        else:
            raise EventError("body", "must be a JSON object")
        if len(raw_items) > self._max_events:
            raise PayloadTooLarge("events", f"more than {self._max_events} events in one request")
        code = envelope.get("test_event_code")
        if code is not None and not isinstance(code, str):
            raise EventError("test_event_code", "must be a string")
        items = []
        for index, raw in enumerate(raw_items):
            own = raw.pop("pixel_id", None) if isinstance(raw, dict) else None
            try:
                pixel = self._pipeline.pixel(own or envelope.get("pixel_id"))
            except EventError as exc:
                raise placed(exc, indexed, index) from None
            items.append(Item(raw, pixel, test_event_code=code))
        return items, indexed


def routes(
    pipeline: Pipeline,
    limit: RateLimit,
    failed: FailedAuthLimit,
    leads: LeadMemory | None = None,
) -> list[BaseRoute]:
    endpoint = ServerEventsEndpoint(pipeline, limit, failed, leads)
    return [Route(PATH, rendered(endpoint.handle, GatewayJson()), methods=["POST"])]
