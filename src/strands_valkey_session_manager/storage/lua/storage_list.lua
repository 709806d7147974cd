#!lua flags=no-writes,allow-cross-slot-keys
-- ValkeyStorage: list the keys under a prefix above a group (shorter than two segments, e.g. '' or 'session/').
-- Asks each registry for the groups starting with the prefix, then each such group's index for its keys: one
-- call per node, atomic on that node. Declares no keys: on a cluster it is sent to each primary with the
-- registries of that primary's slots (allow-cross-slot-keys); a registry whose slot moved meanwhile is a
-- non-local key, an error, and the caller refreshes its slot map and asks again.
--   ARGV[1]  unused (0)
--   ARGV[2], ARGV[3]  the lex range of the prefix (as for ZRANGEBYLEX)
--   ARGV[4], ARGV[5]  a group's index key is ARGV[4] .. group .. ARGV[5]
--   ARGV[6], ...  registry keys (ZSETs of groups)
-- Returns the keys found (escaped), in no particular order.

local low, high, before, after = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local found = {}
for i = 6, #ARGV do
  for _, group in ipairs(call_on(ARGV[i], 'ZRANGEBYLEX', ARGV[i], low, high)) do
    local index = before .. group .. after
    for _, key in ipairs(call_on(index, 'ZRANGEBYLEX', index, low, high)) do
      found[#found + 1] = key
    end
  end
end
return found
