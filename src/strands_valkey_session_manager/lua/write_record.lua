#!lua
-- Create or update one record of a session (an agent, a multi-agent, a redacted message).
--   KEYS[3]  the record key
--   ARGV[4]  mode: 'create' (write it, registering it in the index) or 'update' (it must exist)
--   ARGV[5]  the record's suffix to add to the session index ('' = none)
--   ARGV[6]  created_at as a JSON string ('' = the record has no created_at)
--   ARGV[7]  the rest of the JSON object: ',"field":...}' after created_at, or the whole object
-- An update keeps the stored created_at, as FileSessionManager does, and replaces only a JSON object
-- (with a created_at, if the record has one) or a sealed value, read before it writes; a create replaces only
-- a string. A sealed value (values.py) comes whole in ARGV[7] (ARGV[6] ''): opaque here, its created_at is the
-- caller's to keep. Anything else is BADVALUE, and leaves the store as it was (its value and its TTL). Returns
-- the created_at used and the session's deadline
-- (PEXPIRETIME), for the manager's plain-command writes (store.fresh_deadline).
-- An update costs PTTL, PEXPIRETIME, GET and SET XX.

open(KEYS, ARGV)
local record_key = KEYS[3]
local mode, suffix, created_at, body = ARGV[4], ARGV[5], ARGV[6], ARGV[7]

-- What an update must keep: the created_at (a JSON string) stored in `previous`, '' for a record without
-- one; nil if `previous` is no record this library writes (a JSON object, with a created_at if it should).
local function stored_created_at(previous)
  if string.sub(previous, 1, #SEALED) == SEALED then
    return created_at                           -- sealed (values.py): the caller sends the created_at stored
  end
  local stored = created_at ~= '' and string.match(previous, '^{"created_at":("[^"\\]*")')
  if stored then
    return stored
  end
  local ok, decoded = pcall(cjson.decode, previous)   -- not written by this library, or an older layout
  if not ok or type(decoded) ~= 'table' or not string.match(previous, '^%s*{') then
    return nil
  end
  if created_at == '' then
    return ''                                   -- a record without created_at (a Swarm's or Graph's state)
  end
  if type(decoded.created_at) == 'string' then
    return cjson.encode(decoded.created_at)
  end
  return nil
end

-- The record's JSON with the given created_at ('' = none).
local function record(with_created_at)
  return with_created_at ~= '' and '{"created_at":' .. with_created_at .. body or body
end

local at = write_deadline()                     -- NOSESSION if the session is gone
if mode == 'update' then
  -- Read first: a value this library did not write is never replaced, not even for a moment.
  local previous = call_on(record_key, 'GET', record_key)  -- BADVALUE <key> for a value of another type
  if not previous then
    fail('NOTFOUND', record_key)
  end
  local stored = stored_created_at(previous)
  if not stored then
    fail('BADVALUE', record_key .. ' is not a JSON object' .. (created_at ~= '' and ' with a created_at' or ''))
  end
  set_until(record_key, record(stored), at, 'XX')  -- keeping the created_at first stored
  return { stored, at }
end
-- A create (once per agent) checks before it writes: it replaces a string only, never another type.
call_on(record_key, 'GET', record_key)          -- BADVALUE <key> for a value of another type
if suffix ~= '' and call_on(index_key, 'SADD', index_key, suffix) == 1 then
  expire_at(index_key, at)
end
set_until(record_key, record(created_at), at)
return { created_at, at }
