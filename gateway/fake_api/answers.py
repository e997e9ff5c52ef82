"""What the fake answers to a track request: a scripted fault, or TikTok's own verdict.

`Ledger` holds the accepted tokens, the scripted `Fault`s and the record of every request
(`ReceivedRequest`), behind one lock, since tests script and inspect it from another thread.
`answer_track` answers like TikTok (token, scope, body validation, an HTTP 200 envelope)
unless a fault matches; `None` means: drop the connection without a word.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.core.events_api_schema import validate_request

Answer = tuple[int, dict[str, str], bytes]
_BAD_TOKEN = (40105, "Access token is incorrect or has been revoked.")
_NO_SCOPE = (40001, "No permission to operate on this event source with this access token.")


@dataclass
class Fault:
    """A scripted misbehaviour, applied to the next `times` matching requests (None: until cleared).

    `status` answers with that HTTP status; `code` answers HTTP 200 with that envelope code;
    `delay` waits before answering (alone: a slow but correct answer); `drop` closes the
    connection without a word. `pixel` limits the fault to one event_source_id; `event_id`
    to requests carrying that event, as TikTok refuses a whole request for one bad event
    (`{position}` in the message becomes the event's index in `data`).
    """

    status: int | None = None
    code: int | None = None
    message: str | None = None
    delay: float = 0.0
    drop: bool = False
    retry_after: float | None = None
    times: int | None = 1
    pixel: str | None = None
    event_id: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class ReceivedRequest:
    """One request as the fake saw it; the token is recorded only as right or wrong, and by
    the label it was given (`set_token(..., label=)`), never itself."""

    at: float
    token_ok: bool
    body: Any
    http_status: int
    code: int | None
    message: str
    fault: bool = False
    token_label: str | None = None
    request_id: str | None = None
    """The `request_id` of the fake's answer (None: no envelope was sent)."""


@dataclass
class Ledger:
    """The fake's tokens, faults and record; every access holds `lock`."""

    tokens: dict[str, frozenset[str] | None]
    labels: dict[str, str] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[ReceivedRequest] = field(default_factory=list)
    record_bodies: bool = True
    events_accepted: int = 0
    connections_opened: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, pixel: str | None, event_ids: list[Any]) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.pixel is not None and fault.pixel != pixel:
                    continue
                if fault.event_id is not None and fault.event_id not in event_ids:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def record(self, request: ReceivedRequest, accepted: int) -> None:
        with self.lock:
            if not self.record_bodies:
                request.body = None
            self.requests.append(request)
            self.events_accepted += accepted


async def answer_track(
    ledger: Ledger, headers: Mapping[str, str], raw: bytes, *, validate: bool
) -> Answer | None:
    """The answer to one `POST /event/track/`, recorded in `ledger`; None: drop the connection."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    pixel = body.get("event_source_id") if isinstance(body, dict) else None
    data = body.get("data") if isinstance(body, dict) else None
    event_ids = (
        [e.get("event_id") for e in data if isinstance(e, dict)] if isinstance(data, list) else []
    )
    fault = ledger.take_fault(pixel if isinstance(pixel, str) else None, event_ids)
    token = headers.get("access-token", "")
    with ledger.lock:
        known = token in ledger.tokens
        allowed = ledger.tokens.get(token)
        label = ledger.labels.get(token)
    seen = ReceivedRequest(time.time(), known, body, 200, None, "", token_label=label)
    if fault is not None:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop or fault.status is not None or fault.code is not None:
            return _faulted(ledger, fault, seen, event_ids)
    if not known:
        code, message = _BAD_TOKEN
    elif allowed is not None and pixel not in allowed:
        code, message = _NO_SCOPE
    elif validate:
        code, message = validate_request(body)
    else:
        code, message = (0, "OK") if isinstance(body, dict) else (40002, "Invalid JSON")
    seen.code, seen.message, seen.request_id = code, message, uuid.uuid4().hex
    ledger.record(seen, len(body["data"]) if code == 0 else 0)
    return 200, {}, envelope(code, message, seen.request_id)


def _faulted(
    ledger: Ledger, fault: Fault, seen: ReceivedRequest, event_ids: list[Any]
) -> Answer | None:
    """The answer a fault scripts (after its delay): a dropped connection, a status or a code."""
    seen.fault = True
    if fault.drop:
        seen.http_status, seen.message = 0, "dropped"
        ledger.record(seen, 0)
        return None
    if fault.status is not None:
        seen.http_status = fault.status
        ledger.record(seen, 0)
        extra = {"retry-after": str(int(fault.retry_after))} if fault.retry_after else {}
        return fault.status, extra, b'{"message":"injected failure"}'
    assert fault.code is not None
    message = fault.message or f"injected envelope code {fault.code}"
    if fault.event_id is not None:
        message = message.replace("{position}", str(event_ids.index(fault.event_id)))
    seen.code, seen.message, seen.request_id = fault.code, message, uuid.uuid4().hex
    ledger.record(seen, 0)
    return 200, {}, envelope(fault.code, message, seen.request_id)


def envelope(code: int, message: str, request_id: str | None = None) -> bytes:
    request_id = request_id or uuid.uuid4().hex
    return json.dumps(
        {"code": code, "message": message, "request_id": request_id, "data": {}}
    ).encode()
