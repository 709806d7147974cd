#!lua
-- Settle a plain append (store._append_plain: in one MULTI/EXEC, no script, the message SET NX with
-- the deadline the manager last saw, its id ZADDed, the agent SADDed to the index, the ZSET and the index given
-- that deadline if they had none, and the session's PEXPIRETIME read) that found the session's deadline other
-- than the one it wrote: another process moved it (a refresh, a running invocation's keep-alive, a new session
-- under the same id), or the session is gone.
--   KEYS[3]  the agent's message-id ZSET
--   KEYS[4]  the message key
--   ARGV[4]  the message id
--   ARGV[5]  the message JSON the append wrote
--   ARGV[6]  the agent's suffix in the session index (agent:<id>)
--   ARGV[7]  '1' if the append added the id to the ZSET, else '0'
--   ARGV[8]  '1' if the append added the agent to the index, else '0'
-- Session there: the message, its id and the agent are in it, and get its deadline, as if the append had been a
-- script; a message that expired on arrival (the deadline written had passed) is written again. Session gone (deleted,
-- expired, evicted): what the append added is taken back (the message only if it still holds that JSON) and
-- the call fails NOSESSION, as a script's append does without writing. Returns the session's deadline.

open(KEYS, ARGV)
local ids_key, key, id, value, suffix = KEYS[3], KEYS[4], ARGV[4], ARGV[5], ARGV[6]
local at = redis.call('PEXPIRETIME', session_key)
local stored = call_on(key, 'GET', key)
if at == -2 then
  if stored == value then
    redis.call('DEL', key)
  end
  if ARGV[7] == '1' then
    call_on(ids_key, 'ZREM', ids_key, id)      -- an empty ZSET is gone with it
  end
  if ARGV[8] == '1' then
    call_on(index_key, 'SREM', index_key, suffix)
  end
  fail('NOSESSION', session_key)
end
if not stored then
  set_until(key, value, at, 'NX')              -- expired on arrival, or purged with remnants: written again
elseif stored ~= value then
  fail('CONFLICT', key)                        -- another writer took the id since: nothing here to settle
else
  expire_at(key, at)                           -- exactly the session's deadline
end
-- Listed where a walk finds it, whatever happened between the block and here (a new session under the id
-- purged the old one's remnants, the block's included): no-ops when the block's writes are still there.
call_on(ids_key, 'ZADD', ids_key, id, id)
call_on(index_key, 'SADD', index_key, suffix)
expire_at(ids_key, at)
expire_at(index_key, at)
return at
