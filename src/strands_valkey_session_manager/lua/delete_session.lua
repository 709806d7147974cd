#!lua
-- Delete every key of one session, atomically, found through its index (no SCAN, no KEYS), and the
-- lock keys of its members.
-- Returns the number of keys deleted (0 = the session did not exist).

local keys = {}
local function collect(key) keys[#keys + 1] = key end
each_key(collect, collect)                      -- the members' locks too (DEL skips absent ones)
local deleted = 0
for first = 1, #keys, 1000 do                   -- DEL in chunks: Lua's unpack() is bounded
  deleted = deleted + redis.call('DEL', unpack(keys, first, math.min(first + 999, #keys)))
end
return deleted
