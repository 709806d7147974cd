#!lua flags=allow-oom
-- Read one record of a session (an agent, a multi-agent) and slide the session's expiry if due,
-- so restoring an agent keeps its whole session alive. A write script (the refresh writes), but
-- allowed at maxmemory (allow-oom): it only moves deadlines, so a full server still restores agents.
--   KEYS[3]  the record key
-- Returns the record's value, or nil when it (or its session) does not exist.

open(KEYS, ARGV)
local record_key = KEYS[3]
life()                                          -- refresh-if-due, atomically with the read
return call_on(record_key, 'GET', record_key)   -- a wrong Valkey type is BADVALUE <key>
