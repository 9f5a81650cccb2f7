-- Delete one response. Its items stay: responses chained from it still reach them through their
-- segments, and they go with the conversation.
-- KEYS[1]  the response record  cs:{t}:r:<id>
-- KEYS[2]  the tag prefix  cs:{t}:
-- ARGV[1]  tenant
-- ARGV[2]  response id
-- Returns  1 when deleted, 0 when unknown or another tenant's
--@include includes/history.lua

local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local r = parse_response(raw)
if r[1] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('LREM', KEYS[2] .. ARGV[1] .. ':' .. r[2] .. ':resps', 1, ARGV[2])
return 1
