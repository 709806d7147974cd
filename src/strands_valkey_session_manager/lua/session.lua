-- The session part of the prelude (after base.lua), for the session scripts (scripts.py calls them so):
--   KEYS  the session record key (session:<id>, or session:{<id>} on a cluster), its index key (SET of
--         member suffixes: agent:<id>, multi_agent:<id>), the script's own keys, then the lock key if the
--         write is fenced, then further keys declared for a walk of the whole session (see walk below)
--         or named in ARGV
--   ARGV  the session's ttl in ms (0 = no expiry of its own), the fence token ('' = not fenced), how many
--         further keys end KEYS, then the script's own arguments
-- Every key a script touches is declared. Those the caller cannot know (every message of every agent,
-- for a TTL refresh or a delete) are learnt from the index by walk(): a walk that reaches undeclared keys
-- changes nothing and fails with UNDECLARED and their names; scripts.py declares them and calls again.

-- What open() reads of the call, for the helpers below. In the FUNCTION library (scripts.py) they outlive
-- a call; that is safe because every call sets them first and calls never interleave.
local KEYS_, session_key, index_key, ttl, token, own_last, lock_key

-- The first thing every session script does: read the call, laid out as above. own_last is the last of the
-- script's own keys (KEYS[3 .. own_last]); lock_key is nil unless the write is fenced.
local function open(keys, args)
  KEYS_, session_key, index_key = keys, keys[1], keys[2]
  ttl, token = tonumber(args[1]), args[2]
  own_last, lock_key = #keys - tonumber(args[3]), nil
  if token ~= '' then
    lock_key = keys[own_last]
    own_last = own_last - 1
  end
end

-- Every key of the session, found through its index (no SCAN, no KEYS): the record, the index, each
-- member, each agent's message-id ZSET and messages and, with locks, each member's lock key (lock.lua;
-- not in the index). Returns them if every one was declared; else fails UNDECLARED with those that were
-- not (a ZSET that was not declared is not read: its messages are learnt on the next call).
local function walk(locks)
  local declared = {}
  for i = 1, #KEYS_ do
    declared[KEYS_[i]] = true
  end
  local found = { session_key, index_key }
  for _, suffix in ipairs(call_on(index_key, 'SMEMBERS', index_key)) do
    local key = session_key .. ':' .. suffix
    found[#found + 1] = key
    if locks then
      found[#found + 1] = session_key .. ':lock:' .. suffix
    end
    if string.sub(suffix, 1, 6) == 'agent:' then
      local ids_key = key .. ':messages'
      found[#found + 1] = ids_key
      if declared[ids_key] then
        for _, id in ipairs(call_on(ids_key, 'ZRANGE', ids_key, 0, -1)) do
          found[#found + 1] = key .. ':message:' .. id
        end
      end
    end
  end
  return require_declared(KEYS_, found)
end

-- Delete keys, in chunks (Lua's unpack() is bounded). Returns how many existed.
local function delete_all(keys)
  local deleted = 0
  for first = 1, #keys, 1000 do
    deleted = deleted + redis.call('DEL', unpack(keys, first, math.min(first + 999, #keys)))
  end
  return deleted
end

-- What the session record holds if this library did not write it ('' if it did, or if it is absent):
-- its Valkey type, or 'not a session record'. A record of this library is a JSON object whose session_id
-- is the session's id (what codec.encode(Session) writes), the id being the key's last part (ids and
-- prefixes never hold '{' or '}', ids never ':'), or a sealed value (values.py: it starts with SEALED,
-- which scripts.py defines before this prelude; encrypted, it is bound to this key).
local function foreign()
  local session_id = string.match(session_key, '^.-:{?([^:{}]+)}?$')
  local kind = redis.call('TYPE', session_key)['ok']
  if kind == 'none' then
    return ''
  end
  if kind ~= 'string' then
    return kind
  end
  local value = redis.call('GET', session_key)
  if string.sub(value, 1, #SEALED) == SEALED then
    return ''
  end
  local ok, record = pcall(cjson.decode, value)
  if ok and type(record) == 'table' and record.session_id == session_id then
    return ''
  end
  return 'not a session record'
end

-- Fail FOREIGN (nothing changed) unless the session record is absent or this library's.
local function check_own()
  local what = foreign()
  if what ~= '' then
    fail('FOREIGN', session_key .. ' ' .. what)
  end
end

-- The session's remaining life in ms (-1 = none, -2 = no session), its TTL refreshed first when due.
-- THIS IS THE ONLY PLACE TTLs ARE REFRESHED. Refreshing is amortised: all keys move to now + ttl together,
-- and only once the remaining life has dropped below 90% of ttl, so a burst of writes pays for one walk
-- of the session (and scripts.py's round trip to declare its keys), not one per write. A key written
-- later gets the session's deadline (write_deadline), so every key of the session shares one deadline.
-- due and extend (ms; default 0.9 * ttl and ttl) change the rule to "when less than due is left, move
-- every key to now + extend" (a running invocation's keep-alive keeps the deadline further ahead).
local function life(due, extend)
  local left = redis.call('PTTL', session_key)
  if left == -2 or ttl == 0 or (left ~= -1 and left >= (due or ttl * 0.9)) then
    return left == 0 and 1 or left             -- 0: under 1 ms left, still a deadline (never 'none')
  end
  local keys = walk(false)                      -- due: the lock keys keep their own lease
  check_own()                                   -- never refresh what this library did not write
  local at = deadline_in(extend or ttl)
  for _, key in ipairs(keys) do
    redis.call('PEXPIREAT', key, at)            -- absolute (see expire_at in base.lua): one deadline for all
  end
  return extend or ttl
end

-- Fencing, with the session lock on (lock.lua): a write made while holding the lock declares the lock key
-- and passes the holder's token. The write is refused (FENCED) unless that token still holds the lock, so
-- a holder whose lease ran out cannot interleave its writes with the next holder's.
local function check_fence()
  if lock_key and call_on(lock_key, 'GET', lock_key) ~= token then
    if redis.call('EXISTS', session_key) == 0 then
      fail('NOSESSION', session_key)
    end
    fail('FENCED', lock_key)
  end
end

-- The deadline of a write (ms on the server's clock, -1 = none): the session's, refreshed first if due.
-- The writer must still hold the lock, if it writes under one; and the session must still exist, or the
-- write would be orphaned. Nothing is written before these checks.
local function write_deadline()
  check_fence()
  if life() == -2 then
    fail('NOSESSION', session_key)
  end
  return redis.call('PEXPIRETIME', session_key)
end
