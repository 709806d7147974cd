#!lua
-- Create or update one record of a session (an agent, a multi-agent, a redacted message).
--   KEYS[3]  the record key
--   ARGV[2]  mode: 'create' (write it, registering it in the index) or 'update' (it must exist)
--   ARGV[3]  the record's suffix to add to the session index ('' = none)
--   ARGV[4]  created_at as a JSON string ('' = the record has no created_at)
--   ARGV[5]  the rest of the JSON object: ',"field":...}' after created_at, or the whole object
-- An update keeps the stored created_at, as FileSessionManager does, and replaces only a JSON object
-- (with a created_at, if the record has one); a create replaces only a string. Anything else is
-- BADVALUE. Returns the created_at used. Every check runs before the first write, so a failed call
-- leaves the store untouched.

local record_key = KEYS[3]
local mode, suffix, created_at, body = ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local at = write_deadline()                     -- NOSESSION if the session is gone
if mode == 'update' then
  local previous = call_on(record_key, 'GET', record_key)
  if not previous then
    fail('NOTFOUND', record_key)
  end
  -- Records this library wrote start with created_at; anything else is decoded to check that it
  -- is a JSON object (an update never replaces a foreign value) and to find its created_at.
  local stored = string.match(previous, '^{"created_at":("[^"\\]*")')
  if not stored then
    local ok, decoded = pcall(cjson.decode, previous)
    if not ok or type(decoded) ~= 'table' or not string.match(previous, '^%s*{') then
      fail('BADVALUE', record_key .. ' is not a JSON object')
    end
    if type(decoded.created_at) == 'string' then
      stored = cjson.encode(decoded.created_at)
    end
  end
  if created_at ~= '' then                      -- agents and messages: only a record with created_at is one
    if not stored then
      fail('BADVALUE', record_key .. ' has no created_at')
    end
    created_at = stored
  end
else
  call_on(record_key, 'GET', record_key)        -- a create replaces a string, never another type (BADVALUE)
end
if suffix ~= '' then                            -- fails first (wrong type) or changes nothing twice
  call_on(index_key, 'SADD', index_key, suffix)
  expire_at(index_key, at)
end
if created_at ~= '' then
  set_until(record_key, '{"created_at":' .. created_at .. body, at)
else
  set_until(record_key, body, at)
end
return created_at
