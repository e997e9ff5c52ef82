"""Finding the events TikTok refuses inside a refused request, so their batch-mates go on.

TikTok refuses a whole request for one invalid event, naming its position when it can
(`40002 "Batch.3.properties…"`; our fake says `data[3]`). The dispatcher resends without the
named event, or else each half: about 2·log₂(batch) extra requests per bad event. A budget
per refused batch bounds the cost when many are bad (or the refusal concerns the whole
request after all): what is left when it runs out is dead-lettered as it stands.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
_POSITION = re.compile(r"\b(?:data|batch)(?:\[(\d{1,4})\]|\.(\d{1,4})\b)", re.IGNORECASE)


@dataclass
class Isolation:
    """What is left of one refused batch's budget of extra requests."""

    left: int


def named_position(message: str, size: int) -> int | None:
    """The position of the refused event in a request of `size` events, if the message names
    one (`data[3]`, `data.3.`, `Batch.3.`)."""
    match = _POSITION.search(message[:1000])
    if match is None:
        return None
    position = int(match.group(1) or match.group(2))
    return position if position < size else None


def split(batch: Sequence[T], position: int | None) -> tuple[list[T], list[list[T]]]:
    """(the events to dead-letter now, the parts to resend)."""
    if position is not None:
        return [batch[position]], [[*batch[:position], *batch[position + 1 :]]]
    half = len(batch) // 2
    return [], [list(batch[:half]), list(batch[half:])]


def budget(size: int) -> int:
    """Extra requests allowed to isolate the bad events of one refused batch of `size`:
    enough for a few bad events by halving."""
    return 8 * max(1, math.ceil(math.log2(size))) if size > 1 else 0
