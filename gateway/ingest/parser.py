"""Turns one input event (browser beacon, server call, postback, file row) into `Event`s.

Every source shares this parser so the rules of `docs/tiktok-events-api.md` hold whatever the
entry point; what differs per source is its `SourcePolicy`. It validates strictly (a typo
such as `event_name` is an error naming the field, not a silently empty event), hashes
identifiers as soon as it reads them (`user.py`), scrubs personal data from every other
text and URL (`scrubbing.py`), and returns warnings for values it had to leave out
(unparseable phones) without ever quoting them, and the fields it scrubbed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import EventError, TooOld
from gateway.core.event import Event, destination_of
from gateway.core.event_names import EventNameMapper
from gateway.core.normalize import event_id_string, parse_event_time, sha256_hex
from gateway.ingest.fields import (
    clean_text,
    flat_section,
    key_name,
    parse_page,
    parse_properties,
    table,
)
from gateway.ingest.policy import SERVER, Observed, SourcePolicy
from gateway.ingest.user import parse_user
from gateway.privacy.scrubbing import Scrubber
from gateway.settings import PixelConfig, Settings

_MAY_HOLD_PERSONAL_DATA = re.compile(r"[@\d%:+]")
"""An event name with none of these holds no email or phone: standard names skip the scan."""
_SECTIONS = ("app", "ad", "lead")
_EVENT_KEYS = frozenset(
    {
        "event",
        "event_id",
        "event_time",
        "user",
        "properties",
        "page",
        "limited_data_use",
        "test_event_code",
        "app",
        "ad",
        "lead",
    }
)


@dataclass(frozen=True)
class ParseRules:
    """What the parser needs from the settings, precomputed once."""

    default_phone_region: str
    names: EventNameMapper
    max_event_age_seconds: int
    max_clock_skew_seconds: int
    scrubber: Scrubber

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseRules:
        return cls(
            default_phone_region=settings.default_phone_region,
            names=EventNameMapper(settings.event_names, strict=settings.strict_event_names),
            max_event_age_seconds=settings.max_event_age_days * 86400,
            max_clock_skew_seconds=settings.max_clock_skew_seconds,
            scrubber=Scrubber(settings.privacy),
        )


@dataclass
class Parsed:
    """The events one input became, what had to be left out (never the values), and the
    field of each value scrubbed of personal data."""

    events: list[Event]
    warnings: list[str] = field(default_factory=list)
    scrubbed: list[str] = field(default_factory=list)


def _resolve_time(raw: Any, *, now: float, rules: ParseRules, policy: SourcePolicy) -> int:
    if raw is None:
        return int(now)
    event_time = parse_event_time("event_time", raw)
    skew = rules.max_clock_skew_seconds
    if not policy.trust_client_clock and abs(event_time - now) > skew:
        return int(now)  # the sender's clock is wrong: the server's receive time is better
    if event_time - now > skew:
        raise EventError("event_time", "is in the future")
    max_age = policy.max_age_seconds or rules.max_event_age_seconds
    if now - event_time > max_age:
        days = max_age // 86400
        raise TooOld("event_time", f"is older than {days} days, the oldest TikTok accepts")
    return event_time


def _derived_event_id(pixel_id: str, name: str, event_time: int, user: Mapping[str, Any]) -> str:
    """A deterministic id for a server event sent without one, so a retried post dedups."""
    keys = {k: user[k] for k in ("email", "phone", "external_id") if k in user}
    material = json.dumps([pixel_id, name, event_time, keys], sort_keys=True)
    return sha256_hex(material)[:32]


def _event_id(
    raw: Mapping[str, Any],
    pixel: PixelConfig,
    event_time: int,
    user: Mapping[str, Any],
    properties: Mapping[str, Any],
    sections: Mapping[str, Mapping[str, Any]],
    policy: SourcePolicy,
) -> str:
    event_id = event_id_string("event_id", raw.get("event_id"))
    if event_id is not None:
        return event_id
    if policy.event_id_from is not None:
        return policy.event_id_from(str(raw.get("event")), event_time, user, properties, sections)
    if policy.derive_missing_event_id:
        return _derived_event_id(pixel.id, str(raw.get("event")), event_time, user)
    return str(uuid.uuid4())


def parse_event(
    raw: Any,
    *,
    pixel: PixelConfig,
    rules: ParseRules,
    now: float,
    policy: SourcePolicy = SERVER,
    observed: Observed | None = None,
    test_event_code: str | None = None,
    extra_keys: frozenset[str] = frozenset(),
) -> Parsed:
    """Validate, normalise and hash one input event for one pixel; fan out mapped names."""
    if not isinstance(raw, dict):
        raise EventError("event", "each event must be a JSON object")
    if not _EVENT_KEYS.issuperset(raw):  # the common case decided without building sets
        unknown = sorted(set(raw) - _EVENT_KEYS - extra_keys)
        if unknown:
            raise EventError(key_name(unknown[0]), "unknown field")
    warnings: list[str] = []
    scrub = rules.scrubber.for_event()
    names = rules.names.map(raw.get("event"))
    if _MAY_HOLD_PERSONAL_DATA.search(names[0]):  # a custom name: `Signup_jane@…`
        names = tuple(scrub.text("event", name) for name in names)
    event_time = _resolve_time(raw.get("event_time"), now=now, rules=rules, policy=policy)
    user = parse_user(
        table("user", raw.get("user")),
        rules.default_phone_region,
        warnings,
        scrub,
        observed,
        observed_overrides=policy.observed_overrides,
    )
    properties = parse_properties(table("properties", raw.get("properties")), scrub)
    page = parse_page(raw.get("page"), scrub)
    if pixel.event_source == "web" and "url" not in page:
        raise EventError("page.url", "is required for web events")
    limited = raw.get("limited_data_use")
    if limited is not None and not isinstance(limited, bool):
        raise EventError("limited_data_use", "must be true or false")
    sections = (
        {k: flat_section(k, raw[k], scrub) for k in _SECTIONS if raw.get(k)}
        if not raw.keys().isdisjoint(_SECTIONS)
        else {}
    )
    event_id = _event_id(raw, pixel, event_time, user, properties, sections, policy)
    given_code = raw.get("test_event_code")
    code = None if given_code is None else clean_text("test_event_code", given_code, limit=64)
    test_code = code or test_event_code or pixel.test_event_code
    destination = destination_of(pixel.event_source, pixel.id, test_code)
    if limited is None:
        limited = pixel.limited_data_use or None
    events = [  # positional: Event's fields in order (keywords cost each beacon)
        Event(
            destination,
            name,
            event_time,
            event_id,
            user,
            properties,
            page,
            limited,
            sections,
            observed,
        )
        for name in names
    ]
    return Parsed(events=events, warnings=warnings, scrubbed=scrub.scrubbed)
