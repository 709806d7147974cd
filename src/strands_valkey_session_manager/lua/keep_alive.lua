#!lua flags=allow-oom
-- allow-oom: it only moves deadlines, so a full server still keeps a running invocation's session.
-- Keep a session alive while an invocation runs (invocation.py's heartbeat): when the session has
-- less than ARGV[2] ms left, move every key of it to ARGV[3] ms from now, from the server's clock.
--   ARGV[2]  the remaining life (ms) below which it moves
--   ARGV[3]  the new remaining life (ms)
-- Returns the session's deadline (ms since the epoch); NOSESSION if the session is gone.

local at = deadline(nil, tonumber(ARGV[2]), tonumber(ARGV[3]))
if at == -2 then
  fail('NOSESSION', session_key)
end
return at
