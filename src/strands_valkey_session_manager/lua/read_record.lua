#!lua flags=allow-oom
-- allow-oom: restoring must work on a full server (its only write, the TTL refresh, adds no memory).
-- Read one record of a session (an agent, a multi-agent) and slide the session's expiry if due,
-- so restoring an agent keeps its whole session alive. Flagged as writing: the refresh writes.
--   KEYS[3]  the record key
-- Returns the record's value, or nil when it (or its session) does not exist.

local record_key = KEYS[3]
deadline()                                      -- refresh-if-due, atomically with the read
return call_on(record_key, 'GET', record_key)   -- a wrong Valkey type is BADVALUE <key>
