"""The match-key score: a local 0–10 estimate of how well TikTok can match one event.

TikTok publishes no weights for its Event Quality Score; these follow the order its guides
give: the click id and hashed email / phone, then external_id and `_ttp`, then IP + user
agent. It says which keys an event carried, not what TikTok computes. Computed from the
event's hashed `user` in a handful of dict lookups, cheap enough for every stored event.
Why these weights: docs/design/match-score.md.
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
    """0–10: the sum of the weights of the keys present (`WEIGHTS` unrolled: this runs
    for every stored event; tests/test_score.py checks it against the table)."""
    get = user.get
    return (
        (3 if get("ttclid") else 0)
        + (2 if get("email") else 0)
        + (2 if get("phone") else 0)
        + (1 if get("external_id") else 0)
        + (1 if get("ttp") else 0)
        + (1 if get("ip") and get("user_agent") else 0)
    )
