-- Replace a conversation's metadata; a metadata change is not a write to its history, so `version` stays.
-- KEYS[1]  the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta
-- ARGV[1]  metadata (JSON bytes)
-- ARGV[2]  now, unix ms
-- ARGV[3]  TTL ms
-- ARGV[4]  tenant; ARGV[5] conversation id
-- Returns  1 when set, 0 when the conversation is unknown
--@include includes/history.lua

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'md', ARGV[1], 'updated', ARGV[2])
local tag_prefix = tag_prefix_of(KEYS[1])
touch_conversation(tag_prefix .. ARGV[4] .. ':' .. ARGV[5] .. ':', KEYS[1], tag_prefix .. 'rec', tonumber(ARGV[3]))
return 1
