"""What the console page gets of one event: plain JSON, nothing raw, nothing secret.

Events reach `RecentEvents` hashed already; here digests are shortened (enough to compare
two rows, not to look anything up), the IP loses its host part, and the access token is
never in reach (it is not part of an `Event`). A new source needs nothing here: its rows
are labelled by its `SourcePolicy.name`.
"""

from __future__ import annotations

from typing import Any

from gateway.core.event import Event
from gateway.core.score import keys_present, score
from gateway.delivery.settlement import Settlement
from gateway.privacy.masking import shown_element
from gateway.telemetry.drops import Dropped
from gateway.telemetry.recent import EventTrace


def provenance(event: Event) -> dict[str, str]:
    """Where each server-side value came from (browser events; others sent their own)."""
    observed = event.observed
    if observed is None:
        return {}
    found = {
        "ip": observed.ip_from if event.user.get("ip") else "",
        "ttclid": observed.ttclid_from,
        "ttp": observed.ttp_from,
    }
    return {key: origin for key, origin in found.items() if origin}


def step(settlement: Settlement) -> dict[str, Any]:
    return {
        "outcome": settlement.outcome,
        "at": settlement.at,
        "request": settlement.request,
        "code": settlement.code,
        "message": settlement.message,
        "request_id": settlement.request_id,
        "retry_at": settlement.retry_at,
    }


def row(trace: EventTrace) -> dict[str, Any]:
    """One line of the live list."""
    shown: dict[str, Any] = {
        "pixel": trace.pixel,
        "event": trace.event,
        "event_id": trace.event_id,
        "source": trace.source,
        "at": trace.accepted_at,
        "state": trace.state,
        "steps": [step(s) for s in trace.steps],
    }
    if trace.replica:  # stored by another replica (Redis): its name
        shown["replica"] = trace.replica
    if trace.accepted is not None:
        user = trace.accepted.user
        shown["keys"] = keys_present(user)
        shown["score"] = score(user)
        shown["from"] = provenance(trace.accepted)
        value = trace.accepted.properties.get("value")
        if value is not None:
            shown["value"] = value
            shown["currency"] = trace.accepted.properties.get("currency")
    return shown


def detail(trace: EventTrace) -> dict[str, Any]:
    """The row, what came in (hashed) and the Events API request it went out in.

    The request is rebuilt from the stored event: the same envelope and `data` element the
    dispatcher spliced, with this batch's other events named, not shown; the Access-Token
    header is never shown."""
    shown = row(trace)
    event = trace.accepted
    if event is None:
        return shown
    element = shown_element(event.to_tiktok())
    envelope: dict[str, Any] = {
        "event_source": event.destination.event_source,
        "event_source_id": event.destination.event_source_id,
    }
    if event.destination.test_event_code:
        envelope["test_event_code"] = event.destination.test_event_code
    envelope["data"] = [element]
    shown["request"] = envelope
    shown["headers"] = {"Access-Token": "(hidden)", "Content-Type": "application/json"}
    if trace.steps:
        last = trace.steps[-1]
        shown["batch_size"] = len(last.events)
        shown["response"] = {
            "code": last.code,
            "message": last.message,
            "request_id": last.request_id,
        }
    return shown


REASONS = {
    "bot": "bot",
    "no_consent": "consent denied",
    "tag_testing": "tag testing",
    "origin_not_allowed": "origin not allowed",
    "rate_limited": "rate limited",
    "invalid": "invalid field",
    "too_old": "too old",
    "shed": "shed (backlog past its limit)",
}


def drop_row(drop: Dropped) -> dict[str, Any]:
    """One dropped or refused event as a line of the live list (state "dropped")."""
    reason = REASONS.get(drop.reason, drop.reason.replace("_", " "))
    return {
        "kind": "dropped",
        "pixel": drop.pixel,
        "event": drop.event,
        "event_id": drop.event_id,
        "order_id": drop.order_id,
        "source": drop.source,
        "at": drop.at,
        "state": "dropped",
        "reason": drop.reason,
        "why": f"{reason}: {drop.detail}" if drop.detail else reason,
        "sequence": drop.sequence,
        "steps": [],
    }
