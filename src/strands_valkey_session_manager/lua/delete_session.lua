#!lua flags=allow-oom
-- allow-oom: deleting is how a full server gets memory back.
-- Delete every key of one session, atomically, found through its index (no SCAN, no KEYS).
-- Returns the number of keys deleted (0 = the session did not exist).

local keys = {}
each_key(function(key) keys[#keys + 1] = key end)
local deleted = 0
for first = 1, #keys, 1000 do                   -- DEL in chunks: Lua's unpack() is bounded
  deleted = deleted + redis.call('DEL', unpack(keys, first, math.min(first + 999, #keys)))
end
return deleted
