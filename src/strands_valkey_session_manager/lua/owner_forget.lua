-- Take sessions out of their owner's listing (directory.py), in the owner's slot:
--   KEYS  the owner's ZSET of session ids, its titles HASH
--   ARGV  pairs of a session id and the score it was seen with ('': whatever it is now)
-- A session whose score moved since it was seen was used again (a new session under that id, by the same
-- owner): it stays. Returns how many went. A ZSET or HASH emptied so is gone (Valkey deletes empty ones).
local owned, titles = KEYS[1], KEYS[2]
local gone = 0
for i = 1, #ARGV, 2 do
  local score = call_on(owned, 'ZSCORE', owned, ARGV[i])
  if score and (ARGV[i + 1] == '' or tonumber(score) == tonumber(ARGV[i + 1])) then
    gone = gone + redis.call('ZREM', owned, ARGV[i])
    call_on(titles, 'HDEL', titles, ARGV[i])
  end
end
return gone
