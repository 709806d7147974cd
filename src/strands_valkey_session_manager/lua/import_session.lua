#!lua
-- Write one whole session atomically, as the manager writes it: every record with one deadline,
-- each agent and multi-agent registered in the session index, each message id in its agent's ZSET.
--   KEYS[3], ...  the keys to write: one per group of ARGV below, in the same order
--   ARGV[1]  the session's remaining life in ms (0 = never expires)
--   ARGV[4]  'force' to replace an existing session (all its keys are deleted first), '' to refuse
--   ARGV[5], ARGV[6], ...  groups of four: value, index member ('' = none), message-id ZSET key
--            ('' = none; declared among the walk keys), message id
-- Returns the number of records written, or -1 (nothing written) when the session exists and
-- ARGV[4] is not 'force'. A session record this library did not write is FOREIGN, even with 'force'.

open(KEYS, ARGV)
if redis.call('EXISTS', session_key, index_key) > 0 then
  if ARGV[4] ~= 'force' then
    return -1
  end
  local keys = walk(true)
  check_own()
  delete_all(keys)
end
local at = deadline_in(ttl)                     -- one deadline for every key
local sets = {}
for i = 3, own_last do
  local group = 5 + (i - 3) * 4
  local value, member, ids_key, id = ARGV[group], ARGV[group + 1], ARGV[group + 2], ARGV[group + 3]
  set_until(KEYS[i], value, at)
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
return own_last - 2
