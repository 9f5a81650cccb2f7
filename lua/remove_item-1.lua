-- Remove one item from a conversation's current history. Stored responses keep theirs (history is
-- immutable): the head moves to a new segment that branches off just before the item and holds copies
-- of the items after it. Then whatever neither the head nor a live response reaches any more (whole
-- segments, or the tail of one) is deleted, so repeated removals do not pile up copies.
-- KEYS[1]  the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta
-- ARGV[1]  tenant
-- ARGV[2]  conversation id
-- ARGV[3]  item id (compared with each item's top-level "id", whole)
-- ARGV[4]  now, unix ms
-- ARGV[5]  TTL ms
-- Returns  the new version, 0 when the conversation is unknown, -1 when the item is not in its history
--@include includes/history.lua

local meta = KEYS[1]
local m = redis.call('HMGET', meta, 'v', 'hs', 'he', 'nseg')
if not m[1] then return 0 end
local tag_prefix = tag_prefix_of(meta)
local prefix = tag_prefix .. ARGV[1] .. ':' .. ARGV[2] .. ':'
local records_key = tag_prefix .. 'rec'
local items, where = collect_items(prefix, meta, m[2], tonumber(m[3]), true)
local found
for i = 1, #items do
  local ok, item = pcall(cjson.decode, items[i])
  if ok and type(item) == 'table' and item.id == ARGV[3] then
    found = i
    break
  end
end
if not found then return -1 end

local nseg = tonumber(m[4])
local head = tostring(nseg)
redis.call('HSET', meta, 'p:' .. head, where[found][1] .. ':' .. where[found][2])
local rest = {}
for i = found + 1, #items do rest[#rest + 1] = items[i] end
for first = 1, #rest, 1000 do
  redis.call('RPUSH', prefix .. 'seg:' .. head, unpack(rest, first, math.min(first + 999, #rest)))
end
local version = tonumber(m[1]) + 1
redis.call('HSET', meta, 'nseg', nseg + 1, 'hs', head, 'he', #rest, 'v', version, 'updated', ARGV[4])

-- What the head and each live response reach: walked segments keep their parent link, and their items
-- up to the furthest position anything reaches.
local walked, need = {}, {}
local function reach(seg, stop)
  while true do
    walked[seg] = true
    if stop > (need[seg] or 0) then need[seg] = stop end
    local parent = redis.call('HGET', meta, 'p:' .. seg)
    if not parent then return end
    local sep = string.find(parent, ':', 1, true)
    seg, stop = string.sub(parent, 1, sep - 1), tonumber(string.sub(parent, sep + 1))
  end
end
reach(head, #rest)
for _, index in ipairs(redis.call('LRANGE', prefix .. 'resps', 0, -1)) do
  local raw = redis.call('LINDEX', records_key, tonumber(index))
  if raw and raw ~= '' and not is_reserved(raw) then
    local r = parse_record(raw)
    reach(r[3], tonumber(r[4]))
  end
end
local total = 0
for s = 0, nseg do
  local seg = tostring(s)
  local seg_key = prefix .. 'seg:' .. seg
  if not walked[seg] then
    redis.call('DEL', seg_key)
    redis.call('HDEL', meta, 'p:' .. seg)
  elseif (need[seg] or 0) == 0 then
    redis.call('DEL', seg_key)
  else
    redis.call('LTRIM', seg_key, 0, need[seg] - 1)
    for _, item in ipairs(redis.call('LRANGE', seg_key, 0, -1)) do total = total + #item end
  end
end
redis.call('HSET', meta, 'bytes', total)
touch_conversation(prefix, meta, records_key, tonumber(ARGV[5]), true)  -- the new head segment
return version
