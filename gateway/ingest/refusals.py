"""Why an input was refused or dropped, in the words the console shows.

A drop is an input the gateway saw and did not forward on purpose (a bot, no consent, tag
testing); a refusal is one it answered with an error. Both reach the pipeline's drop hooks
as `(reason, source, detail, raw items, pixel)`; `refusal` names the reason and the detail
(the field at fault, never its value) of an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gateway.core.errors import EventError, OutboxUnavailable, Rejected, TooOld
from gateway.storage.outbox.guard import Shedding

DropHook = Callable[[str, str, str, Sequence[Any], str], None]
"""Called with (reason, source, detail, the raw items, the pixel of items that name none)."""

_BY_CODE = {"forbidden_origin": "origin_not_allowed", "rate_limited": "rate_limited"}


def refusal(error: BaseException) -> tuple[str, str]:
    """(reason, detail) of an error an endpoint answered with."""
    if isinstance(error, TooOld):
        return "too_old", error.field
    if isinstance(error, EventError):
        return "invalid", error.field
    if isinstance(error, Rejected):
        return _BY_CODE.get(error.error, error.error), error.field or ""
    if isinstance(error, Shedding):  # browser events, while the backlog is past a limit
        return "shed", ""
    if isinstance(error, OutboxUnavailable):
        return "outbox_unavailable", ""
    return "error", ""
