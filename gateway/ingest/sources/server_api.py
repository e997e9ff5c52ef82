"""The server-to-server endpoint: backends, CRMs and shops post events with an API key.

    POST /v1/events     Authorization: Bearer <api key>   (or X-Api-Key: <api key>)
    {"pixel_id": "C…", "events": [{"event": "Purchase", "event_id": "o-1", "user": {…}}, …]}

A single event object is accepted too. All or nothing: one invalid event rejects the request
with the field at fault (`events[3].user.email`), so a retry after the fix cannot
half-duplicate. 202 means every event is durably in the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.core.errors import EventError, PayloadTooLarge, UnsupportedMediaType
from gateway.http.auth import Gate
from gateway.http.errors import GatewayJson, rendered
from gateway.http.request_body import parse_json, read_body
from gateway.ingest.leads import LeadMemory
from gateway.ingest.pipeline import Pipeline, placed
from gateway.ingest.policy import SERVER, Item, SourcePolicy
from gateway.ingest.source import SourceContext

PATH = "/v1/events"
_ENVELOPE_KEYS = frozenset({"pixel_id", "test_event_code", "events"})


class ServerEventsEndpoint:
    """POST /v1/events; limits read once."""

    def __init__(self, pipeline: Pipeline, gate: Gate, leads: LeadMemory | None = None) -> None:
        """`gate` checks the client's limits, then its API key; `leads` fills in the
        browser context of events that name a lead the browser showed."""
        self._leads = leads
        options = pipeline.settings.server_api
        self._pipeline = pipeline
        self._gate = gate
        self._max_body = options.max_body_bytes
        self._max_events = options.max_events

    async def handle(self, request: Request) -> Response:
        await self._gate.admit(request)
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


@dataclass(frozen=True)
class ServerApiSource:
    name: str = "server_api"
    policy: SourcePolicy = SERVER

    def routes(self, context: SourceContext) -> list[BaseRoute]:
        gate = context.auth.gate("server_api", context.limits.server_api)
        endpoint = ServerEventsEndpoint(context.pipeline, gate, context.leads)
        return [Route(PATH, rendered(endpoint.handle, GatewayJson()), methods=["POST"])]


SOURCE = ServerApiSource()
