#!lua
-- ValkeyStorage: write, read or delete one value, atomically with its group's index and registry entry.
--   KEYS[1]  the group's index: ZSET of the group's keys (escaped), all scores 0. Its expiry is the group's
--            deadline.
--   KEYS[2]  the value key ('drop', 'expire' and 'put', which act on the whole group: the index again)
--   KEYS[3]  the registry of groups (of this slot, on a cluster): ZSET of groups, all scores 0
--   KEYS[4]  the registry's deadlines: ZSET of the same groups, scored by deadline in ms (+inf = none)
--   ARGV[1]  ttl in ms (0 = none); for 'expire' and 'put', the group's new life from now
--   ARGV[2]  'write', 'read' or 'delete' (one key); 'drop', 'expire' or 'put' (the whole group, for the CLI)
--   ARGV[3]  the key (escaped): its member in KEYS[1] ('' for 'drop' and 'expire'; 'put': 'force' or '')
--   ARGV[4]  the group (escaped): its member in KEYS[3] and KEYS[4]
--   ARGV[5], ARGV[6]  head and cut: the value key of a member m of KEYS[1] is head .. m:sub(cut + 1)
--   ARGV[7]  the value (write); 'put': ARGV[7], ARGV[8], ... the group's keys (escaped) and values, in pairs
--   KEYS[5], ...  when the group's TTL refresh is due: its value keys, learnt from an UNDECLARED reply
-- A group's keys, its index and its registry score share one deadline: a value is never listed after it
-- expired, and an index never outlives its values.

local group_key, value_key, registry, deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl = tonumber(ARGV[1])
local operation, member, group, head, cut = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])

-- Call fn on every key of the group: its index and the value of every key it lists (no SCAN, no KEYS).
-- Every key of the group: its index and the value of every key it lists (no SCAN, no KEYS), each declared
-- (the caller learns them from an UNDECLARED reply first, valkey_storage.py).
local function group_keys()
  local keys = { group_key }
  for _, key in ipairs(call_on(group_key, 'ZRANGE', group_key, 0, -1)) do
    keys[#keys + 1] = head .. string.sub(key, cut + 1)
  end
  return require_declared(KEYS, keys)
end

-- The group's deadline (ms since the epoch; -1 = none, -2 = no group). When less than 90% of ttl is left,
-- every key of the group moves to now + ttl first, together (amortised, as the sessions' TTL refresh).
local function deadline()
  local current = redis.call('PEXPIRETIME', group_key)
  if current == -2 or ttl == 0 then
    return current
  end
  local now = now_ms()
  if current ~= -1 and current >= now + ttl * 0.9 then
    return current
  end
  for _, key in ipairs(group_keys()) do
    redis.call('PEXPIREAT', key, now + ttl)
  end
  return now + ttl
end

-- The registry expires when its last group does (never while one of its groups has no deadline).
local function expire_registry()
  local last = redis.call('ZRANGE', deadlines, -1, -1, 'WITHSCORES')
  if #last == 0 then
    return
  end
  for _, key in ipairs({ registry, deadlines }) do
    if last[2] == 'inf' then
      redis.call('PERSIST', key)
    else
      redis.call('PEXPIREAT', key, last[2])
    end
  end
end

-- Record the group's deadline in the registry, and drop a few groups whose deadline has passed (their keys
-- are gone already), so the registry tracks the live groups without a sweep.
local function register(at)
  call_on(registry, 'ZADD', registry, 0, group)
  call_on(deadlines, 'ZADD', deadlines, at > 0 and at or 'inf', group)
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', '(' .. now_ms(), 'LIMIT', 0, 16)) do
    redis.call('ZREM', registry, gone)
    redis.call('ZREM', deadlines, gone)
  end
  expire_registry()
end

-- The group's deadline after sliding it if due (-2 = no group); the registry follows when it moved.
local function slide()
  local before = redis.call('PEXPIRETIME', group_key)
  local at = deadline()
  if at ~= before and at ~= -2 then
    register(at)
  end
  return at
end

if operation == 'read' then
  slide()
  return call_on(value_key, 'GET', value_key)
end

if operation == 'write' then
  local at = slide()
  if at == -2 then                              -- a new group: it starts its life now
    at = deadline_in(ttl)
    register(at)
  end
  call_on(group_key, 'ZADD', group_key, 0, member)
  expire_at(group_key, at)
  set_until(value_key, ARGV[7], at)
  return 1
end

if operation == 'delete' then
  call_on(group_key, 'ZREM', group_key, member)
  redis.call('DEL', value_key)
  if redis.call('EXISTS', group_key) == 0 then -- the group's last key: the group is gone
    call_on(registry, 'ZREM', registry, group)
    call_on(deadlines, 'ZREM', deadlines, group)
    expire_registry()
  end
  return 1
end

-- The whole group (cli/snapshots.py: a session's snapshots, or its context stash), its registry entry following.
if operation == 'drop' then                    -- returns the number of keys deleted (0: no such group)
  local deleted = 0
  for _, key in ipairs(group_keys()) do
    deleted = deleted + redis.call('DEL', key)
  end
  call_on(registry, 'ZREM', registry, group)
  call_on(deadlines, 'ZREM', deadlines, group)
  expire_registry()
  return deleted
end

if operation == 'expire' then                  -- returns the number of keys given the deadline (0: no such group)
  if redis.call('EXISTS', group_key) == 0 then
    return 0
  end
  local at, keys = deadline_in(ttl), group_keys()
  for _, key in ipairs(keys) do
    expire_at(key, at)
  end
  register(at)
  return #keys
end

-- Write a whole group (an import): refused (-1) if it exists, unless 'force', which first deletes what its index
-- lists. A value key that exists but is no key of the group was not written by ValkeyStorage: FOREIGN, nothing
-- changed. Returns the number of values written; every key of the group gets the deadline now + ttl.
if operation == 'put' then
  local exists = redis.call('EXISTS', group_key) == 1
  if exists and member ~= 'force' then
    return -1
  end
  local old = exists and group_keys() or {}
  local listed = {}
  for _, key in ipairs(old) do
    listed[key] = true
  end
  local keys = {}
  for i = 7, #ARGV, 2 do
    keys[#keys + 1] = head .. string.sub(ARGV[i], cut + 1)
  end
  require_declared(KEYS, keys)
  for _, key in ipairs(keys) do
    if not listed[key] and redis.call('EXISTS', key) == 1 then
      fail('FOREIGN', key .. ' ' .. redis.call('TYPE', key).ok .. ' (not a key of ' .. group .. ')')
    end
  end
  for _, key in ipairs(old) do
    redis.call('DEL', key)
  end
  local at = deadline_in(ttl)
  for i = 7, #ARGV, 2 do
    call_on(group_key, 'ZADD', group_key, 0, ARGV[i])
    set_until(keys[(i - 5) / 2], ARGV[i + 1], at)
  end
  expire_at(group_key, at)
  register(at)
  return #keys
end

fail('BADVALUE', 'unknown storage operation ' .. operation)
