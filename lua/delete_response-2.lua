-- Delete one response. Its items stay: responses chained from it still reach them through their
-- segments, and they go with the conversation.
-- KEYS[1]  the response hash  cs:{t}:r:<id>
-- KEYS[2]  the tag prefix  cs:{t}:
-- ARGV[1]  tenant
-- ARGV[2]  response id
-- Returns  1 when deleted, 0 when unknown or another tenant's

local r = redis.call('HMGET', KEYS[1], 'tenant', 'conv')
if not r[1] or r[1] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2] .. ARGV[1] .. ':' .. r[2] .. ':resps', ARGV[2])
return 1
