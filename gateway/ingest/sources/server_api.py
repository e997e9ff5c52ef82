"""The server-to-server endpoint: backends, CRMs and postbacks post events with an API key.

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

from gateway.core.errors import EventError, PayloadTooLarge
from gateway.core.event import Event
from gateway.ingest.parser import parse_event
from gateway.ingest.pipeline import Pipeline
from gateway.outbox import OutboxUnavailable
from gateway.web.metrics import Metrics
from gateway.web.request_body import parse_json, read_body

_ENVELOPE_KEYS = frozenset({"pixel_id", "test_event_code", "events"})
_EVENT_EXTRA_KEYS = frozenset({"pixel_id"})


def _error(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status)


def _authorised(request: Request, keys: tuple[bytes, ...]) -> bool:
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    given = given or request.headers.get("x-api-key", "").strip()
    if not given:
        return False
    candidate = given.encode()
    # compare against every key, always, so timing does not tell which prefix matched
    return any([hmac.compare_digest(candidate, key) for key in keys])


class ServerEventsEndpoint:
    """ASGI-style handler for POST /v1/events; precomputes keys and limits once."""

    def __init__(self, pipeline: Pipeline, metrics: Metrics) -> None:
        options = pipeline.settings.server_api
        self._pipeline = pipeline
        self._metrics = metrics
        self._keys = tuple(k.reveal().encode() for k in options.api_keys)
        self._max_body = options.max_body_bytes
        self._max_events = options.max_events

    async def __call__(self, request: Request) -> Response:
        if not self._keys:
            return _error(401, "unauthorized", "the server API is off: configure an API key")
        if not _authorised(request, self._keys):
            return _error(401, "unauthorized", "missing or wrong API key")
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return _error(415, "unsupported_media_type", "send Content-Type: application/json")
        length = request.headers.get("content-length")
        body = parse_json(await read_body(request.receive, length, self._max_body))
        events = self._parse(body)
        try:
            await self._pipeline.accept(events)
        except OutboxUnavailable:
            return JSONResponse(
                {"error": "unavailable", "message": "events cannot be stored now; retry"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        self._metrics.received.labels("server").inc(len(events))
        return JSONResponse(
            {"accepted": len(events), "event_ids": sorted({e.event_id for e in events})},
            status_code=202,
        )

    def _parse(self, body: Any) -> list[Event]:
        items: Any
        envelope: dict[str, Any]
        if isinstance(body, dict) and "event" in body and "events" not in body:
            items, envelope, prefix = [body], {}, ""
        elif isinstance(body, dict):
            unknown = sorted(set(body) - _ENVELOPE_KEYS)
            if unknown:
                raise EventError(unknown[0], "unknown field (pixel_id, test_event_code, events)")
            items, envelope, prefix = body.get("events"), body, "events"
            if not isinstance(items, list) or not items:
                raise EventError("events", "must be a non-empty list of events")
        else:
            raise EventError("body", "must be a JSON object")
        if len(items) > self._max_events:
            raise PayloadTooLarge("events", f"more than {self._max_events} events in one request")
        now = self._pipeline.now()
        code = envelope.get("test_event_code")
        if code is not None and not isinstance(code, str):
            raise EventError("test_event_code", "must be a string")
        events: list[Event] = []
        for index, item in enumerate(items):
            where = f"{prefix}[{index}]" if prefix else ""
            try:
                pixel_id = item.get("pixel_id") if isinstance(item, dict) else None
                pixel = self._pipeline.pixel(pixel_id or envelope.get("pixel_id"))
                parsed = parse_event(
                    item,
                    pixel=pixel,
                    rules=self._pipeline.rules,
                    now=now,
                    test_event_code=code,
                    extra_keys=_EVENT_EXTRA_KEYS,
                )
            except EventError as exc:
                if not where:
                    raise
                raise type(exc)(f"{where}.{exc.field}", exc.message) from None
            events.extend(parsed.events)
        return events
