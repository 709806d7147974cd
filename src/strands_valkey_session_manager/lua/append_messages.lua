#!lua
-- Append messages to one agent, all or nothing. Usually one message; more when an earlier append
-- failed on the wire (the manager re-sends it first, byte for byte, so ids stay gap-free).
--   KEYS[3]  the agent's message-id ZSET
--   KEYS[4], KEYS[5], ...  the message keys, one per message
--   ARGV[4]  the agent's suffix in the session index (agent:<id>)
--   ARGV[5]  the id before the first message's ('' for id 0): if the id ZSET holds it, the agent is known
--   ARGV[6], ARGV[7], ...  pairs of message id and message JSON, in the order of the message keys
-- A message id that already holds different content is a CONFLICT: a second writer is using the
-- same agent id. Identical content is a retry of a write that did land, and is accepted as done.
-- One message costs PTTL, SADD, ZADD, SET NX GET and PEXPIRETIME; the agent's first also two PEXPIREATs.
-- Returns the session's deadline (PEXPIRETIME: ms on the server's clock, -1 = none): while it is not due for a
-- refresh, the manager appends with plain commands (store._append_plain) and gives it to new keys.

open(KEYS, ARGV)
local ids_key, suffix, previous = KEYS[3], ARGV[4], ARGV[5]
local count = own_last - 3
local at = write_deadline()                     -- NOSESSION if the session is gone
if count > 1 then                               -- a re-sent batch: check every message before writing any
  for i = 1, count do
    local existing = call_on(KEYS[3 + i], 'GET', KEYS[3 + i])
    if existing and existing ~= ARGV[5 + 2 * i] then
      fail('CONFLICT', KEYS[3 + i])
    end
  end
end
-- The writes that can fail on a wrong type come first; for a message already stored they change nothing.
if call_on(index_key, 'SADD', index_key, suffix) == 1 then
  expire_at(index_key, at)                      -- the agent's first write (or an append to one never created)
end
-- The previous id goes into the ZADD too: if it was not there already (added more than the batch can), the
-- ZSET is new (the agent's first message, or its earlier ones are gone): that id comes out again, and the
-- ZSET gets the session's deadline. Otherwise it has it already.
local scores = {}
if previous ~= '' then
  scores[1], scores[2] = previous, previous
end
for i = 1, count do
  scores[#scores + 1], scores[#scores + 2] = ARGV[4 + 2 * i], ARGV[4 + 2 * i]
end
local added = call_on(ids_key, 'ZADD', ids_key, unpack(scores))
if previous == '' or added > count then
  if previous ~= '' then
    redis.call('ZREM', ids_key, previous)
  end
  expire_at(ids_key, at)
end
for i = 1, count do
  local key, value = KEYS[3 + i], ARGV[5 + 2 * i]
  local existing = set_until(key, value, at, 'NX', 'GET')  -- writes only a key that does not exist yet
  if existing and existing ~= value then
    fail('CONFLICT', key)                       -- checked above for a batch; for one message nothing changed
  elseif existing then
    expire_at(key, at)                          -- a write that landed unconfirmed: the session's deadline now
  end
end
return at
