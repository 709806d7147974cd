#!lua
-- Replace values only where they still hold what the caller read (compare-and-set), keeping their TTLs:
-- the CLI's rekey (cli/sealed.py), which re-encrypts a session's values with the newest key.
--   KEYS[1], KEYS[2], ...  the value keys (of one session: one slot on a cluster)
--   ARGV[2i-1], ARGV[2i]   the value read from KEYS[i], and the value to put in its place
-- A key whose value changed since it was read (a writer wrote it, with its own keyring) is left alone.
-- Returns how many values were replaced.

local replaced = 0
for i = 1, #KEYS do
  if call_on(KEYS[i], 'GET', KEYS[i]) == ARGV[2 * i - 1] then
    redis.call('SET', KEYS[i], ARGV[2 * i], 'KEEPTTL')
    replaced = replaced + 1
  end
end
return replaced
