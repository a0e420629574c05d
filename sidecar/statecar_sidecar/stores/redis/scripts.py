"""
The Lua scripts that make each Redis write one atomic `EVALSHA`: check the concurrency rule of
`etags` against the key's `version` and write, in daprd's layout (a HASH of `data`, `version`,
plus statecar's `exp` and `exp-version`). The store loads them up front and runs them; this
module only holds them.

What a write leaves, whichever script makes it: `data` and `version` set, where `version` is
Redis's clock in microseconds, or the stored version plus one when that is not below it (a
clock that went back, two writes in one microsecond), so an ETag never repeats for a key.
`exp-version` equal to `version`: it tells a reader that `exp` describes this write, which a
later daprd write (it HINCRBYs `version`) undoes. With a TTL: `exp` (epoch ms) set and the key's
expiry at `exp`. Without: no `exp` and no expiry, whoever set it (daprd sets a bare `EXPIRE`).
Never daprd's one-shot `first-write` field.

Cost (Redis 7.0, CPU of the redis-server process per EVALSHA of a 1 KB save, 20k calls): each
`redis.call` costs Redis about a microsecond (arguments copied in, the reply built as RESP and
parsed back into Lua); a table returned to the client costs ~0.8 µs more than a number, and
formatting a number as text ~0.5 µs. So the save, the hot write, is written out flat: it reads
`version`, `exp` and `first-write` in one `HMGET`, deletes fields only when one of them is there,
sets the TTL case's three fields in one `HSET`, builds the version from TIME's text, and answers
an integer. 10.3 -> 7.8 µs per save (an EVALSHA of `return 1` costs 4.0).
"""

from __future__ import annotations

from typing import Final

from statecar_sidecar.stores.redis.resp import Script

__all__ = ["DELETE", "SAVE", "TRANSACT"]

# KEYS[1] key; ARGV: given etag ('' = none), first-write ('1'/'0'), data, ttl ms ('0' = none).
# Returns 1 when written, else the current version ('' when the key has none), a bulk string.
# The version is TIME's seconds and its microseconds padded to 6 digits: the same text as
# string.format('%.0f', us), without formatting a number (~0.5 µs less per call).
SAVE: Final = Script(
    """
local key = KEYS[1]
local f = redis.pcall('HMGET', key, 'version', 'exp', 'first-write')
if f.err then return redis.error_reply('WRONGTYPE key ' .. key .. ' is not a statecar/dapr hash') end
local current = f[1]
if ARGV[1] ~= '' then
  if current ~= ARGV[1] then return current or '' end
elseif current and ARGV[2] == '1' then
  return current
end
local t = redis.call('TIME')
local sec, usec = t[1], t[2]
local us = sec * 1000000 + usec
local c = current and tonumber(current)
local version
if c and c + 1 > us then
  version = string.format('%.0f', c + 1)
elseif #usec == 6 then
  version = sec .. usec
else
  version = sec .. string.rep('0', 6 - #usec) .. usec
end
local ttl = ARGV[4]
if ttl == '0' then
  redis.call('HSET', key, 'data', ARGV[3], 'version', version, 'exp-version', version)
  if f[2] or f[3] then redis.call('HDEL', key, 'exp', 'first-write') end
  redis.call('PERSIST', key)
else
  local exp = string.format('%.0f', math.floor(us / 1000) + tonumber(ttl))
  redis.call('HSET', key, 'data', ARGV[3], 'version', version, 'exp', exp, 'exp-version', version)
  if f[3] then redis.call('HDEL', key, 'first-write') end
  redis.call('PEXPIREAT', key, exp)
end
return 1
"""
)

# DELETE's helpers: read a key's version, tolerating a key of another type (reported).
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
"""

# KEYS[1] key; ARGV: given etag, first-write. Returns 1, or the current version ('' = none).
DELETE: Final = Script(
    _PRELUDE
    + """
local current, err = version_of(KEYS[1])
if err then return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' is not a statecar/dapr hash') end
if not allowed(current, ARGV[1], ARGV[2]) then return current or '' end
redis.call('DEL', KEYS[1])
return 1
"""
)

# KEYS: one per op, in order. ARGV[1]: one letter per op, 'A' plus the sum of its flags: 1 a
# delete, 2 an ETag given, 4 first-write, 8 a TTL given. Then, per op in order, only what it has:
# its data (a save), its ETag (flag 2), its TTL in ms (flag 8). Flags instead of five arguments
# per op: a plain 10-upsert transaction passes 11 arguments, not 50, and Redis creates a Lua
# string for each one (a 1 KB value costs ~1.7 µs to hand to Lua, 40 small ones ~2 µs together).
# Pass 1 checks every op against the state the earlier ops leave (a shadow map); pass 2 applies,
# leaving what SAVE leaves (one TIME for all: each key's version still only grows). Pass 2 reuses
# pass 1's read of a key unless this transaction already wrote or deleted it.
# Nothing is written unless every check passed, so the script is all-or-nothing.
# Returns 1, or {failing op index (1-based), current version or ''}.
# Written flat, no helper function: Redis CPU per call for 10 upserts of 1 KB, best of 7 runs of
# 2000, 67-72 -> 54-56 µs; a script that only reads, writes and PERSISTs them costs 56.
TRANSACT: Final = Script(
    """
local flags = ARGV[1]
local shadow, read = {}, {}
local a = 2
for i = 1, #KEYS do
  local key = KEYS[i]
  local m = string.byte(flags, i) - 65
  local given = ''
  if m % 2 == 0 then a = a + 1 end
  if m % 4 >= 2 then given = ARGV[a]; a = a + 1 end
  if m >= 8 then a = a + 1 end
  local current = shadow[key]
  if current == nil then
    local f = redis.pcall('HMGET', key, 'version', 'exp', 'first-write')
    if f.err then return redis.error_reply('WRONGTYPE key ' .. key .. ' is not a statecar/dapr hash') end
    read[key] = f
    current = f[1]
  end
  -- false: deleted earlier in this transaction. 'pending': written earlier, so its ETag is one
  -- nobody can know yet: it never matches.
  if given ~= '' then
    if current ~= given then return {i, current or ''} end
  elseif current and m % 8 >= 4 then
    return {i, current}
  end
  if m % 2 == 0 then shadow[key] = 'pending' else shadow[key] = false end
end
local us, now
local changed = {}
a = 2
for i = 1, #KEYS do
  local key = KEYS[i]
  local m = string.byte(flags, i) - 65
  if m % 2 == 0 then
    local data = ARGV[a]
    a = a + 1
    if m % 4 >= 2 then a = a + 1 end
    local ttl = '0'
    if m >= 8 then ttl = ARGV[a]; a = a + 1 end
    if not us then
      local t = redis.call('TIME')
      local sec, usec = t[1], t[2]
      us = sec * 1000000 + usec
      if #usec == 6 then now = sec .. usec else now = sec .. string.rep('0', 6 - #usec) .. usec end
    end
    local f = read[key]
    if changed[key] then f = redis.call('HMGET', key, 'version', 'exp', 'first-write') end
    local c = f[1] and tonumber(f[1])
    local version = now
    if c and c + 1 > us then version = string.format('%.0f', c + 1) end
    if ttl == '0' then
      redis.call('HSET', key, 'data', data, 'version', version, 'exp-version', version)
      if f[2] or f[3] then redis.call('HDEL', key, 'exp', 'first-write') end
      redis.call('PERSIST', key)
    else
      local exp = string.format('%.0f', math.floor(us / 1000) + tonumber(ttl))
      redis.call('HSET', key, 'data', data, 'version', version, 'exp', exp, 'exp-version', version)
      if f[3] then redis.call('HDEL', key, 'first-write') end
      redis.call('PEXPIREAT', key, exp)
    end
  else
    if m % 4 >= 2 then a = a + 1 end
    redis.call('DEL', key)
  end
  changed[key] = true
end
return 1
"""
)
