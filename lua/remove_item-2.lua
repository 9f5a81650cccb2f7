-- Remove one item from a conversation's current history. Stored responses keep theirs (history is
-- immutable): the head moves to a new root segment listing the remaining item ids; no item is copied.
-- KEYS[1]  the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta
-- KEYS[2]  the tag prefix  cs:{t}:
-- ARGV[1]  tenant
-- ARGV[2]  conversation id
-- ARGV[3]  item id
-- ARGV[4]  now, unix ms
-- ARGV[5]  TTL seconds
-- Returns  the new version, 0 when the conversation is unknown, -1 when the item is not in its history
--@include includes/history.lua

local m = redis.call('HMGET', KEYS[1], 'v', 'hs', 'he', 'nseg')
if not m[1] then return 0 end
local prefix = KEYS[2] .. ARGV[1] .. ':' .. ARGV[2] .. ':'
local ttl = tonumber(ARGV[5])
local ids = collect_ids(prefix, KEYS[1], m[2], tonumber(m[3]), ttl)
local kept, found = {}, false
for i = 1, #ids do
  if ids[i] == ARGV[3] then found = true else kept[#kept + 1] = ids[i] end
end
if not found then return -1 end
local seg = tonumber(m[4])
local seg_key = prefix .. 'seg:' .. seg
for first = 1, #kept, 1000 do
  redis.call('RPUSH', seg_key, unpack(kept, first, math.min(first + 999, #kept)))
end
if #kept > 0 then redis.call('EXPIRE', seg_key, ttl) end
local version = tonumber(m[1]) + 1
redis.call('HSET', KEYS[1], 'nseg', seg + 1, 'hs', seg, 'he', #kept, 'v', version, 'updated', ARGV[4])
redis.call('EXPIRE', KEYS[1], ttl)
return version
