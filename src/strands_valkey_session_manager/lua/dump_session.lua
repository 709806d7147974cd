#!lua flags=no-writes
-- Read every record of one session (session, agents, messages, multi-agents) at one instant,
-- found through its index: {remaining life of the session record in ms, key, value, key, value, ...}.
-- The remaining life is -2 when the session record does not exist, -1 when it never expires.
-- Only string keys are records; the index and the message-id ZSETs are derived from them.
-- A session record this library did not write is FOREIGN.

open(KEYS, ARGV)
local keys = walk(false)
check_own()
local out = { redis.call('PTTL', session_key) }
for _, key in ipairs(keys) do
  if redis.call('TYPE', key)['ok'] == 'string' then
    out[#out + 1] = key
    out[#out + 1] = redis.call('GET', key)
  end
end
return out
