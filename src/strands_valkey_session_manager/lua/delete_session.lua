#!lua flags=allow-oom
-- allow-oom: deleting is how a full server gets memory back.
-- Delete every key of one session, found through its index (no SCAN, no KEYS), and the lock keys of its
-- members; every one declared (walk in session.lua: the caller learns them first).
--   ARGV[4]  ''           the whole session, atomically (a delete on logout)
--            'record'     the session record alone: once it is gone no write lands in the session (a script
--                         fails NOSESSION, a plain append takes itself back), so a delete that other writers
--                         kept outrunning (each call found keys it had not declared) can finish with
--            'remnants'   every key of a session whose record is absent (after 'record'; or what a process
--                         killed between a plain append and its settle left), nothing if the record exists
-- A session record this library did not write is FOREIGN: nothing is deleted.
--   ARGV[5]  with '' or 'record', optional: the record as the caller read it (an owner's erasure, directory.py):
--            a session whose record is another now (deleted and created again since, maybe by someone else) is
--            left be
-- Returns the number of keys deleted (0 = the session did not exist, or its record was not the one read).

open(KEYS, ARGV)
local mode, read = ARGV[4], ARGV[5] ~= '' and ARGV[5] or nil
if mode == 'remnants' and redis.call('EXISTS', session_key) == 1 then
  return 0                                     -- a live session: its keys are not remnants
end
local keys = mode ~= 'record' and walk(true)   -- learnt first: the checks below run once
check_own()
if read and redis.call('GET', session_key) ~= read then
  return 0
end
if mode == 'record' then
  return redis.call('DEL', session_key)
end
return delete_all(keys)
