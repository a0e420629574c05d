"""
The Lua scripts that make each Redis write one atomic `EVALSHA`: check the concurrency rule of
`etags` against the key's `version` and write, in daprd's layout (a HASH of `data`, `version`,
plus statecar's `exp`). The store loads them up front and runs them; this module only holds them.
"""

from __future__ import annotations

from typing import Final

from statecar_sidecar.stores.redis.resp import Script

__all__ = ["DELETE", "SAVE", "TRANSACT"]

# Shared by the scripts: read a key's version, tolerating a key of another type (reported).
_PRELUDE: Final = """
local function version_of(key)
  local v = redis.pcall('HGET', key, 'version')
  if type(v) == 'table' and v.err then return nil, v.err end
  return v, nil
end
local function allowed(current, given, first_write)
  if given ~= '' then return current and current == given end
  if first_write == '1' and current then return false end
  return true
end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function write(key, current, data, ttl_ms)
  local us = now_us()
  local v = us
  local c = current and tonumber(current)
  if c and c + 1 > v then v = c + 1 end
  local version = string.format('%.0f', v)
  redis.call('HSET', key, 'data', data, 'version', version)
  -- 'first-write' is daprd's flag; left behind it would make daprd refuse later saves.
  if ttl_ms ~= '0' then
    local exp = math.floor(us / 1000) + tonumber(ttl_ms)
    redis.call('HSET', key, 'exp', string.format('%.0f', exp))
    redis.call('HDEL', key, 'first-write')
    redis.call('PEXPIREAT', key, string.format('%.0f', exp))
  else
    redis.call('HDEL', key, 'exp', 'first-write')
    redis.call('PERSIST', key)
  end
  return version
end
"""

# KEYS[1] key; ARGV: given etag ('' = none), first-write ('1'/'0'), data, ttl ms ('0' = none).
# Returns {1, version} or {0, current version or ''}.
SAVE: Final = Script(
    _PRELUDE
    + """
local current, err = version_of(KEYS[1])
if err then return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' is not a statecar/dapr hash') end
if not allowed(current, ARGV[1], ARGV[2]) then return {0, current or ''} end
return {1, write(KEYS[1], current, ARGV[3], ARGV[4])}
"""
)

# KEYS[1] key; ARGV: given etag, first-write. Returns {1} or {0, current version or ''}.
DELETE: Final = Script(
    _PRELUDE
    + """
local current, err = version_of(KEYS[1])
if err then return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' is not a statecar/dapr hash') end
if not allowed(current, ARGV[1], ARGV[2]) then return {0, current or ''} end
redis.call('DEL', KEYS[1])
return {1}
"""
)

# KEYS: one per op, in order. ARGV: 5 per op: kind ('s'/'d'), given etag, first-write, data, ttl ms.
# Pass 1 checks every op against the state the earlier ops leave (a shadow map); pass 2 applies.
# Nothing is written unless every check passed, so the script is all-or-nothing.
# Returns {1} or {0, failing op index (1-based), current version or ''}.
TRANSACT: Final = Script(
    _PRELUDE
    + """
local shadow = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local b = (i - 1) * 5
  local current
  if shadow[key] ~= nil then
    current = shadow[key]
  else
    local err
    current, err = version_of(key)
    if err then return redis.error_reply('WRONGTYPE key ' .. key .. ' is not a statecar/dapr hash') end
  end
  if not allowed(current, ARGV[b + 2], ARGV[b + 3]) then return {0, i, current or ''} end
  -- A key this transaction writes has an ETag nobody can know yet: 'pending' never matches.
  if ARGV[b + 1] == 's' then shadow[key] = 'pending' else shadow[key] = false end
end
for i = 1, #KEYS do
  local key = KEYS[i]
  local b = (i - 1) * 5
  if ARGV[b + 1] == 's' then
    write(key, redis.call('HGET', key, 'version'), ARGV[b + 4], ARGV[b + 5])
  else
    redis.call('DEL', key)
  end
end
return {1}
"""
)
