#!lua flags=no-writes
-- List every key of one session, found through its index (no SCAN, no KEYS), and the locks held on its
-- members (lock.lua): a flat list of five values per key: name, type, remaining life in ms (-1 = none),
-- length, memory in bytes. Length is the string's bytes, or the number of members/fields/elements of a
-- set, zset, hash, list.

open(KEYS, ARGV)
local LENGTH = { string = 'STRLEN', set = 'SCARD', zset = 'ZCARD', hash = 'HLEN', list = 'LLEN' }
local out = {}
for _, key in ipairs(walk(true)) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' then
    local length = LENGTH[kind] and redis.call(LENGTH[kind], key) or 0
    local memory = redis.call('MEMORY', 'USAGE', key) or 0
    for _, value in ipairs({ key, kind, redis.call('PTTL', key), length, memory }) do
      out[#out + 1] = value
    end
  end
end
return out
