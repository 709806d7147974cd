-- Shared by every script of this package; scripts.py prepends it to each script body.
-- A script runs atomically on the server: nothing else runs between its first and last command,
-- and its writes are replicated and appended to the AOF as one MULTI/EXEC block.
--
-- Every script takes the same first two keys and first argument:
--   KEYS[1]  the session record key     (session:<id>, or session:{<id>} on a cluster)
--   KEYS[2]  the session index key      (SET of member suffixes: agent:<id>, multi_agent:<id>, ...)
--   ARGV[1]  the session's ttl in ms    (0 = the manager sets no expiry)

local session_key = KEYS[1]
local index_key = KEYS[2]
local ttl = tonumber(ARGV[1])

-- Raise an error reply whose first word is a code the Python side maps to a SessionException.
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

-- Server time in ms: every deadline comes from the server's clock, never a client's.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Call fn on every key of the session: record, index, members, agents' id sets and messages.
-- This walks the index, so no SCAN/KEYS is needed and no other session's keys are touched.
-- on_lock, if given, is called on each member's lock key (session:<id>:lock:<suffix>, see lock.lua):
-- deleting a session removes its locks, but the TTL refresh must not extend a lease, so passes none.
local function each_key(fn, on_lock)
  fn(session_key)
  fn(index_key)
  for _, suffix in ipairs(call_on(index_key, 'SMEMBERS', index_key)) do
    local key = session_key .. ':' .. suffix
    fn(key)
    if on_lock then
      on_lock(session_key .. ':lock:' .. suffix)
    end
    if string.sub(suffix, 1, 6) == 'agent:' then
      local ids_key = key .. ':messages'
      fn(ids_key)
      for _, id in ipairs(call_on(ids_key, 'ZRANGE', ids_key, 0, -1)) do
        fn(key .. ':message:' .. id)
      end
    end
  end
end

-- Delete every key of the session, in chunks (Lua's unpack() is bounded). Returns how many existed.
local function delete_session_keys()
  local keys = {}
  local function collect(key) keys[#keys + 1] = key end
  each_key(collect, collect)                    -- the members' locks too (DEL skips absent ones)
  local deleted = 0
  for first = 1, #keys, 1000 do
    deleted = deleted + redis.call('DEL', unpack(keys, first, math.min(first + 999, #keys)))
  end
  return deleted
end

-- The session's one deadline (ms since the epoch; -1 = none), refreshed first when it is due.
-- THIS IS THE ONLY PLACE TTLs ARE REFRESHED. Refreshing is amortised: all keys move to now + ttl
-- together, and only once the remaining life has dropped below 90% of ttl, so a burst of writes
-- pays for one walk of the session, not one per write. Returns -2 if the session record is gone.
-- walk (default each_key) calls its argument on every key that shares the deadline of session_key.
-- due and extend (ms; default 0.9 * ttl and ttl) change the rule to "when less than due is left,
-- move to now + extend": a running invocation's keep-alive (keep_alive.lua, lock.lua's renew) keeps
-- the deadline more than ttl ahead, and moves it back to now + ttl when the invocation ends.
local function deadline(walk, due, extend)
  local current = redis.call('PEXPIRETIME', session_key)
  if current == -2 or ttl == 0 then
    return current
  end
  local now = now_ms()
  if current ~= -1 and current >= now + (due or ttl * 0.9) then
    return current
  end
  local new_deadline = now + (extend or ttl)
  walk = walk or each_key
  walk(function(key) redis.call('PEXPIREAT', key, new_deadline) end)
  return new_deadline
end

-- Fencing, with the session lock on (lock.lua): a write made while holding the lock passes the lock
-- key as KEYS[4] and the holder's token as the last ARGV, which this removes from ARGV. The write is
-- refused (FENCED) unless that token still holds the lock, so a holder whose lease ran out cannot
-- interleave its writes with the next holder's. Without the lock (3 keys) it costs the #KEYS check.
local function check_fence()
  if #KEYS < 4 then
    return
  end
  local token = table.remove(ARGV)
  if call_on(KEYS[4], 'GET', KEYS[4]) ~= token then
    if redis.call('EXISTS', session_key) == 0 then
      fail('NOSESSION', session_key)
    end
    fail('FENCED', KEYS[4])
  end
end

-- The deadline for a write: the session must still exist, or the write would be orphaned; and the
-- writer must still hold the lock, if it writes under one. Nothing is written before these checks.
local function write_deadline()
  check_fence()
  local at = deadline()
  if at == -2 then
    fail('NOSESSION', session_key)
  end
  return at
end

-- SET a value that expires with the rest of the session (SET alone would clear the key's TTL).
local function set_until(key, value, at)
  if at > 0 then
    redis.call('SET', key, value, 'PXAT', at)
  else
    redis.call('SET', key, value)
  end
end

-- Give a key that may be new the session's deadline (no-op for a session without one).
local function expire_at(key, at)
  if at > 0 then
    redis.call('PEXPIREAT', key, at)
  end
end
