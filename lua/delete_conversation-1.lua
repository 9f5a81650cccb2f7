-- Delete a conversation with every segment (and so every item) and response record in it.
-- KEYS[1]  the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta
-- KEYS[2]  the tag prefix  cs:{t}:
-- ARGV[1]  tenant
-- ARGV[2]  conversation id
-- Returns  1 when deleted, 0 when unknown

local nseg = redis.call('HGET', KEYS[1], 'nseg')
if not nseg then return 0 end
local prefix = KEYS[2] .. ARGV[1] .. ':' .. ARGV[2] .. ':'
for s = 0, tonumber(nseg) - 1 do redis.call('DEL', prefix .. 'seg:' .. s) end
local records_key = KEYS[2] .. 'rec'
local indexes = redis.call('LRANGE', prefix .. 'resps', 0, -1)
local length = redis.call('LLEN', records_key)
for i = 1, #indexes do
  local index = tonumber(indexes[i])
  if index < length then redis.call('LSET', records_key, index, '') end
end
redis.call('DEL', prefix .. 'resps', KEYS[1])
return 1
