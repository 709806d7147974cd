#!lua flags=no-writes
-- One page of an owner's listing (directory.py), most recently used first, in the owner's slot:
--   KEYS  the owner's ZSET of session ids (score: last use), its titles HASH
--   ARGV  how many (the page and one more, to know if another page follows), and the cursor: the score
--         and id of the last session of the previous page ('' '' for the first page)
-- Sessions used at the same millisecond come in descending id order (ZRANGE REV): those at the cursor's
-- score whose id is not below the cursor's were on an earlier page. Returns the server's time (ms), then
-- id, score and title ('' for none) of each session: O(page + ties at the cursor's score).
local owned, titles = KEYS[1], KEYS[2]
local want, after, after_id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local top = after == '' and '+inf' or after
local picked, offset = {}, 0
while #picked < want do
  local batch = call_on(owned, 'ZRANGE', owned, top, '-inf', 'BYSCORE', 'REV', 'LIMIT', offset, want, 'WITHSCORES')
  for i = 1, #batch, 2 do
    if #picked < want and not (after ~= '' and tonumber(batch[i + 1]) == tonumber(after) and batch[i] >= after_id) then
      picked[#picked + 1] = { batch[i], batch[i + 1] }
    end
  end
  if #batch < 2 * want then
    break
  end
  offset = offset + want
end
local out = { now_ms() }
if #picked > 0 then
  local ids = {}
  for i, item in ipairs(picked) do
    ids[i] = item[1]
  end
  local names = call_on(titles, 'HMGET', titles, unpack(ids))
  for i, item in ipairs(picked) do
    out[#out + 1] = item[1]
    out[#out + 1] = item[2]
    out[#out + 1] = names[i] or ''
  end
end
return out
