"""The console across replicas: every replica's live events and TikTok's answers, through
Redis pub/sub while a console page watches somewhere — and nothing while none does.

Two channels under the outbox's prefix:

    {prefix}:console:watching   "a page watches on replica R": said by R when its first page
                                opens and every 5 s while one does. Every replica listens
                                (one idle subscription, no work until somebody speaks).
    {prefix}:console:events     while another replica has said so within 15 s, a replica
                                publishes here, every quarter second, the events its pipeline
                                stored and the settlements its delivery reported. Only
                                replicas with a page open subscribe.

A settlement is published by the replica whose delivery made it, whichever replica stored
the event (with Redis any replica delivers any event), so a page sees TikTok's answer for
every event it is shown. The two travel different paths (the storing replica's tick, the
delivering replica's pipe), so a settlement can arrive first: `RecentEvents` keeps such
steps, bounded, for their event.

Why pub/sub and not a capped stream: a stream that gives a newly opened page the history
of every replica would have to be written for every event at all times — a serialisation
and a Redis write on the beacon path while nobody looks, and the events kept in Redis's
memory. Pub/sub costs nothing until a page opens; a new page starts with its own
replica's recent buffer, and what must not be lost is in the outbox already.

What is published is what the console may show anyway: events as the outbox stores them
(identifiers hashed) with the IP's host part masked, and settlements (event names and
ids, TikTok's code, message and request id). The access token is never part of either.
As on one replica, a flood costs the serving loop an append per event: at most the
newest `_PER_TICK` events of a tick are serialised and published.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from typing import Any

import orjson
from redis.exceptions import RedisError

from gateway.core.event import Event
from gateway.delivery.observe import EventTrace, RecentEvents, Settlement
from gateway.ingest.policy import Observed
from gateway.web.console.view import masked_ip

log = logging.getLogger(__name__)
_TICK = 0.25
_PER_TICK = 200
_SETTLEMENTS_PER_TICK = 50
_RETRY_SECONDS = 1.0


class ReplicaFeed:
    def __init__(
        self,
        url: str,
        recent: RecentEvents,
        *,
        prefix: str = "tiktok-gateway",
        replica: str | None = None,
        hello_seconds: float = 5.0,
        heard_seconds: float = 15.0,
    ) -> None:
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._url = url
        self._recent = recent
        self._watching_channel = f"{prefix}:console:watching"
        self._events_channel = f"{prefix}:console:events"
        self._hello_seconds = hello_seconds
        self._heard_seconds = heard_seconds
        self._redis: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._heard_until = 0.0
        self._failing = ""
        self._events: collections.deque[EventTrace] = collections.deque(maxlen=_PER_TICK)
        self._settlements: collections.deque[Settlement] = collections.deque(
            maxlen=_SETTLEMENTS_PER_TICK
        )

    @property
    def publishing(self) -> bool:
        """Whether another replica's page watches (this one shares what it sees)."""
        return self._publisher is not None

    def start(self) -> None:
        import redis.asyncio

        if self._listener is None:
            self._redis = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=5, socket_connect_timeout=5
            )
            self._listener = asyncio.create_task(self._listen(), name="console-replicas")

    async def close(self) -> None:
        """Stop listening, watching and publishing. Idempotent."""
        for task in (self._listener, self._watch, self._publisher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._watch = self._publisher = None
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    # --- this replica's pages ------------------------------------------------------------

    def watch(self) -> None:
        """The first page opened here: read every replica's events until `unwatch`."""
        if self._watch is None and self._redis is not None:
            self._recent.expect_other_replicas(True)
            self._watch = asyncio.create_task(self._watching(), name="console-replicas-watch")

    def unwatch(self) -> None:
        """The last page here closed."""
        task, self._watch = self._watch, None
        if task is not None:
            self._recent.expect_other_replicas(False)
            task.cancel()

    async def _watching(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._events_channel)
                await self._say_watching()
                self._failing = ""
                hello_at = time.monotonic() + self._hello_seconds
                while True:
                    wait = max(0.0, hello_at - time.monotonic())
                    message = await pubsub.get_message(timeout=wait)
                    if message is not None:
                        self._apply(message["data"])
                    if time.monotonic() >= hello_at:
                        await self._say_watching()
                        hello_at = time.monotonic() + self._hello_seconds
            except (RedisError, OSError) as exc:
                self._trouble("other replicas' events not read", exc)
                await asyncio.sleep(_RETRY_SECONDS)
            finally:
                await pubsub.aclose()

    async def _say_watching(self) -> None:
        await self._redis.publish(self._watching_channel, self.replica)

    def _apply(self, data: bytes) -> None:
        """Another replica's events and settlements, into this replica's recent buffer."""
        try:
            message = orjson.loads(data)
            replica = message["r"]
            if replica == self.replica:
                return
            for entry in message["e"]:
                self._accept(replica, entry)
            for fields in message["s"]:
                self._recent.settled_elsewhere(Settlement.from_json(fields))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("console: a malformed message from another replica: %r", exc)

    def _accept(self, replica: str, entry: dict[str, Any]) -> None:
        record = entry.get("ev")
        event = Event.from_record(record) if record is not None else None
        observed = entry.get("o")
        if event is not None and observed:
            ip_from, ttclid_from, ttp_from, pixel_copy = observed
            seen = Observed(
                ip_from=ip_from, ttclid_from=ttclid_from, ttp_from=ttp_from, pixel_copy=pixel_copy
            )
            event = dataclasses.replace(event, observed=seen)
        pixel, name, event_id = entry["k"]
        key = (str(pixel), str(name), str(event_id))
        self._recent.accepted_elsewhere(replica, key, float(entry["at"]), entry["src"], event)

    # --- other replicas' pages -----------------------------------------------------------

    async def _listen(self) -> None:
        """Always (one idle subscription): learn when another replica's page watches."""
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._watching_channel)
                self._failing = ""
                async for message in pubsub.listen():
                    if message.get("type") == "message" and message["data"] != (
                        self.replica.encode()
                    ):
                        self._heard()
            except (RedisError, OSError) as exc:
                self._trouble("not listening to other replicas", exc)
                await asyncio.sleep(_RETRY_SECONDS)
            finally:
                await pubsub.aclose()

    def _heard(self) -> None:
        self._heard_until = time.monotonic() + self._heard_seconds
        if self._publisher is None:
            self._recent.keep_for(self)
            self._recent.on_accept(self._stored)
            self._recent.tap(self._settled)
            self._publisher = asyncio.create_task(self._publish(), name="console-replicas-pub")

    def _stored(self, trace: EventTrace) -> None:
        if not trace.replica:  # another replica's event: its own replica publishes it
            self._events.append(trace)

    def _settled(self, settlement: Settlement) -> None:
        self._settlements.append(settlement)

    async def _publish(self) -> None:
        try:
            while time.monotonic() < self._heard_until:
                await asyncio.sleep(_TICK)
                if self._events or self._settlements:
                    await self._send()
        finally:
            self._recent.remove(self._stored)
            self._recent.untap(self._settled)
            self._recent.release(self)
            self._events.clear()
            self._settlements.clear()
            self._publisher = None

    async def _send(self) -> None:
        events = [_shared(trace) for trace in self._events]
        settlements = [s.to_json() for s in self._settlements]
        self._events.clear()
        self._settlements.clear()
        payload = orjson.dumps({"r": self.replica, "e": events, "s": settlements})
        try:
            await self._redis.publish(self._events_channel, payload)
        except (RedisError, OSError) as exc:  # observations: the events are stored
            self._trouble("events not shared with other replicas", exc)
        else:
            self._failing = ""

    def _trouble(self, what: str, exc: Exception) -> None:
        """Log a Redis fault once per outage, not once a second (the outbox says it too)."""
        if self._failing != what:
            self._failing = what
            log.warning("console: %s: %s", what, exc)


def _shared(trace: EventTrace) -> dict[str, Any]:
    """One stored event as another replica's console may have it: hashed, IP masked."""
    entry: dict[str, Any] = {
        "k": (trace.pixel, trace.event, trace.event_id),
        "at": trace.accepted_at,
        "src": trace.source,
    }
    event = trace.accepted
    if event is not None:
        record = event.to_record()
        user = record["data"].get("user")
        if user and user.get("ip"):
            user["ip"] = masked_ip(str(user["ip"]))
        entry["ev"] = record
        seen = event.observed
        if seen is not None:
            entry["o"] = (seen.ip_from, seen.ttclid_from, seen.ttp_from, seen.pixel_copy)
    return entry
