#!lua
-- Give every key of one session, found through its index, one deadline ARGV[1] ms from now, or
-- (ARGV[1] = 0) no expiry at all. Returns the number of keys changed (0 = no such session).
-- A session record this library did not write is FOREIGN: nothing changes.

open(KEYS, ARGV)
if redis.call('EXISTS', session_key) == 0 then
  return 0
end
local keys = walk(false)
check_own()
local at, changed = deadline_in(ttl), 0          -- one deadline for every key
for _, key in ipairs(keys) do
  if redis.call('EXISTS', key) == 1 then
    changed = changed + 1
    expire_at(key, at)
  end
end
return changed
