"""The lead context in the Redis outbox's server: one hash per key with a TTL, so every
replica shares it and Redis expires it by itself.

Two sorted sets index the keys by expiry — entries no backend event has found yet, and
joined ones — which bounds the store: the sweep drops what has expired from both and, past
`max_entries`, the entries never joined that would expire soonest, then joined ones. The
merge (an entry belongs to the visitor who wrote it first; a later page without a click id
keeps the earlier click; the same click keeps its earliest time) runs in a Lua script, so
replicas writing the same key lose no field and cannot both claim it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.storage.leads.base import CONTEXT_FIELDS, ContextStore, LeadContext

# KEYS[1] the entry, KEYS[2] the index, KEYS[3] the joined index; ARGV: ttl ms, expiry
# score, then field/value pairs. Returns 0 when another visitor's entry holds the key.
_MERGE = """
local pairs = {}
for i = 3, #ARGV, 2 do pairs[ARGV[i]] = ARGV[i + 1] end
local owner = redis.call('HGET', KEYS[1], 'visitor')
if owner and owner ~= pairs['visitor'] then return 0 end
local click = pairs['ttclid']
if click ~= nil and click == redis.call('HGET', KEYS[1], 'ttclid') then
  local stored = tonumber(redis.call('HGET', KEYS[1], 'ttclid_at'))
  local given = tonumber(pairs['ttclid_at'])
  if stored ~= nil and (given == nil or stored <= given) then pairs['ttclid_at'] = nil end
end
for k, v in next, pairs do redis.call('HSET', KEYS[1], k, v) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if redis.call('ZSCORE', KEYS[3], KEYS[1]) then
  redis.call('ZADD', KEYS[3], ARGV[2], KEYS[1])
else
  redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
end
return 1
"""

# KEYS[1] the entry, KEYS[2] the index, KEYS[3] the joined index: moves the entry over
_JOIN = """
local score = redis.call('ZSCORE', KEYS[2], KEYS[1])
if score then
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('ZADD', KEYS[3], score, KEYS[1])
end
return 1
"""

# KEYS[1] the index, KEYS[2] the joined index; ARGV: now, bound. Returns {left, evicted}.
_SWEEP = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local count = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local bound = tonumber(ARGV[2])
local evicted = 0
for _, index in ipairs(KEYS) do
  if count > bound then
    local oldest = redis.call('ZPOPMIN', index, count - bound)
    for i = 1, #oldest, 2 do redis.call('DEL', oldest[i]) end
    evicted = evicted + #oldest / 2
    count = count - #oldest / 2
  end
end
return {count, evicted}
"""


class RedisContextStore(ContextStore):
    def __init__(self, client: Any, *, prefix: str = "tiktok-gateway", **options: Any) -> None:
        """`client`: made with `decode_responses=True`, owned (and closed) by the backend."""
        super().__init__(**options)
        self._redis = client
        self._prefix = f"{prefix}:context:"
        self._index = f"{prefix}:context-index"
        self._joined_index = f"{prefix}:context-joined"

    async def _prepare(self) -> None:
        self._merge = self._redis.register_script(_MERGE)
        self._join = self._redis.register_script(_JOIN)
        self._sweeper = self._redis.register_script(_SWEEP)

    async def _write(self, entries: dict[str, LeadContext], now: float) -> int:
        ttl_ms = int(self.ttl * 1000)
        indexes = [self._index, self._joined_index]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, context in entries.items():
                args: list[Any] = [ttl_ms, now + self.ttl]
                for name, value in context.to_json().items():
                    args.extend((name, repr(value) if isinstance(value, float) else value))
                await self._merge(keys=[self._prefix + key, *indexes], args=args, client=pipe)
            written = await pipe.execute()
        return sum(1 for answer in written if not answer)

    async def _mark_joined(self, keys: Sequence[str]) -> None:
        indexes = [self._index, self._joined_index]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                await self._join(keys=[self._prefix + key, *indexes], client=pipe)
            await pipe.execute()

    async def _read(self, keys: Sequence[str], now: float) -> dict[str, LeadContext]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self._prefix + key)
            found = await pipe.execute()
        return {key: _context(stored) for key, stored in zip(keys, found, strict=True) if stored}

    async def _sweep(self, now: float) -> tuple[int, int]:
        indexes = [self._index, self._joined_index]
        left, evicted = await self._sweeper(keys=indexes, args=[now, self.max_entries])
        return int(left), int(evicted)


def _context(stored: dict[str, str]) -> LeadContext:
    values: dict[str, Any] = {k: v for k, v in stored.items() if k in CONTEXT_FIELDS}
    if "ttclid_at" in values:
        try:
            values["ttclid_at"] = float(values["ttclid_at"])
        except ValueError:
            del values["ttclid_at"]
    return LeadContext(**values)
