"""The scale-out outbox: one Redis stream shared by every gateway replica.

Keys under one prefix: `:stream` (ready events, read through one consumer group, so each
entry goes to one replica), `:retry` (a sorted set by due time), `:dead` (dead letters by id)
and `:counts` (per-pixel counters). A claimed entry stays pending until one Lua script
(`redis_scripts.py`) acknowledges, retries or dead-letters it; one pending past the lease is
taken over by the next claimer (XAUTOCLAIM). Every redis-py error becomes `OutboxUnavailable`
at one boundary (`_translated`). The layout: docs/design/redis-outbox.md.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
from redis.exceptions import RedisError, ResponseError

from gateway.core.errors import EventError, OutboxUnavailable
from gateway.core.event import Destination, Event
from gateway.storage.outbox import redis_scripts as scripts
from gateway.storage.outbox import redis_search
from gateway.storage.outbox.base import (
    CHECKPOINT_DAYS,
    Backlog,
    Claimed,
    DeadLetter,
    Outbox,
    OutboxCounts,
    PixelCounts,
    Prepared,
    Stored,
)

P = ParamSpec("P")
R = TypeVar("R")
Entry = tuple[str, dict[str, str]]
_CHECKPOINT_SECONDS = CHECKPOINT_DAYS * 86400


def _translated(
    method: Callable[Concatenate[RedisOutbox, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[RedisOutbox, P], Coroutine[Any, Any, R]]:
    """The one boundary where redis-py's errors become the gateway's."""

    @functools.wraps(method)
    async def translated(self: RedisOutbox, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except RedisError as exc:
            raise OutboxUnavailable(f"redis outbox: {exc}") from None

    return translated


class RedisOutbox(Outbox):
    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "tiktok-gateway",
        lease_seconds: float = 300.0,
        consumer: str | None = None,
        forget_consumers_after: float = 86400.0,
    ) -> None:
        self._given = client
        """A client made with `decode_responses=True`, owned (and closed) by the backend."""
        self._stream = f"{prefix}:stream"
        self._retry_key = f"{prefix}:retry"
        self._dead_key = f"{prefix}:dead"
        self._counts_key = f"{prefix}:counts"
        self._probe_key = f"{prefix}:probe"
        self._checkpoint_prefix = f"{prefix}:import:"
        self._group = "dispatchers"
        self._lease_ms = int(lease_seconds * 1000)
        self._forget_ms = int(forget_consumers_after * 1000)
        self._consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._redis: Any = None  # redis-py's result types depend on decode_responses: Any here
        self._own_pending: str | None = "0"
        """A consumer name can outlive a process (a restarted delivery process keeps its
        gateway's): the first claims take back what this name held and never acknowledged,
        reading its pending list from this id on (None: done)."""

    def __repr__(self) -> str:
        return f"RedisOutbox(consumer={self._consumer!r})"

    @property
    def _client(self) -> Any:
        if self._redis is None:
            raise OutboxUnavailable("the outbox is not open")
        return self._redis

    @_translated
    async def open(self) -> None:
        if self._redis is not None:
            return
        client = self._given
        try:
            await client.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        await self._forget_gone_consumers(client)
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in ("PROMOTE", "ACK", "RETRY", "DEAD", "REPLAY", "PURGE")
        }
        self._redis = client

    async def _forget_gone_consumers(self, client: Any) -> None:
        """Replicas come and go with new names; drop those idle for long with nothing pending.

        A consumer with pending entries is kept: its entries are taken over by XAUTOCLAIM and
        the consumer is forgotten on a later start.
        """
        try:
            consumers = await client.xinfo_consumers(self._stream, self._group)
            for consumer in consumers:
                if consumer["pending"] == 0 and consumer["idle"] >= self._forget_ms:
                    await client.xgroup_delconsumer(self._stream, self._group, consumer["name"])
        except RedisError:  # housekeeping only: never a reason not to start
            pass

    async def close(self) -> None:
        """Closed to its callers; the client is the backend's to close."""
        self._redis = None

    async def add(self, events: Sequence[Event], *, checkpoint: str | None = None) -> None:
        await self.add_prepared(self.prepare(events), checkpoint=checkpoint)

    @staticmethod
    def prepare(events: Sequence[Event]) -> Prepared:
        now = repr(time.time())
        try:
            fields = [_fields(e, now) for e in events]
        except orjson.JSONEncodeError:
            raise EventError("event", "holds a value that cannot be stored") from None
        per_pixel: dict[str, int] = {}
        for event in events:
            pixel = event.destination.event_source_id
            per_pixel[pixel] = per_pixel.get(pixel, 0) + 1
        return Prepared(len(fields), (fields, per_pixel, now))

    @_translated
    async def add_prepared(self, prepared: Prepared, *, checkpoint: str | None = None) -> None:
        fields: list[dict[str, str]]
        per_pixel: dict[str, int]
        fields, per_pixel, now = prepared.payload
        async with self._client.pipeline(transaction=True) as pipe:
            for entry in fields:
                pipe.xadd(self._stream, entry)
            for pixel, number in per_pixel.items():
                pipe.hincrby(self._counts_key, f"q:{pixel}", number)
            if checkpoint is not None:  # in the same MULTI: stored exactly when the events are
                pipe.set(f"{self._checkpoint_prefix}{checkpoint}", now, ex=_CHECKPOINT_SECONDS)
            await pipe.execute()

    @_translated
    async def checkpoint_stored(self, key: str) -> bool:
        return bool(await self._client.exists(f"{self._checkpoint_prefix}{key}"))

    @_translated
    async def claim(self, limit: int, now: float) -> list[Claimed]:
        client = self._client
        await self._scripts["PROMOTE"](
            keys=[self._retry_key, self._stream, self._counts_key], args=[now, limit]
        )
        if self._own_pending is not None:
            taken_back = await self._take_back_own(limit)
            if taken_back:
                return [_claimed(entry) for entry in taken_back]
        entries: list[Entry] = []
        answer = await client.xautoclaim(
            self._stream, self._group, self._consumer, self._lease_ms, "0-0", count=limit
        )
        reclaimed = answer[1]
        deleted = answer[2] if len(answer) > 2 else []  # Redis 6.2 answers without this list
        entries.extend(e for e in reclaimed if e[1])
        if deleted:
            await client.xack(self._stream, self._group, *deleted)
        if len(entries) < limit:
            answer = await client.xreadgroup(
                self._group, self._consumer, {self._stream: ">"}, count=limit - len(entries)
            )
            for _, stream_entries in answer or []:
                entries.extend(stream_entries)
        return [_claimed(entry) for entry in entries]

    async def _take_back_own(self, limit: int) -> list[Entry]:
        """The next page of this consumer's pending list (see `_own_pending`)."""
        client = self._client
        answer = await client.xreadgroup(
            self._group, self._consumer, {self._stream: self._own_pending}, count=limit
        )
        own = [entry for _, stream_entries in answer or [] for entry in stream_entries]
        gone = [entry_id for entry_id, fields in own if not fields]
        if gone:
            await client.xack(self._stream, self._group, *gone)
        # later reads start after these: they are in flight now, not to be sent twice
        self._own_pending = own[-1][0] if len(own) >= limit else None
        return [entry for entry in own if entry[1]]

    async def release_leases(self) -> None:
        """Nothing to do here: a restarted delivery process keeps the consumer name and takes
        its entries back on its first claims; other replicas' XAUTOCLAIM takes the entries of
        a gateway that died once their lease is over."""

    @_translated
    async def ack(self, ids: Sequence[str]) -> None:
        if ids:
            await self._scripts["ACK"](
                keys=[self._stream, self._counts_key], args=[self._group, *ids]
            )

    @_translated
    async def retry(self, ids: Sequence[str], due: float, reason: str) -> None:
        if ids:
            await self._scripts["RETRY"](
                keys=[self._stream, self._retry_key, self._counts_key],
                args=[self._group, due, reason, *ids],
            )

    @_translated
    async def dead_letter(
        self,
        ids: Sequence[str],
        reason: str,
        code: int | None,
        now: float,
        *,
        request_id: str | None = None,
    ) -> None:
        if ids:
            await self._scripts["DEAD"](
                keys=[self._stream, self._dead_key, self._counts_key],
                args=[
                    self._group,
                    reason,
                    "" if code is None else code,
                    now,
                    request_id or "",
                    *ids,
                ],
            )

    @_translated
    async def check_writable(self) -> None:
        await self._client.set(self._probe_key, repr(time.time()))

    @_translated
    async def backlog(self, now: float) -> Backlog:
        """Redis's used memory (and `maxmemory`, when set, as the bound) and the oldest
        event at the head of the stream or of the retries."""
        client = self._client
        async with client.pipeline(transaction=False) as pipe:
            pipe.info("memory")
            pipe.xrange(self._stream, "-", "+", count=1)
            pipe.zrange(self._retry_key, 0, 0)
            memory, head, first_retry = await pipe.execute()
        used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        created = [float(head[0][1].get("c", now))] if head else []
        created += [float(orjson.loads(m).get("c", now)) for m in first_retry]
        return Backlog(
            stored_bytes=used,
            oldest_age_seconds=max(0.0, now - min(created)) if created else None,
            free_bytes=max(0, limit - used) if limit else None,
        )

    # --- operators -------------------------------------------------------------------------

    @_translated
    async def counts(self, now: float) -> OutboxCounts:
        """Totals from XLEN, the pending summary and set sizes; per pixel from the counters
        (for a pixel, `pending` includes what is in flight: the pending list knows entries,
        not pixels). The oldest age is read from the head of the stream and of the retries."""
        client = self._client
        async with client.pipeline(transaction=False) as pipe:
            pipe.xlen(self._stream)
            pipe.xpending(self._stream, self._group)
            pipe.zcard(self._retry_key)
            pipe.hlen(self._dead_key)
            pipe.hgetall(self._counts_key)
            pipe.xrange(self._stream, "-", "+", count=1)
            pipe.zrange(self._retry_key, 0, 0)
            queued, pending, retrying, dead, per_pixel, head, first_retry = await pipe.execute()
        in_flight = int(pending["pending"])
        counts = OutboxCounts(
            pending=queued - in_flight, retrying=retrying, in_flight=in_flight, dead=dead
        )
        for key, value in per_pixel.items():
            kind, _, pixel = key.partition(":")
            per = counts.pixels.setdefault(pixel, PixelCounts())
            field = {"q": "pending", "r": "retrying", "d": "dead"}.get(kind)
            if field is not None:
                setattr(per, field, max(0, int(value)))
        created = [float(head[0][1].get("c", now))] if head else []
        created += [float(orjson.loads(m).get("c", now)) for m in first_retry]
        if created:
            counts.oldest_age_seconds = max(0.0, now - min(created))
        return counts

    async def _dead_items(self) -> list[tuple[str, dict[str, Any]]]:
        items = []
        async for key, value in self._client.hscan_iter(self._dead_key, count=500):
            items.append((key, orjson.loads(value)))
        return items

    @_translated
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        items = sorted(await self._dead_items(), key=lambda kv: -float(kv[1]["dead_at"]))
        return [
            DeadLetter(
                key,
                _claimed((key, data)).decode(),
                int(data["code"]) if data.get("code") else None,
                data["reason"],
                float(data["dead_at"]),
                int(data["a"]),
                data.get("rid") or None,
            )
            for key, data in items[:limit]
        ]

    @_translated
    async def find(self, wanted: str, limit: int = 50) -> list[Stored]:
        keys = (self._stream, self._retry_key, self._dead_key)
        return await redis_search.find(self._client, *keys, wanted, limit)

    @_translated
    async def replay(
        self, pixel: str | None = None, code: int | None = None, *, dry_run: bool = False
    ) -> int:
        keys = [
            key
            for key, data in await self._dead_items()
            if (pixel is None or data.get("p") == pixel)
            and (code is None or data.get("code") == str(code))
        ]
        if not keys or dry_run:
            return len(keys)
        keys_of = [self._dead_key, self._stream, self._counts_key]
        moved: int = await self._scripts["REPLAY"](keys=keys_of, args=keys)
        return moved

    @_translated
    async def purge_dead(self, older_than: float, *, dry_run: bool = False) -> int:
        old = [k for k, d in await self._dead_items() if float(d["dead_at"]) < older_than]
        if not old or dry_run:
            return len(old)
        removed: int = await self._scripts["PURGE"](
            keys=[self._dead_key, self._counts_key], args=old
        )
        return removed


def _fields(event: Event, created: str) -> dict[str, str]:
    destination = event.destination
    return {
        "d": orjson.dumps(event.to_tiktok()).decode(),
        "s": destination.event_source,
        "p": destination.event_source_id,
        "t": destination.test_event_code or "",
        "n": event.event,
        "i": event.event_id,
        "e": str(event.event_time),
        "a": "0",
        "c": created,
    }


def _claimed(entry: Entry) -> Claimed:
    entry_id, f = entry
    if "d" not in f:  # written by a version-1 gateway: one JSON record
        event = Event.from_record(orjson.loads(f["r"]))
        data = orjson.dumps(event.to_tiktok()).decode()
        return Claimed(
            entry_id,
            event.destination,
            event.event,
            event.event_id,
            event.event_time,
            data,
            int(f.get("a", 0)),
        )
    destination = Destination(f["s"], f["p"], f["t"] or None)
    return Claimed(entry_id, destination, f["n"], f["i"], int(f["e"]), f["d"], int(f["a"]))
