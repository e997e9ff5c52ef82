"""A faithful fake of the TikTok Events API: a real HTTP server for tests and demos."""

from gateway.core.events_api_schema import validate_request
from gateway.fake_api.answers import Fault, ReceivedRequest
from gateway.fake_api.server import FakeEventsApi

__all__ = ["FakeEventsApi", "Fault", "ReceivedRequest", "validate_request"]
