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

-- SET a value that lives `life` ms from now (-1: no expiry; a plain SET also clears an old TTL).
-- `...` are SET options (NX, XX, GET). Returns SET's reply.
local function set_for(key, value, life, ...)
  if life > 0 then
    return call_on(key, 'SET', key, value, 'PX', life, ...)
  end
  return call_on(key, 'SET', key, value, ...)
end

-- Give a key `life` ms to live from now, or (life -1) no expiry: the one PEXPIRE/PERSIST switch.
local function expire_in(key, life)
  if life > 0 then
    redis.call('PEXPIRE', key, life)
  else
    redis.call('PERSIST', key)
  end
end
