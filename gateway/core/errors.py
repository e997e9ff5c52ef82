"""The gateway's one error hierarchy (drawn, with its reasons, in docs/design/errors.md).

`ConfigError`: settings that cannot be used, one line per problem. `Rejected` and its
subclasses (`EventError`, `PayloadTooLarge`, `Unauthorized`, `Forbidden`, `TooManyRequests`…):
an input refused, carrying its HTTP status, an error code, the field at fault and response
headers. `OutboxUnavailable`: events cannot be stored now (503). Third-party errors are
translated into these at one boundary each; the surface that answers renders them
(`http/errors.py`). Messages name the field, never its value, and never hold a token.
"""

from __future__ import annotations

import math


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is unusable; `problems` holds one human line per fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class Rejected(GatewayError):
    """An input the gateway refuses; a renderer turns it into its surface's answer."""

    status_code = 400
    error = "bad_request"

    def __init__(
        self, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.message = message
        self.field = field
        self.headers = headers or {}
        super().__init__(f"{field}: {message}" if field else message)


class EventError(Rejected):
    """An input event is invalid; `field` is the dotted path of the value at fault."""

    error = "invalid_event"
    field: str

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)

    def at(self, prefix: str) -> EventError:
        """The same error with its field placed inside `prefix` (`events[3]`, `[0]`)."""
        return type(self)(f"{prefix}.{self.field}" if prefix else self.field, self.message)


class PayloadTooLarge(EventError):
    """A body or a batch over the configured limit."""

    status_code = 413
    error = "payload_too_large"


class TooOld(EventError):
    """An event older than its source may send (`event_time`): a drop the console names."""


class Unauthorized(Rejected):
    status_code = 401
    error = "unauthorized"


class Forbidden(Rejected):
    status_code = 403
    error = "forbidden"


class MethodNotAllowed(Rejected):
    status_code = 405
    error = "method_not_allowed"


class UnsupportedMediaType(Rejected):
    status_code = 415
    error = "unsupported_media_type"


class TooManyRequests(Rejected):
    """Over a rate limit: `Retry-After` says when the client may send again."""

    status_code = 429
    error = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        self.retry_after_seconds = max(1, math.ceil(retry_after_seconds))
        super().__init__(message, headers={"Retry-After": str(self.retry_after_seconds)})


class OutboxUnavailable(GatewayError):
    """The outbox cannot store events right now: the sender should retry later."""

    retry_after_seconds = 5
