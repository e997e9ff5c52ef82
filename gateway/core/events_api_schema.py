"""What the fake Events API checks in a request body, and the answers TikTok gives.

The checks are the spec's (`docs/tiktok-events-api.md`): one event_source + event_source_id,
1–1000 events, event_time an integer in seconds, event_id a string, hashed identifiers as
64-character hex, test_event_code only at the top level, page.url on web events. An invalid
request gets HTTP 200 with code 40002 and a message in TikTok's style, as the real API does.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

INVALID = 40002
_HEX64 = re.compile(r"[a-f0-9]{64}")
_SOURCES = ("web", "app", "offline", "crm")
_HASHED_USER_FIELDS = ("email", "phone", "external_id", "first_name", "last_name", "zip_code")
_EVENTS_1_0_FIELDS = ("pixel_code", "context", "timestamp", "test_event_code", "event_source_id")
_SECONDS_RANGE = (1_000_000_000, 100_000_000_000)


class Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _check_hashed(where: str, value: Any) -> None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if not isinstance(item, str) or not _HEX64.fullmatch(item):
            raise Invalid(f"Invalid value for {where}: must be a SHA-256 hash (64 hex characters).")


def _check_user(where: str, user: Any) -> None:
    if not isinstance(user, dict):
        raise Invalid(f"Invalid value for {where}: not a valid object.")
    for key in _HASHED_USER_FIELDS:
        if key in user:
            _check_hashed(f"{where}.{key}", user[key])
    if "ip" in user:
        try:
            ipaddress.ip_address(user["ip"])
        except (ValueError, TypeError):
            raise Invalid(f"Invalid value for {where}.ip: not a valid IP address.") from None
    for key in ("ttclid", "ttp", "user_agent", "locale"):
        if key in user and not isinstance(user[key], str):
            raise Invalid(f"Invalid value for {where}.{key}: not a valid string.")


def _check_properties(where: str, props: Any) -> None:
    if not isinstance(props, dict):
        raise Invalid(f"Invalid value for {where}: not a valid object.")
    value = props.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise Invalid(f"Invalid value for {where}.value: not a valid number.")
    contents = props.get("contents")
    if contents is not None:
        if not isinstance(contents, list):
            raise Invalid(f"Invalid value for {where}.contents: not a valid array.")
        for index, content in enumerate(contents):
            cid = content.get("content_id") if isinstance(content, dict) else None
            if cid is not None and not isinstance(cid, str):
                raise Invalid(
                    f"Invalid value for {where}.contents[{index}].content_id: not a valid string."
                )


def _check_event(index: int, event: Any, source: str) -> None:
    where = f"data[{index}]"
    if not isinstance(event, dict):
        raise Invalid(f"Invalid value for {where}: not a valid object.")
    for key in _EVENTS_1_0_FIELDS:
        if key in event:
            raise Invalid(f"Invalid parameter {where}.{key}: not allowed inside data.")
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise Invalid(f"Invalid value for {where}.event: not a valid string.")
    event_time = event.get("event_time")
    if isinstance(event_time, bool) or not isinstance(event_time, int):
        raise Invalid(f"Invalid value for {where}.event_time: not a valid integer.")
    if not _SECONDS_RANGE[0] <= event_time < _SECONDS_RANGE[1]:
        raise Invalid(f"Invalid value for {where}.event_time: must be a UNIX time in seconds.")
    if "event_id" in event and not isinstance(event["event_id"], str):
        raise Invalid("Invalid value for event_id: not a valid string.")
    if "user" in event:
        _check_user(f"{where}.user", event["user"])
    if "properties" in event:
        _check_properties(f"{where}.properties", event["properties"])
    if "limited_data_use" in event and not isinstance(event["limited_data_use"], bool):
        raise Invalid(f"Invalid value for {where}.limited_data_use: not a valid boolean.")
    page = event.get("page")
    if source == "web" and (not isinstance(page, dict) or not isinstance(page.get("url"), str)):
        raise Invalid(f"Invalid value for {where}.page.url: required for web events.")


def validate_request(body: Any, *, max_events: int = 1000) -> tuple[int, str]:
    """(0, "OK") for a valid Events API 2.0 body, else (40002, TikTok-style message)."""
    try:
        if not isinstance(body, dict):
            raise Invalid("Invalid request body: not a valid JSON object.")
        source = body.get("event_source")
        if source not in _SOURCES:
            raise Invalid(f"Invalid value for event_source: must be one of {', '.join(_SOURCES)}.")
        if not isinstance(body.get("event_source_id"), str) or not body["event_source_id"]:
            raise Invalid("Invalid value for event_source_id: not a valid string.")
        code = body.get("test_event_code")
        if code is not None and not isinstance(code, str):
            raise Invalid("Invalid value for test_event_code: not a valid string.")
        data = body.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= max_events:
            raise Invalid(f"Invalid value for data: must hold 1 to {max_events} events.")
        for index, event in enumerate(data):
            _check_event(index, event, source)
    except Invalid as exc:
        return INVALID, exc.message
    return 0, "OK"
