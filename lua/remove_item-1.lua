-- Remove one item from a conversation's current history. Stored responses keep theirs (history is
-- immutable): the head moves to a new root segment holding the remaining items. This copies the
-- conversation's items once; it is a rare, explicit operation (Conversations API item delete).
-- KEYS[1]  the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta
-- KEYS[2]  the tag prefix  cs:{t}:
-- ARGV[1]  tenant
-- ARGV[2]  conversation id
-- ARGV[3]  item id (sidecar-minted: [a-z]+_[0-9a-f]+, so a plain substring match on '"id":"<id>"' is exact)
-- ARGV[4]  now, unix ms
-- ARGV[5]  TTL seconds
-- Returns  the new version, 0 when the conversation is unknown, -1 when the item is not in its history
--@include includes/history.lua

local m = redis.call('HMGET', KEYS[1], 'v', 'hs', 'he', 'nseg')
if not m[1] then return 0 end
local prefix = KEYS[2] .. ARGV[1] .. ':' .. ARGV[2] .. ':'
local ttl = tonumber(ARGV[5])
local items = collect_items(prefix, KEYS[1], m[2], tonumber(m[3]), ttl)
local needle = '"id":"' .. ARGV[3] .. '"'
local kept, found, removed_bytes = {}, false, 0
for i = 1, #items do
  if not found and string.find(items[i], needle, 1, true) then
    found = true
    removed_bytes = #items[i]
  else
    kept[#kept + 1] = items[i]
  end
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
