#!lua flags=allow-oom
-- allow-oom: deleting is how a full server gets memory back.
-- Delete every key of one session, atomically, found through its index (no SCAN, no KEYS), and the
-- lock keys of its members (see delete_session_keys in common.lua).
-- Returns the number of keys deleted (0 = the session did not exist).

return delete_session_keys()
