#!lua
-- Write one whole session atomically, as the manager writes it: every record with one deadline,
-- each agent and multi-agent registered in the session index, each message id in its agent's ZSET.
--   ARGV[1]  the session's remaining life in ms (0 = never expires)
--   ARGV[2]  'force' to replace an existing session (all its keys are deleted first), '' to refuse
--   ARGV[3], ARGV[4], ...  groups of five: key, value, index member ('' = none),
--            message-id ZSET key ('' = none), message id
-- Returns the number of records written, or -1 (nothing written) when the session exists and
-- ARGV[2] is not 'force'.

if redis.call('EXISTS', session_key, index_key) > 0 then
  if ARGV[2] ~= 'force' then
    return -1
  end
  delete_session_keys()
end
local at = 0
if ttl > 0 then
  at = now_ms() + ttl
end
local sets = {}
for i = 3, #ARGV, 5 do
  local key, value, member, ids_key, id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  set_until(key, value, at)
  if member ~= '' then
    redis.call('SADD', index_key, member)
    sets[index_key] = true
  end
  if ids_key ~= '' then
    redis.call('ZADD', ids_key, id, id)
    sets[ids_key] = true
  end
end
for key in pairs(sets) do
  expire_at(key, at)
end
return (#ARGV - 2) / 5
