#!lua
-- Settle a plain append (session_manager._append_plain: SET NX + ZADD + PEXPIRETIME of the session in one
-- MULTI/EXEC, no script) that found the session's deadline other than the one it gave the message: another
-- process moved it (a refresh, a running invocation's keep-alive), or the session is gone.
--   KEYS[3]  the agent's message-id ZSET
--   KEYS[4]  the message key
--   ARGV[4]  the message id
--   ARGV[5]  the message JSON the append wrote
-- Session there: the message and the ZSET get its deadline, as if the append had been a script. Session gone
-- (deleted, or expired): what the append wrote is taken back (the message only if it still holds that JSON,
-- and its id) and the call fails NOSESSION, as a script's append does without writing. Returns the session's
-- deadline (PEXPIRETIME).

open(KEYS, ARGV)
local ids_key, key, id, value = KEYS[3], KEYS[4], ARGV[4], ARGV[5]
local at = redis.call('PEXPIRETIME', session_key)
if at == -2 then
  if call_on(key, 'GET', key) == value then
    redis.call('DEL', key)
  end
  call_on(ids_key, 'ZREM', ids_key, id)        -- an empty ZSET is gone with it
  fail('NOSESSION', session_key)
end
expire_at(ids_key, at)                          -- exactly the session's deadline
expire_at(key, at)
return at
