-- Delete one response: its record becomes "". Its items stay: responses chained from it still reach
-- them through their segments, and they go with the conversation.
-- KEYS[1]  the slot's record list  cs:{t}:rec
-- ARGV[1]  tenant
-- ARGV[2]  response id
-- Returns  1 when deleted, 0 when unknown or another tenant's
--@include includes/history.lua

local r, index, prefix = load_record(tag_prefix_of(KEYS[1]), KEYS[1], ARGV[2], ARGV[1])
if not r then return 0 end
redis.call('LSET', KEYS[1], index, '')
redis.call('LREM', prefix .. 'resps', 1, index)
return 1
