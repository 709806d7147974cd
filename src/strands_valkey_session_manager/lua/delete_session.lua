#!lua flags=allow-oom
-- allow-oom: deleting is how a full server gets memory back.
-- Delete every key of one session, atomically, found through its index (no SCAN, no KEYS), and the
-- lock keys of its members; every one declared (walk in session.lua: the caller learns them first).
-- A session record this library did not write is FOREIGN: nothing is deleted.
-- Returns the number of keys deleted (0 = the session did not exist).

open(KEYS, ARGV)
local keys = walk(true)                        -- learnt first: the check below runs once
check_own()
return delete_all(keys)
