#!lua
-- Give every key of one session, found through its index, one deadline ARGV[1] ms from now,
-- or (ARGV[1] = 0) no expiry at all. Returns the number of keys changed (0 = no such session).

if redis.call('EXISTS', session_key) == 0 then
  return 0
end
local at = 0
if ttl > 0 then
  at = now_ms() + ttl
end
local changed = 0
each_key(function(key)
  if redis.call('EXISTS', key) == 1 then
    changed = changed + 1
    if at > 0 then
      redis.call('PEXPIREAT', key, at)
    else
      redis.call('PERSIST', key)
    end
  end
end)
return changed
