"""The Redis outbox's Lua scripts: each state move of an event is one atomic script.

An event is never in two places or none, and the per-pixel counters (hash `counts`:
`q:<pixel>` in the stream, `r:<pixel>` waiting for a retry, `d:<pixel>` dead) move with
it, so counting never scans the stream. Fields are copied generically, so entries written
by an older version (field `r`, one JSON record) travel through unchanged.
"""

from __future__ import annotations

_HELPERS = """
local function fields_of(stream, id)
  local entries = redis.call('XRANGE', stream, id, id)
  if #entries == 0 then return nil end
  local f, rec = entries[1][2], {}
  for j = 1, #f, 2 do rec[f[j]] = f[j + 1] end
  return rec
end
local bookkeeping = {id=true, err=true, reason=true, code=true, dead_at=true, rid=true}
local function add_to_stream(stream, rec)
  local args = {}
  for k, v in pairs(rec) do
    if not bookkeeping[k] then table.insert(args, k); table.insert(args, v) end
  end
  redis.call('XADD', stream, '*', unpack(args))
end
local function move(counts, pixel, from, to)
  if from then redis.call('HINCRBY', counts, from .. (pixel or '?'), -1) end
  if to then redis.call('HINCRBY', counts, to .. (pixel or '?'), 1) end
end
"""

PROMOTE = (
    _HELPERS
    + """
-- KEYS: retry, stream, counts; ARGV: now, limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local rec = cjson.decode(member)
  add_to_stream(KEYS[2], rec)
  redis.call('ZREM', KEYS[1], member)
  move(KEYS[3], rec.p, 'r:', 'q:')
end
return #due
"""
)

ACK = (
    _HELPERS
    + """
-- KEYS: stream, counts; ARGV: group, ids…
for i = 2, #ARGV do
  local rec = fields_of(KEYS[1], ARGV[i])
  if rec then move(KEYS[2], rec.p, 'q:', nil) end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return 1
"""
)

RETRY = (
    _HELPERS
    + """
-- KEYS: stream, retry, counts; ARGV: group, due, reason, ids…
for i = 4, #ARGV do
  local rec = fields_of(KEYS[1], ARGV[i])
  if rec then
    rec.a = tostring(tonumber(rec.a or '0') + 1)
    rec.err = ARGV[3]
    rec.id = ARGV[i]
    redis.call('ZADD', KEYS[2], ARGV[2], cjson.encode(rec))
    move(KEYS[3], rec.p, 'q:', 'r:')
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return 1
"""
)

DEAD = (
    _HELPERS
    + """
-- KEYS: stream, dead, counts; ARGV: group, reason, code, dead_at, request id, ids…
for i = 6, #ARGV do
  local rec = fields_of(KEYS[1], ARGV[i])
  if rec then
    rec.a = tostring(tonumber(rec.a or '0') + 1)
    rec.reason = ARGV[2]
    rec.code = ARGV[3]
    rec.dead_at = ARGV[4]
    rec.rid = ARGV[5]
    redis.call('HSET', KEYS[2], ARGV[i], cjson.encode(rec))
    move(KEYS[3], rec.p, 'q:', 'd:')
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return 1
"""
)

REPLAY = (
    _HELPERS
    + """
-- KEYS: dead, stream, counts; ARGV: keys of dead letters…  (another replica may race us)
local moved = 0
for i = 1, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value then
    local rec = cjson.decode(value)
    rec.a = '0'
    add_to_stream(KEYS[2], rec)
    redis.call('HDEL', KEYS[1], ARGV[i])
    move(KEYS[3], rec.p, 'd:', 'q:')
    moved = moved + 1
  end
end
return moved
"""
)

PURGE = (
    _HELPERS
    + """
-- KEYS: dead, counts; ARGV: keys of dead letters…
local removed = 0
for i = 1, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value then
    redis.call('HDEL', KEYS[1], ARGV[i])
    move(KEYS[2], cjson.decode(value).p, 'd:', nil)
    removed = removed + 1
  end
end
return removed
"""
)
