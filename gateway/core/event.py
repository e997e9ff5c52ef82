"""The internal Event and the one place the Events API 2.0 JSON is built.

An `Event` is already normalised and hashed, so raw identifiers never travel past the
parser. The outbox stores its destination and `event_time` beside the wire-ready JSON of
its `data` element (`to_tiktok`), and the dispatcher splices stored elements into a request
body without parsing them again (`spliced_body`). Events that share a `Destination`
(event_source, event_source_id, test_event_code) may share one request; the access token is
looked up from the configuration at send time and is never stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

RECORD_VERSION = 1
MAX_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Destination:
    """What one Events API request is addressed to; events with different ones never mix."""

    event_source: str
    event_source_id: str
    test_event_code: str | None = None


_DESTINATIONS: dict[tuple[str, str, str | None], Destination] = {}
_MAX_DESTINATIONS = 4096


def destination_of(event_source: str, source_id: str, test_code: str | None) -> Destination:
    """The `Destination`, made once and shared (bounded: test codes are free text): every
    parsed event needs one, and a frozen dataclass costs a call per field to build."""
    key = (event_source, source_id, test_code)
    found = _DESTINATIONS.get(key)
    if found is None:
        if len(_DESTINATIONS) >= _MAX_DESTINATIONS:
            _DESTINATIONS.clear()
        found = _DESTINATIONS[key] = Destination(event_source, source_id, test_code)
    return found


@dataclass(frozen=True, slots=True)
class Event:
    """One TikTok event, normalised and hashed, ready to send."""

    destination: Destination
    event: str
    event_time: int
    event_id: str
    user: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    page: Mapping[str, str] = field(default_factory=dict)
    limited_data_use: bool | None = None
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The app / ad / lead sections, passed through for app and CRM sources."""
    observed: Any = field(default=None, compare=False, repr=False)
    """What the server observed of the sender (`ingest.policy.Observed`: where its IP, click
    id and `_ttp` came from), for the console; never stored, never sent."""

    def to_tiktok(self) -> dict[str, Any]:
        """One element of the request's `data` array (test_event_code is never in here).

        Its sections are the event's own dicts, not copies (an event is read-only, and
        every element is serialised once per stored event): callers must not change them."""
        body: dict[str, Any] = {
            "event": self.event,
            "event_time": self.event_time,
            "event_id": self.event_id,
        }
        user, properties, page = self.user, self.properties, self.page
        if user:
            body["user"] = user if type(user) is dict else dict(user)
        if properties:
            body["properties"] = properties if type(properties) is dict else dict(properties)
        if page:
            body["page"] = page if type(page) is dict else dict(page)
        if self.limited_data_use is not None:
            body["limited_data_use"] = self.limited_data_use
        if self.sections:
            for name, section in self.sections.items():
                body[name] = section if type(section) is dict else dict(section)
        return body

    def to_record(self) -> dict[str, Any]:
        """The version-1 storage form, still read back from outboxes written before v2."""
        return {
            "v": RECORD_VERSION,
            "source": self.destination.event_source,
            "source_id": self.destination.event_source_id,
            "test_code": self.destination.test_event_code,
            "data": self.to_tiktok(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        if record.get("v") != RECORD_VERSION:
            raise ValueError(f"unsupported event record version {record.get('v')!r}")
        destination = Destination(record["source"], record["source_id"], record["test_code"])
        return cls.from_tiktok(destination, record["data"])

    @classmethod
    def from_tiktok(cls, destination: Destination, data: Mapping[str, Any]) -> Event:
        """The event back from its `data` element (operators and tests: the hot path never
        parses stored events)."""
        known = {"event", "event_time", "event_id", "user", "properties", "page"}
        sections = {k: v for k, v in data.items() if k not in known and k != "limited_data_use"}
        return cls(
            destination=destination,
            event=data["event"],
            event_time=data["event_time"],
            event_id=data["event_id"],
            user=data.get("user", {}),
            properties=data.get("properties", {}),
            page=data.get("page", {}),
            limited_data_use=data.get("limited_data_use"),
            sections=sections,
        )


def _envelope(destination: Destination) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_source": destination.event_source,
        "event_source_id": destination.event_source_id,
    }
    if destination.test_event_code:
        body["test_event_code"] = destination.test_event_code
    return body


def spliced_body(destination: Destination, data: Sequence[str]) -> bytes:
    """The Events API 2.0 request body from stored `data` elements, spliced in as they are."""
    if not 1 <= len(data) <= MAX_BATCH:
        raise ValueError(f"a request carries 1 to {MAX_BATCH} events, not {len(data)}")
    head = orjson.dumps(_envelope(destination))[:-1]  # the envelope without its closing brace
    return b"".join((head, b',"data":[', ",".join(data).encode(), b"]}"))


def request_body(destination: Destination, events: Iterable[Event]) -> dict[str, Any]:
    """The Events API 2.0 request body: one destination, 1 to 1000 events."""
    data = []
    for event in events:
        if event.destination != destination:
            raise ValueError("events of different destinations cannot share a request")
        data.append(event.to_tiktok())
    if not 1 <= len(data) <= MAX_BATCH:
        raise ValueError(f"a request carries 1 to {MAX_BATCH} events, not {len(data)}")
    body = _envelope(destination)
    body["data"] = data
    return body
