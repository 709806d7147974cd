#!lua flags=allow-oom
-- allow-oom: it only moves deadlines, so a full server still keeps a running invocation's session.
-- Keep a session alive while an invocation runs (invocation.py's heartbeat): when the session has
-- less than ARGV[4] ms left, move every key of it to ARGV[5] ms from now (life() in session.lua: the
-- keys are declared, learnt from the index first).
--   ARGV[4]  the remaining life (ms) below which it moves
--   ARGV[5]  the new remaining life (ms)
-- Returns the session's remaining life (ms); NOSESSION if the session is gone.

open(KEYS, ARGV)
local left = life(tonumber(ARGV[4]), tonumber(ARGV[5]))
if left == -2 then
  fail('NOSESSION', session_key)
end
return left
