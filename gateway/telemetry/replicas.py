"""The console across replicas: every replica's live events and TikTok's answers, through
Redis pub/sub while a console page watches somewhere — and nothing while none does.

`{prefix}:db{n}:console:watching` carries "a page watches on replica R" (every 5 s while one
does); meanwhile the other replicas publish on `{prefix}:db{n}:console:events`, each quarter
second, the newest `_PER_TICK` events they stored and what their delivery settled, as a page
shows them (digests shortened, never the token). Subscriptions ping on their own connection.
Why pub/sub, the database number and the rest: docs/design/console-replicas.md.
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
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.core.event import Event
from gateway.delivery.settlement import Settlement
from gateway.ingest.policy import Observed
from gateway.privacy.masking import shown_element
from gateway.storage.backend import ConsoleFeed
from gateway.telemetry.recent import EventTrace, RecentEvents

log = logging.getLogger(__name__)
_TICK = 0.25
_PER_TICK = 200
_SETTLEMENTS_PER_TICK = 50
_CLOSE_SECONDS = 5.0


class ReplicaFeed:
    def __init__(
        self,
        feed: ConsoleFeed,
        recent: RecentEvents,
        *,
        prefix: str = "tiktok-gateway",
        replica: str | None = None,
        hello_seconds: float = 5.0,
        heard_seconds: float = 15.0,
        ping_seconds: float = 15.0,
        retry_seconds: float = 1.0,
    ) -> None:
        """`feed`: the storage backend's client (which it closes) and database number;
        `ping_seconds`: how often an idle subscription checks its connection (a deaf one is
        made again within twice that); `retry_seconds`: the pause after a fault."""
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._redis = feed.client
        self._recent = recent
        scope = f"{prefix}:db{feed.db}:console"
        self._watching_channel = f"{scope}:watching"
        self._events_channel = f"{scope}:events"
        self._hello_seconds = hello_seconds
        self._heard_seconds = heard_seconds
        self._ping_seconds = ping_seconds
        self._retry_seconds = retry_seconds
        self._listener: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._cancelled: set[asyncio.Task[None]] = set()
        """Watch tasks `unwatch` cancelled: `close` awaits those still finishing."""
        self._publisher: asyncio.Task[None] | None = None
        self._heard_until = 0.0
        self._failing: set[str] = set()
        """What fails now, each logged once per outage and cleared by its own success."""
        self._settlements: collections.deque[Settlement] = collections.deque(
            maxlen=_SETTLEMENTS_PER_TICK
        )

    @property
    def publishing(self) -> bool:
        """Whether another replica's page watches (this one shares what it sees)."""
        return self._publisher is not None

    def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="console-replicas")

    async def close(self) -> None:
        """Stop listening, watching and publishing. Idempotent."""
        running = [t for t in (self._listener, self._watch, self._publisher) if t is not None]
        for task in running:
            task.cancel()
        # a watch `unwatch` cancelled may still be closing its subscription: awaited, not
        # cancelled again (that would cut its clean-up short) — for a while: a clean-up
        # stuck on a connection that went deaf must not hold the gateway's stop forever
        waiting = {*running, *self._cancelled}
        if waiting:
            done, stuck = await asyncio.wait(waiting, timeout=_CLOSE_SECONDS)
            for task in done:
                # stopping: a task that ended on a Redis fault as it was cancelled is done too
                if not task.cancelled() and task.exception() is not None:
                    log.debug("console: %s ended with %r", task.get_name(), task.exception())
            for task in stuck:
                task.cancel()
                log.warning("console: %s did not stop within %s s", task.get_name(), _CLOSE_SECONDS)
        self._listener = self._watch = self._publisher = None

    # --- this replica's pages ------------------------------------------------------------

    def watch(self) -> None:
        """The first page opened here: read every replica's events until `unwatch`."""
        if self._listener is None:  # not started, or closed
            return
        if self._watch is not None and self._watch.done():  # a bug ended it: not for good
            if not self._watch.cancelled() and self._watch.exception() is not None:
                log.error("console: reading other replicas' events stopped: %r", self._watch)
            self._watch = None
        if self._watch is None:
            self._recent.expect_other_replicas(True)
            self._watch = asyncio.create_task(self._watching(), name="console-replicas-watch")

    def unwatch(self) -> None:
        """The last page here closed."""
        task, self._watch = self._watch, None
        if task is not None:
            self._recent.expect_other_replicas(False)
            task.cancel()
            self._cancelled.add(task)
            task.add_done_callback(self._cancelled.discard)

    async def _watching(self) -> None:
        await self._subscribed(
            self._events_channel,
            "other replicas' events not read",
            self._apply,
            every=(self._hello_seconds, self._say_watching),
        )

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
        except Exception as exc:  # anything published here (another version?): not a crash
            self._trouble("a malformed message from another replica", type(exc).__name__)
        else:
            self._failing.discard("a malformed message from another replica")

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
        await self._subscribed(
            self._watching_channel, "not listening to other replicas", self._hello
        )

    def _hello(self, data: bytes) -> None:
        if data != self.replica.encode():
            self._heard()

    def _heard(self) -> None:
        self._heard_until = time.monotonic() + self._heard_seconds
        if self._publisher is None:
            self._recent.keep_for(self)
            self._recent.tap(self._settled)
            self._publisher = asyncio.create_task(self._publish(), name="console-replicas-pub")

    def _settled(self, settlement: Settlement) -> None:
        self._settlements.append(settlement)

    async def _publish(self) -> None:
        cursor = self._recent.cursor()  # what was stored before is not shared
        try:
            while time.monotonic() < self._heard_until:
                await asyncio.sleep(_TICK)
                # another replica's event is not published here: its own replica does that
                cursor, stored = self._recent.accepted_since(cursor, _PER_TICK, here_only=True)
                if stored or self._settlements:
                    await self._send(stored)
        finally:
            self._recent.untap(self._settled)
            self._recent.release(self)
            self._settlements.clear()
            self._publisher = None

    async def _send(self, stored: list[EventTrace]) -> None:
        events = [_shared(trace) for trace in stored]
        settlements = [s.to_json() for s in self._settlements]
        self._settlements.clear()
        payload = orjson.dumps({"r": self.replica, "e": events, "s": settlements})
        try:
            await self._redis.publish(self._events_channel, payload)
        except (RedisError, OSError) as exc:  # observations: the events are stored
            self._trouble("events not shared with other replicas", str(exc))
        else:
            self._failing.discard("events not shared with other replicas")

    # --- one subscription, through outages -----------------------------------------------

    async def _subscribed(
        self,
        channel: str,
        what: str,
        handle: Callable[[bytes], None],
        *,
        every: tuple[float, Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        """Hand each message on `channel` to `handle` until cancelled, subscribing again
        after a fault or a ping that went unanswered; `every`: (seconds, what to do then,
        and once subscribed)."""
        period, regularly = every or (float("inf"), None)
        task = asyncio.current_task()
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                if regularly is not None:
                    await regularly()
                now = time.monotonic()
                heard, pinged = now, now
                ping_at, due = now + self._ping_seconds, now + period
                while True:
                    wait = max(0.0, min(ping_at, due) - time.monotonic())
                    message = await pubsub.get_message(timeout=wait)
                    if task is not None and task.cancelling():
                        # a cancel that met redis-py's own read timeout can come back as
                        # "no message": it stays a cancel, or the loop would wait on
                        raise asyncio.CancelledError
                    now = time.monotonic()
                    if message is not None:
                        heard = now  # a message, a pong, a confirmation: the link lives
                        self._failing.discard(what)
                        if message["type"] == "message":
                            handle(message["data"])
                    if regularly is not None and now >= due:
                        await regularly()
                        due = now + period
                    if now >= ping_at:
                        if heard < pinged:
                            raise RedisConnectionError("no answer to a ping: connection lost")
                        await pubsub.ping()
                        pinged, ping_at = now, now + self._ping_seconds
            except (RedisError, OSError) as exc:
                if task is not None and task.cancelling():  # a cancel redis-py made an error:
                    raise asyncio.CancelledError from None  # a cancel it stays
                self._trouble(what, str(exc))
                await asyncio.sleep(self._retry_seconds)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    def _trouble(self, what: str, why: str) -> None:
        """Log a fault once per outage, not once a second (the outbox says it too)."""
        if what not in self._failing:
            self._failing.add(what)
            log.warning("console: %s: %s", what, why)


def _shared(trace: EventTrace) -> dict[str, Any]:
    """One stored event as another replica's console may have it: as the page shows it."""
    entry: dict[str, Any] = {
        "k": (trace.pixel, trace.event, trace.event_id),
        "at": trace.accepted_at,
        "src": trace.source,
    }
    event = trace.accepted
    if event is not None:
        record = event.to_record()
        record["data"] = shown_element(record["data"])
        entry["ev"] = record
        seen = event.observed
        if seen is not None:
            entry["o"] = (seen.ip_from, seen.ttclid_from, seen.ttp_from, seen.pixel_copy)
    return entry
