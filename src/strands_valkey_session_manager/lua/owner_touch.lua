-- Note a session as used now in its owner's listing (directory.py), in the owner's slot:
--   KEYS  the owner's ZSET of session ids (score: last use, ms on this server's clock), its titles HASH
--   ARGV  the session id, the session's deadline as last seen (ms; -1: none; '': not known), the life to
--         assume when it is not known (ms; 0: none), a margin (ms), a title ('': none), and how to store it
--         ('set': the app's, replaces; 'nx': the first message's, only if there is none)
-- The two keys expire together, at the latest deadline any touch gave them (plus the margin), never
-- earlier than they would have: they outlive the owner's last session by at most the margin, unless a
-- session moved its deadline without a touch (then the session may leave the listing before it expires,
-- and comes back at its next write or open). A session that never expires makes them persist.
local owned, titles = KEYS[1], KEYS[2]
local session_id, seen, life, margin = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local fresh = redis.call('EXISTS', owned) == 0
call_on(owned, 'ZADD', owned, now_ms(), session_id)
if ARGV[5] ~= '' then
  call_on(titles, ARGV[6] == 'set' and 'HSET' or 'HSETNX', titles, session_id, ARGV[5])
end
local at = seen == '' and deadline_in(life) or tonumber(seen)
local current = redis.call('PEXPIRETIME', owned)
if at == -1 then
  expire_at(owned, -1)
elseif fresh or (current ~= -1 and at + margin > current) then
  expire_at(owned, at + margin)
end
if redis.call('EXISTS', titles) == 1 then
  expire_at(titles, redis.call('PEXPIRETIME', owned))
end
return 1
