-- Delete one response: its record becomes "", and a background run's log of it goes. Its items stay:
-- responses chained from it still reach them through their segments, and they go with the conversation.
-- KEYS[1]  the slot's record list  cs:{t}:rec
-- ARGV[1]  tenant
-- ARGV[2]  response id
-- Returns  1 when deleted, 0 when unknown or another tenant's
--@include includes/history.lua

local tag_prefix = tag_prefix_of(KEYS[1])
local r, index, prefix = load_record(tag_prefix, KEYS[1], ARGV[2], ARGV[1])
if not r then return 0 end
redis.call('LSET', KEYS[1], index, '')
drop_run(tag_prefix, ARGV[2])
redis.call('LREM', prefix .. 'resps', 1, index)
return 1
