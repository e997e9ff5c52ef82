"""The shape every source has: a name, a policy, and its routes built from one context.

A source (a folder under `ingest/sources/`) exposes one `SOURCE`; the app lists them in
one place and hands each the same `SourceContext`, so adding a source is one folder and
one line, and no source needs another's code or arguments of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.routing import BaseRoute

from gateway.http.auth import Auth
from gateway.http.rate_limit import RateLimits
from gateway.ingest.leads import LeadMemory
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.policy import SourcePolicy
from gateway.settings.live import LiveSettings
from gateway.storage.outbox.guard import BacklogGuard
from gateway.storage.postback_log import PostbackLog


@dataclass(frozen=True)
class SourceContext:
    """What sources are built from: the running gateway's shared parts."""

    pipeline: Pipeline
    live: LiveSettings
    """The configuration now: parts that reload (pixels, tokens, rules) listen to it."""
    limits: RateLimits
    auth: Auth
    leads: LeadMemory | None
    """The browser context by lead, for backend events that name one."""
    guard: BacklogGuard
    postback_log: PostbackLog | None


class Source(Protocol):
    @property
    def name(self) -> str:
        """The source's name in the configuration and the logs."""

    @property
    def policy(self) -> SourcePolicy:
        """How its events are judged (`policy.name` labels their metrics)."""

    def routes(self, context: SourceContext) -> Sequence[BaseRoute]:
        """Its endpoints, built once (empty when it is turned off)."""
