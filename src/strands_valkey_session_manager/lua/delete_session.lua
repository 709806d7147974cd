#!lua flags=allow-oom
-- allow-oom: deleting is how a full server gets memory back.
-- Delete every key of one session, atomically, found through its index (no SCAN, no KEYS), and the
-- lock keys of its members; every one declared. A session record this library did not write is
-- FOREIGN: nothing is deleted. Returns the number of keys deleted (0 = the session did not exist).
-- The script's own arguments (all optional: without them, or when the session is no longer as they
-- say, it walks the session, below):
--   ARGV[4]  the session record as the caller read it, just before, having checked it is this library's
--   ARGV[5]  how many members the session index had then
--   ARGV[6], ARGV[7], ...  how many ids each agent's message-id ZSET had then: the first walk keys are
--            those ZSETs, in that order; the other walk keys are every other key the caller derived from
--            what it read (members, their lock keys, messages)

open(KEYS, ARGV)

-- Whether the session is still as the caller read it, so that KEYS are all of its keys: then the keys
-- need not be rebuilt from the index (walk) to be checked, which costs a string per key in Lua.
-- Counts suffice because, for as long as one session lives, the members of its index and the ids of its
-- ZSETs are only ever added: no script removes one (append_messages.lua's ZREM takes out only the id it
-- has just added itself, in the same call; settle_append.lua's, and the manager's undo of a plain append
-- that met a key of another type, take out the id that append added a moment before, so a count read in
-- between is one too many, never the same with other ids), only a delete does, of the whole session. A set that had n
-- members and has n again has the same ones. "The same session" is what the record says: a session
-- deleted (or expired) and created again between the caller's read and this call has a new record (its
-- created_at), so a different one means walk. The one way counts could match with other members is a key
-- vanishing on its own (eviction, a hand DEL) and the same number being added back: eviction takes whole
-- keys (an evicted index or ZSET is not refilled: the next append is a CONFLICT), and what was declared
-- is deleted either way.
local function as_read()
  local record, members = ARGV[4], tonumber(ARGV[5])
  if record == nil or redis.pcall('GET', session_key) ~= record then
    return false                               -- also a record of another type: pcall's error is no string
  end
  if redis.pcall('SCARD', index_key) ~= members then
    return false
  end
  for i = 6, #ARGV do
    local ids_key = KEYS[own_last + i - 5]
    if redis.pcall('ZCARD', ids_key) ~= tonumber(ARGV[i]) then
      return false
    end
  end
  return true
end

if as_read() then
  return delete_all(KEYS)                      -- the record is the one the caller read: this library's
end
local keys = walk(true)                        -- learnt first: the check below runs once
check_own()
return delete_all(keys)
