"""What differs between sources once they hold input events: a small `SourcePolicy`.

Everything else — validation, normalisation, hashing, storing, metrics, the answer "cannot
store now" — is the same for every source, so it lives once in the pipeline and the parser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.settings import PixelConfig

EventIdRecipe = Callable[
    [str, int, Mapping[str, Any], Mapping[str, Any], Mapping[str, Mapping[str, Any]]], str
]
"""(input event name, event_time, hashed user, properties, sections) → event_id."""


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    """How one source's events are judged; `name` labels its metrics and console rows."""

    name: str
    trust_client_clock: bool = True
    """False (browsers): an event_time off by more than the allowed skew becomes the receive
    time, as a visitor's clock is often wrong. True: such a time is an error to report."""
    derive_missing_event_id: bool = True
    """True: an event without an id gets one derived from its content, so a retried post
    deduplicates. False: a random one (a browser cannot retry the same beacon)."""
    max_age_seconds: int | None = None
    """The oldest event_time accepted; None: the settings' max_event_age_days."""
    observed_overrides: bool = False
    """True: what the server observed (IP, user agent, cookies) replaces what the input says;
    False: it only completes what the input leaves out."""
    event_id_from: EventIdRecipe | None = None
    """How a missing event id is derived, when the source's rule is not the default one
    (file imports: email, phone, event and time, as the CDP connectors do)."""


BROWSER = SourcePolicy(
    "browser", trust_client_clock=False, derive_missing_event_id=False, observed_overrides=True
)
SERVER = SourcePolicy("server")


@dataclass(slots=True)  # not frozen: built per beacon, and frozen __init__ costs more
class Observed:
    """What the server saw of the sender, passed beside the input, never written into it.

    The IP is canonical already; ttp and ttclid have been checked as tokens by the source.
    """

    ip: str | None = None
    user_agent: str | None = None
    ttp: str | None = None
    ttclid: str | None = None
    ttclid_at: float | None = None
    """When the click happened (Unix time), where the source knows it; the lead context
    counts the click's attribution window from here, not from when it stores the lead."""
    locale: str | None = None
    ip_from: str = ""
    """Where each value came from, for the console: "socket" or "proxy header" …"""
    ttclid_from: str = ""
    """… "url", "referrer", "event", "cookie" or "signed cookie" …"""
    ttp_from: str = ""
    """… "cookie", "event" or "generated". Constants: recording them costs the beacon nothing."""
    pixel_copy: str = ""
    """Browser events: whether the page's TikTok pixel took its own copy — "loaded", "blocked"
    (its script failed to load) or "absent" (no pixel); "" when the snippet did not say."""
    visitor: str = ""
    """Browser events: the visitor's id from the signed cookie (new at a first visit), so a
    lead-context entry belongs to the visitor who wrote it; "" for other sources."""


@dataclass(slots=True)
class Item:
    """One input event for the pipeline: the raw JSON, its pixel, and what the server saw."""

    raw: Any
    pixel: PixelConfig
    observed: Observed | None = None
    test_event_code: str | None = None
    """From the request's envelope; an event's own code wins."""
