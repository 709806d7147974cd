#!lua
-- Append messages to one agent, all or nothing. Usually one message; more when an earlier append
-- failed on the wire (the manager re-sends it first, byte for byte, so ids stay gap-free).
--   KEYS[3]  the agent's message-id ZSET
--   ARGV[2]  the agent's suffix in the session index (agent:<id>)
--   ARGV[3]  the message key prefix (...:agent:<id>:message:)
--   ARGV[4], ARGV[5], ...  pairs of message id and message JSON
-- A message id that already holds different content is a CONFLICT: a second writer is using the
-- same agent id. Identical content is a retry of a write that did land, and is accepted as done.

local ids_key = KEYS[3]
local suffix, message_prefix = ARGV[2], ARGV[3]

local at = write_deadline()                     -- NOSESSION if the session is gone
for i = 4, #ARGV, 2 do                          -- check every message before writing any
  local key = message_prefix .. ARGV[i]
  local existing = call_on(key, 'GET', key)
  if existing and existing ~= ARGV[i + 1] then
    fail('CONFLICT', key)
  end
end
call_on(index_key, 'SADD', index_key, suffix)   -- the first writes that can fail (wrong type)
expire_at(index_key, at)
for i = 4, #ARGV, 2 do
  call_on(ids_key, 'ZADD', ids_key, ARGV[i], ARGV[i])
end
expire_at(ids_key, at)
for i = 4, #ARGV, 2 do
  set_until(message_prefix .. ARGV[i], ARGV[i + 1], at)
end
return #ARGV / 2 - 1
