"""The scale-out outbox: one Redis stream shared by every gateway replica.

Layout (all keys under one prefix):
    {prefix}:stream   stream of ready events (fields r=record, a=attempts, c=created, p=pixel)
                      read through one consumer group: each entry goes to one replica
    {prefix}:retry    sorted set of events waiting for a retry, scored by due time
    {prefix}:dead     hash of dead letters by id

A claimed entry stays in the group's pending list until it is acknowledged, moved to the
retry set or dead-lettered — each in one Lua script, so an event is never in two places or
none. An entry pending longer than the lease (its replica died or hung) is taken over by
whichever replica claims next (XAUTOCLAIM). Due retries are moved back into the stream
atomically by the claiming replica.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError

from gateway.core.errors import EventError, OutboxUnavailable
from gateway.core.event import Event
from gateway.outbox.base import (
    Claimed,
    DeadLetter,
    Outbox,
    OutboxCounts,
    PixelCounts,
)

_FIELDS_TO_TABLE = """
local function fields_of(stream, id)
  local entries = redis.call('XRANGE', stream, id, id)
  if #entries == 0 then return nil end
  local f, rec = entries[1][2], {}
  for j = 1, #f, 2 do rec[f[j]] = f[j + 1] end
  return rec
end
"""

_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local d = cjson.decode(member)
  redis.call('XADD', KEYS[2], '*', 'r', d.r, 'a', d.a, 'c', d.c, 'p', d.p)
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

_RETRY = (
    _FIELDS_TO_TABLE
    + """
for i = 4, #ARGV do
  local rec = fields_of(KEYS[1], ARGV[i])
  if rec then
    rec.a = tostring(tonumber(rec.a or '0') + 1)
    rec.e = ARGV[3]
    rec.id = ARGV[i]
    redis.call('ZADD', KEYS[2], ARGV[2], cjson.encode(rec))
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return 1
"""
)

_DEAD = (
    _FIELDS_TO_TABLE
    + """
for i = 5, #ARGV do
  local rec = fields_of(KEYS[1], ARGV[i])
  if rec then
    rec.a = tostring(tonumber(rec.a or '0') + 1)
    rec.reason = ARGV[2]
    rec.code = ARGV[3]
    rec.dead_at = ARGV[4]
    redis.call('HSET', KEYS[2], ARGV[i], cjson.encode(rec))
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return 1
"""
)


class RedisOutbox(Outbox):
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tiktok-gateway",
        lease_seconds: float = 300.0,
        consumer: str | None = None,
        forget_consumers_after: float = 86400.0,
    ) -> None:
        self._url = url
        self._stream = f"{prefix}:stream"
        self._retry_key = f"{prefix}:retry"
        self._dead_key = f"{prefix}:dead"
        self._probe_key = f"{prefix}:probe"
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

    async def open(self) -> None:
        if self._redis is not None:
            return
        client = redis.Redis.from_url(
            self._url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        try:
            await client.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                await client.aclose()
                raise OutboxUnavailable(f"redis outbox: {exc}") from None
        except RedisError as exc:
            await client.aclose()
            raise OutboxUnavailable(f"redis outbox unreachable: {exc}") from None
        await self._forget_gone_consumers(client)
        self._promote = client.register_script(_PROMOTE)
        self._retry_script = client.register_script(_RETRY)
        self._dead_script = client.register_script(_DEAD)
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
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    async def add(self, events: Sequence[Event]) -> None:
        now = repr(time.time())
        try:
            records = [(e.to_json(), e.destination.event_source_id) for e in events]
        except orjson.JSONEncodeError:
            raise EventError("event", "holds a value that cannot be stored") from None
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for record, pixel in records:
                    pipe.xadd(self._stream, {"r": record, "a": "0", "c": now, "p": pixel})
                await pipe.execute()
        except RedisError as exc:
            raise OutboxUnavailable(f"redis outbox write failed: {exc}") from None

    async def claim(self, limit: int, now: float) -> list[Claimed]:
        client = self._client
        await self._promote(keys=[self._retry_key, self._stream], args=[now, limit])
        if self._own_pending is not None:
            taken_back = await self._take_back_own(limit)
            if taken_back:
                return self._claimed(taken_back)
        entries: list[tuple[str, dict[str, str]]] = []
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
        return self._claimed(entries)

    async def _take_back_own(self, limit: int) -> list[tuple[str, dict[str, str]]]:
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

    @staticmethod
    def _claimed(entries: list[tuple[str, dict[str, str]]]) -> list[Claimed]:
        return [
            Claimed(entry_id, Event.from_json(f["r"]), int(f.get("a", 0)))
            for entry_id, f in entries
        ]

    async def release_leases(self) -> None:
        """Nothing to do here: a restarted delivery process keeps the consumer name and takes
        its entries back on its first claims; other replicas' XAUTOCLAIM takes the entries of
        a gateway that died once their lease is over."""

    async def ack(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xack(self._stream, self._group, *ids)
            pipe.xdel(self._stream, *ids)
            await pipe.execute()

    async def retry(self, ids: Sequence[str], due: float, reason: str) -> None:
        if ids:
            await self._retry_script(
                keys=[self._stream, self._retry_key], args=[self._group, due, reason, *ids]
            )

    async def dead_letter(
        self, ids: Sequence[str], reason: str, code: int | None, now: float
    ) -> None:
        if ids:
            await self._dead_script(
                keys=[self._stream, self._dead_key],
                args=[self._group, reason, "" if code is None else code, now, *ids],
            )

    async def _dead_items(self) -> list[tuple[str, dict[str, Any]]]:
        items = []
        async for key, value in self._client.hscan_iter(self._dead_key, count=500):
            items.append((key, json.loads(value)))
        return items

    async def counts(self, now: float) -> OutboxCounts:
        client = self._client
        counts = OutboxCounts()
        summary = await client.xpending_range(self._stream, self._group, "-", "+", count=100_000)
        pending_ids = {p["message_id"] for p in summary}

        def note(pixel: str, created: float, kind: str) -> None:
            per = counts.pixels.setdefault(pixel, PixelCounts())
            setattr(per, kind, getattr(per, kind) + 1)
            setattr(counts, kind, getattr(counts, kind) + 1)
            age = now - created
            per.oldest_age_seconds = max(per.oldest_age_seconds or 0.0, age)
            counts.oldest_age_seconds = max(counts.oldest_age_seconds or 0.0, age)

        start = "-"
        while True:
            chunk = await client.xrange(self._stream, start, "+", count=1000)
            for entry_id, fields in chunk:
                kind = "in_flight" if entry_id in pending_ids else "pending"
                note(fields.get("p", "?"), float(fields.get("c", now)), kind)
            if len(chunk) < 1000:
                break
            start = "(" + chunk[-1][0]
        for member in await client.zrange(self._retry_key, 0, -1):
            data = json.loads(member)
            note(data.get("p", "?"), float(data.get("c", now)), "retrying")
        for _, data in await self._dead_items():
            counts.pixels.setdefault(data.get("p", "?"), PixelCounts()).dead += 1
            counts.dead += 1
        return counts

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        items = sorted(await self._dead_items(), key=lambda kv: -float(kv[1]["dead_at"]))
        return [
            DeadLetter(
                key,
                Event.from_json(data["r"]),
                int(data["code"]) if data.get("code") else None,
                data["reason"],
                float(data["dead_at"]),
                int(data["a"]),
            )
            for key, data in items[:limit]
        ]

    async def replay(self, pixel: str | None = None, code: int | None = None) -> int:
        moved = 0
        for key, data in await self._dead_items():
            if pixel is not None and data.get("p") != pixel:
                continue
            if code is not None and data.get("code") != str(code):
                continue
            async with self._client.pipeline(transaction=True) as pipe:
                fields = {"r": data["r"], "a": "0", "c": data["c"], "p": data["p"]}
                pipe.xadd(self._stream, fields)
                pipe.hdel(self._dead_key, key)
                await pipe.execute()
            moved += 1
        return moved

    async def purge_dead(self, older_than: float) -> int:
        old = [k for k, d in await self._dead_items() if float(d["dead_at"]) < older_than]
        if old:
            await self._client.hdel(self._dead_key, *old)
        return len(old)

    async def check_writable(self) -> None:
        try:
            await self._client.set(self._probe_key, repr(time.time()))
        except RedisError as exc:
            raise OutboxUnavailable(f"redis outbox not writable: {exc}") from None
