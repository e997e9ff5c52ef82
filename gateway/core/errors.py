"""The gateway's one error hierarchy.

    GatewayError
     ├── ConfigError          settings that cannot be used; carries one line per problem
     └── EventError           an input event that cannot be sent; carries the field at fault
          └── PayloadTooLarge  an input over a size or count limit

Failures of the Events API are not errors here: the client classifies them into an Outcome.

Errors that reach HTTP carry their status so the edge can answer with a JSON body
without guessing. Messages never contain an access token or a raw identifier: callers
name the field, not its value.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is unusable; `problems` holds one human line per fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class EventError(GatewayError):
    """An input event is invalid; `field` is the dotted path of the value at fault."""

    status_code = 400

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def to_json(self) -> dict[str, str]:
        return {"error": "invalid_event", "field": self.field, "message": self.message}


class PayloadTooLarge(EventError):
    """A body or a batch over the configured limit."""

    status_code = 413

    def to_json(self) -> dict[str, str]:
        return {"error": "payload_too_large", "field": self.field, "message": self.message}
