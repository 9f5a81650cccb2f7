-- The stored summaries of some folded blocks of a conversation (add_summary-1.lua wrote them).
-- KEYS[1]  the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta (the anchor: the summaries' key is
--          derived from it, in the same slot)
-- ARGV[1]  tenant; ARGV[2] conversation id
-- ARGV[3..] the blocks' keys
-- Returns  one entry per block key: its summary, or false when none is stored
--@include includes/history.lua

local key = tag_prefix_of(KEYS[1]) .. ARGV[1] .. ':' .. ARGV[2] .. ':sum'
return redis.call('HMGET', key, unpack(ARGV, 3))
