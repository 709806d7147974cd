#!lua
-- The session lock (ValkeySessionManager(lock_timeout=...)): a lease on one member of a session (an
-- agent, or a Swarm/Graph), so that one invocation at a time writes to it. See lock.py.
--   KEYS[3]  the lock key (session:<id>:lock:agent:<id>); its value is the holder's random token
--   KEYS[4]  the member's record key (the agent's state, or the Swarm's/Graph's state)
--   KEYS[5]  for an agent: its message-id ZSET (absent for a Swarm/Graph)
--   ARGV[4]  'acquire', 'renew' or 'release'
--   ARGV[5]  the caller's token
--   ARGV[6]  the lease in ms (acquire, renew)
--   ARGV[7], ARGV[8]  renew, optional: the keep-alive's due and extend (ms, see life() in session.lua),
--            so that one beat of invocation.py's heartbeat renews and keeps alive; absent, a renewal
--            refreshes the session by the idle rule (if it is due)
-- Every operation only ever touches the caller's own lease: acquire sets a free lock, renew extends
-- and release deletes it only while it still holds the caller's token (compare-and-set, atomically).
-- The lock key is not in the session index, so the TTL refresh never extends a lease; a lease never
-- ends after the session does, and delete_session removes it (walk(true) in session.lua).
-- Replies: acquire and release return the member's fingerprint (see below), or nil if the lock is
-- someone else's; renew returns 1, or nil if the caller has lost its lease. Renew and release fail
-- NOSESSION when the lease is gone because the session is (deleted, or expired): the real cause.

open(KEYS, ARGV)
local lock_key, record_key, ids_key = KEYS[3], KEYS[4], own_last >= 5 and KEYS[5] or nil
local op, holder = ARGV[4], ARGV[5]

-- What a holder leaves behind: the SHA1 of the member's record and its newest message id. The next
-- holder compares it with what it last read itself, and re-reads the member first if it differs.
local function fingerprint()
  local record = call_on(record_key, 'GET', record_key)
  local newest = ids_key and call_on(ids_key, 'ZRANGE', ids_key, -1, -1)[1]
  return { record and redis.sha1hex(record) or '', newest or '' }
end

-- When a lease taken or renewed now ends (ms on the server's clock): ARGV[6] ms from now, but never after
-- the session's deadline, which ends it exactly (absolute, as every deadline: see expire_at in base.lua).
local function lease_end(session_life)
  if session_life > 0 and session_life < tonumber(ARGV[6]) then
    return redis.call('PEXPIRETIME', session_key)
  end
  return deadline_in(tonumber(ARGV[6]))
end

if op == 'acquire' then
  if redis.call('EXISTS', lock_key) == 1 then   -- busy: one command, nothing written
    return nil
  end
  local left = life()                           -- taking the lock slides the session, as a restore does
  if left == -2 then
    fail('NOSESSION', session_key)
  end
  redis.call('SET', lock_key, holder, 'PXAT', lease_end(left))
  return fingerprint()
end

if call_on(lock_key, 'GET', lock_key) ~= holder then
  if redis.call('EXISTS', session_key) == 0 then
    fail('NOSESSION', session_key)
  end
  return nil                                    -- expired, deleted, or taken by another holder
end
if op == 'renew' then
  redis.call('PEXPIREAT', lock_key, lease_end(life(tonumber(ARGV[7]), tonumber(ARGV[8]))))
  return 1
end
redis.call('DEL', lock_key)
return fingerprint()
