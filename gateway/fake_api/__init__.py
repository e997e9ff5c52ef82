"""A faithful fake of the TikTok Events API: a real HTTP server for tests and demos."""

from gateway.fake_api.server import FakeEventsApi, Fault, ReceivedRequest
from gateway.fake_api.validation import validate_request

__all__ = ["FakeEventsApi", "Fault", "ReceivedRequest", "validate_request"]
