-- The base of every script of this package (session scripts and ValkeyStorage's): scripts.py puts it first.
-- A script runs atomically on the server: nothing else runs between its first and last command, and its
-- writes are replicated and appended to the AOF as one MULTI/EXEC block. It touches only the keys it
-- declares in KEYS (Valkey's scripting rule; on a cluster a key in a migrating slot is only safe if declared).

-- Raise an error reply whose first word is a code the Python side maps to an exception (errors.py).
local function fail(code, detail)
  error({ err = code .. ' ' .. detail })
end

-- redis.call, but a WRONGTYPE error becomes BADVALUE naming the key it was about. Other errors
-- (an ACL user without a command, OOM, ...) are raised as they are: they say what went wrong.
local function call_on(key, ...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    if string.sub(reply.err, 1, 9) == 'WRONGTYPE' then
      fail('BADVALUE', key .. ' ' .. reply.err)
    end
    error(reply)
  end
  return reply
end

-- Return `keys` if the script declared each of them (`declared` is its KEYS); else fail UNDECLARED with the
-- names of those it did not, having changed nothing: the caller declares them and calls again (scripts.py).
local function require_declared(declared, keys)
  local known, missing = {}, {}
  for i = 1, #declared do
    known[declared[i]] = true
  end
  for _, key in ipairs(keys) do
    if not known[key] then
      missing[#missing + 1] = key
    end
  end
  if #missing > 0 then
    fail('UNDECLARED', cjson.encode(missing))
  end
  return keys
end

-- Server time in ms: every deadline comes from the server's clock, never a client's.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Every deadline a script gives is absolute (PXAT, PEXPIREAT: ms on the server's clock), never relative
-- (PX, PEXPIRE): Redis OSS 7.0 reads its clock afresh for each relative expiry inside a script, so the keys
-- of one walk that crosses a millisecond get different deadlines (measured: 5,000 PEXPIREs in one script, 11
-- deadlines; Valkey 8 gave them one). One absolute value gives a session's keys one deadline on every server.

-- The deadline `life` ms from now (-1 for a life of 0 or less: no expiry), read from the clock once.
local function deadline_in(life)
  return life > 0 and now_ms() + life or -1
end

-- SET a value that expires at `at` (-1: no expiry; a plain SET also clears an old TTL).
-- `...` are SET options (NX, XX, GET). Returns SET's reply.
local function set_until(key, value, at, ...)
  if at > 0 then
    return call_on(key, 'SET', key, value, 'PXAT', at, ...)
  end
  return call_on(key, 'SET', key, value, ...)
end

-- Make a key expire at `at`, or (at -1) never: the one PEXPIREAT/PERSIST switch.
local function expire_at(key, at)
  if at > 0 then
    redis.call('PEXPIREAT', key, at)
  else
    redis.call('PERSIST', key)
  end
end
