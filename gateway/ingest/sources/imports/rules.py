"""The seed's rules that are about imports only: who must be identified, and the event id.

A CDP's TikTok connector (../shared/reference, "Configure events for TikTok Ads") fixes
them: offline rows need an email or a phone, CRM rows a lead id, an email or a phone, web
rows an email, a phone or an external id (and a page URL, which the parser requires of
every web event); a missing event id is a hash of email, phone, event and timestamp, so a
re-import of the same file is deduplicated by TikTok.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.core.event import Event

_IDENTITY: dict[str, tuple[tuple[str, ...], str]] = {
    "offline": (("email", "phone"), "offline events need an email or a phone"),
    "crm": (("lead_id", "email", "phone"), "CRM events need a lead id, an email or a phone"),
    "web": (
        ("email", "phone", "external_id"),
        "web events need an email, a phone or an external id",
    ),
}


def missing_identity(event: Event) -> str | None:
    """Why the event cannot be matched by its event source's rules, or None."""
    rule = _IDENTITY.get(event.destination.event_source)
    if rule is None:
        return None
    keys, reason = rule
    user = event.user
    for key in keys:
        if key == "lead_id":
            if event.sections.get("lead", {}).get("lead_id"):
                return None
        elif user.get(key):
            return None
    return reason


def import_event_id(
    name: str,
    event_time: int,
    user: Mapping[str, Any],
    properties: Mapping[str, Any],
    sections: Mapping[str, Mapping[str, Any]],
) -> str:
    """The seed's recipe (email, phone, event, timestamp — the hashed values, so spelling
    variants of one address agree), plus the order id and lead id when there are: two orders
    of one customer in the same second, or two leads known by their lead id only, must stay
    two conversions."""
    material = [
        name,
        event_time,
        sorted(user.get("email", ())),
        sorted(user.get("phone", ())),
        properties.get("order_id"),
        sections.get("lead", {}).get("lead_id"),
    ]
    return hashlib.sha256(orjson.dumps(material)).hexdigest()[:32]
