"""TikTok's request bodies read into 2.0 events: Events 2.0 as it is, Events 1.0 field by field.

A 1.0 event (`/pixel/track/`, `/pixel/batch/`, `/offline/…`) becomes the 2.0 event TikTok's
migration notes describe: `timestamp` → `event_time`, `context.ad.callback` → `user.ttclid`,
`context.user.*` → `user.*` (`phone_number` → `phone`, offline `emails[]` / `phone_numbers[]`
→ `email` / `phone`), `context.ip` / `user_agent` / `locale` → `user.*`, `context.page` →
`page`. Nothing here validates values: the shared parser does, and `legacy_field` names its
complaints in the sender's 1.0 words. The body shapes: docs/design/relay.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import EventError
from gateway.ingest.fields import key_name

WEB, OFFLINE = "web", "offline"
_V2_KEYS = frozenset({"event_source", "event_source_id", "test_event_code", "partner_name", "data"})
_V1_EVENT_KEYS = frozenset(
    {"event", "event_id", "timestamp", "context", "properties", "test_event_code"}
    | {"limited_data_use"}
)
_V1_BATCH_EVENT_KEYS = _V1_EVENT_KEYS | {"type"}
_V1_BODY_KEYS = {  # a request of one event: the event's keys and the request's own
    offline: _V1_EVENT_KEYS | {"event_set_id" if offline else "pixel_code", "partner_name"}
    for offline in (False, True)
}
_V1_USER = {
    # 1.0 key → the parser's key (which names it in errors; `legacy_field` maps it back)
    "email": "email",
    "emails": "emails",
    "phone_number": "phone_number",
    "phone_numbers": "phones",
    "external_id": "external_id",
    "external_ids": "external_ids",
    "ttp": "ttp",
}
_V1_CONTEXT_USER_LEVEL = ("ip", "user_agent", "locale")
_V1_AS_IS = ("event", "event_id", "limited_data_use")


@dataclass(slots=True)
class RelayRequest:
    """One request in 2.0 terms: its destination as the sender named it, and its events."""

    source_id: Any
    source_id_field: str
    """How the sender named the destination: event_source_id, pixel_code or event_set_id."""
    event_source: str
    """web / app / offline / crm: stated in 2.0, implied by the path in 1.0."""
    events: list[Any]
    codes: list[str | None] = field(default_factory=list)
    """The test_event_code of each event (1.0 may give one per event)."""
    indexed: str | None = None
    """The list the events came in (`data`, `batch`), for error fields; None for one event."""
    legacy: bool = False
    """1.0: errors are named in 1.0 words, and each event counts as translated."""
    ignored: list[str] = field(default_factory=list)
    """Fields no mapping reads (`batch[0].foo`): ignored, counted, named in a debug line."""


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise EventError("body", "must be a JSON object")
    return body


def _code(raw: Any, where: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise EventError(where, "must be a string")
    return raw.strip() or None


def _events(body: dict[str, Any], key: str) -> list[Any]:
    events = body.get(key)
    if not isinstance(events, list) or not events:
        raise EventError(key, "must be a non-empty list of events")
    return events


def read_v2(body: Any) -> RelayRequest:
    """An Events 2.0 body; its events are already in 2.0 form."""
    body = _object(body)
    source = body.get("event_source")
    if not isinstance(source, str) or not source:
        raise EventError("event_source", "required: web, app, offline or crm")
    events = _events(body, "data")
    code = _code(body.get("test_event_code"), "test_event_code")
    return RelayRequest(
        source_id=body.get("event_source_id"),
        source_id_field="event_source_id",
        event_source=source.strip().lower(),
        events=events,
        codes=[code] * len(events),
        indexed="data",
        ignored=[key_name(k) for k in sorted(set(body) - _V2_KEYS)],
    )


def read_v1(body: Any, *, offline: bool, batch: bool) -> RelayRequest:
    """A 1.0 body (pixel or offline, one event or a batch), translated to 2.0 events."""
    body = _object(body)
    id_field = "event_set_id" if offline else "pixel_code"
    ignored: list[str] = []
    if batch:
        top = {id_field, "batch", "test_event_code", "partner_name"}
        ignored.extend(key_name(k) for k in sorted(set(body) - top))
        raws, indexed = _events(body, "batch"), "batch"
    else:
        raws, indexed = [body], None  # the body is the event (its destination ignored)
    shared = _code(body.get("test_event_code"), "test_event_code") if batch else None
    allowed = _V1_BATCH_EVENT_KEYS if batch else _V1_BODY_KEYS[offline]
    source_id = body.get(id_field)
    events, codes = [], []
    for index, raw in enumerate(raws):
        place = f"{indexed}[{index}]." if indexed else ""
        try:
            if batch and isinstance(raw, dict) and id_field in raw:
                # published clients repeat the destination in each element: it must agree
                source_id = _same_destination(raw[id_field], source_id, id_field)
            event, code = _v1_event(raw, allowed, batch=batch, ignored=ignored, place=place)
        except EventError as exc:
            raise exc.at(f"{indexed}[{index}]") if indexed else exc from None
        events.append(event)
        codes.append(code or shared)
    return RelayRequest(
        source_id=source_id,
        source_id_field=id_field,
        event_source=OFFLINE if offline else WEB,
        events=events,
        codes=codes,
        indexed=indexed,
        legacy=True,
        ignored=ignored,
    )


def _same_destination(given: Any, request: Any, id_field: str) -> Any:
    """A batch element's own pixel_code / event_set_id: the request's, or the first given."""
    if request is None or given == request:
        return given
    raise EventError(id_field, f"is not the request's {id_field}: one destination a request")


def _table(where: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise EventError(where, "must be an object")
    return raw


def _v1_event(
    raw: Any, allowed: frozenset[str], *, batch: bool, ignored: list[str], place: str
) -> tuple[dict[str, Any], str | None]:
    """One 1.0 event as a 2.0 event, and its test_event_code; `allowed`: its known keys.
    Keys no mapping reads are named in `ignored` (at `place`), never refused."""
    if not isinstance(raw, dict):
        raise EventError("event", "each event must be a JSON object")
    if not allowed.issuperset(raw):
        ids = ("pixel_code", "event_set_id")
        unread = [k for k in raw if k not in allowed and not (batch and k in ids)]
        ignored.extend(place + key_name(k) for k in sorted(unread))
    if batch and raw.get("type", "track") != "track":
        raise EventError("type", 'must be "track"')
    event: dict[str, Any] = {}
    for key in _V1_AS_IS:  # a loop, not a comprehension: this runs for every 1.0 event
        if key in raw:
            event[key] = raw[key]
    if "properties" in raw:
        event["properties"] = _v1_properties(raw["properties"])
    if raw.get("timestamp") is not None:
        event["event_time"] = raw["timestamp"]
    user: dict[str, Any] = {}
    context = raw.get("context")
    if context is not None and not isinstance(context, dict):
        raise EventError("context", "must be an object")
    for key, value in context.items() if context else ():
        if key in _V1_CONTEXT_USER_LEVEL:
            user[key] = value
        elif key == "user":
            for user_key, user_value in _table("context.user", value).items():
                target = _V1_USER.get(user_key)
                if target is None:
                    ignored.append(f"{place}context.user.{key_name(user_key)}")
                    continue
                user[target] = user_value
        elif key == "page":
            event["page"] = _table("context.page", value)
        elif key == "ad":
            for ad_key, ad_value in _table("context.ad", value).items():
                if ad_key != "callback":
                    ignored.append(f"{place}context.ad.{key_name(ad_key)}")
                    continue
                user["ttclid"] = ad_value
        else:
            ignored.append(f"{place}context.{key_name(key)}")
    if user:
        event["user"] = user
    code = raw.get("test_event_code")
    return event, None if code is None else _code(code, "test_event_code")


def _v1_properties(raw: Any) -> Any:
    """1.0 clients (TikTok's own SDK among them) put `content_type` in each content; 2.0 has
    one `properties.content_type`. Lifted when every content agrees and none is given."""
    if not isinstance(raw, dict) or "content_type" in raw:
        return raw
    contents = raw.get("contents")
    if not isinstance(contents, list) or not contents:
        return raw
    kinds: set[str] = set()
    for content in contents:  # a loop that stops at the first content without one
        kind = content.get("content_type") if isinstance(content, dict) else None
        if not isinstance(kind, str):
            return raw
        kinds.add(kind)
    if len(kinds) != 1 or not kinds <= _CONTENT_TYPES:
        return raw
    lifted = [{k: v for k, v in c.items() if k != "content_type"} for c in contents]
    return {**raw, "contents": lifted, "content_type": kinds.pop()}


_CONTENT_TYPES = frozenset({"product", "product_group"})
_PLACE = re.compile(r"((?:batch|data)\[\d+\]\.)?(.*)", re.DOTALL)
_LEGACY_NAMES = {
    "event_time": "timestamp",
    "user.ttclid": "context.ad.callback",
    "user.phones": "context.user.phone_numbers",
    **{f"user.{key}": f"context.{key}" for key in _V1_CONTEXT_USER_LEVEL},
}


def legacy_field(field_name: str) -> str:
    """A 2.0 field the parser named, in the 1.0 words of the request: `batch[2].timestamp`."""
    match = _PLACE.fullmatch(field_name)
    assert match is not None  # the pattern matches any text
    place, rest = match.group(1) or "", match.group(2)
    for new, old in _LEGACY_NAMES.items():
        if rest == new or rest.startswith((f"{new}.", f"{new}[")):
            return place + old + rest[len(new) :]
    for prefix in ("user.", "page."):
        if rest.startswith(prefix):
            return f"{place}context.{rest}"
    return field_name
