"""The match-key score: a local 0–10 estimate of how well TikTok can match one event.

TikTok lists the keys it matches on (ttclid, hashed email, hashed phone, hashed external_id,
`_ttp`, IP + user agent) and calls its Event Quality Score "a weighted average of match key
coverages", but publishes no weights (nor does Meta for its EMQ). These weights follow the
order TikTok's Events API and advanced-matching guides give — the click id and the hashed
email / phone identify a person most surely, then the advertiser's own id and the pixel's
cookie, then IP + user agent, which only narrow a household down. TikTok's own score is
computed by TikTok; this one only says which keys an event carried.

Computed from the `user` of an event as it is sent (already hashed): a handful of dict
lookups, cheap enough to run for every stored event for the `/metrics` histogram.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WEIGHTS: tuple[tuple[str, int], ...] = (
    ("ttclid", 3),
    ("email", 2),
    ("phone", 2),
    ("external_id", 1),
    ("ttp", 1),
    ("ip_user_agent", 1),
)
"""Match key → weight; they add up to 10. `ip_user_agent` counts only when both are there."""
MAX_SCORE = sum(weight for _, weight in WEIGHTS)
KEYS = tuple(key for key, _ in WEIGHTS)


def keys_present(user: Mapping[str, Any]) -> list[str]:
    """The match keys `user` carries, in the order of `WEIGHTS`."""
    present = [key for key in KEYS[:-1] if user.get(key)]
    if user.get("ip") and user.get("user_agent"):
        present.append("ip_user_agent")
    return present


def score(user: Mapping[str, Any]) -> int:
    """0–10: the sum of the weights of the keys present."""
    total = 0
    for key, weight in WEIGHTS[:-1]:
        if user.get(key):
            total += weight
    if user.get("ip") and user.get("user_agent"):
        total += 1
    return total
