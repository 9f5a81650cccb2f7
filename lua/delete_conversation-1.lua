-- Delete a conversation with every key it owns: segments (and so every item), response records and
-- their background runs' logs, idempotency records, stored summaries; and the slot's record list once no record or reservation is left
-- in it.
-- KEYS[1]  the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta
-- ARGV[1]  tenant
-- ARGV[2]  conversation id
-- Returns  1 when deleted, 0 when unknown
--@include includes/history.lua

local nseg = redis.call('HGET', KEYS[1], 'nseg')
if not nseg then return 0 end
local tag_prefix = tag_prefix_of(KEYS[1])
local prefix = tag_prefix .. ARGV[1] .. ':' .. ARGV[2] .. ':'
for s = 0, tonumber(nseg) - 1 do redis.call('DEL', prefix .. 'seg:' .. s) end
local records_key = tag_prefix .. 'rec'
local indexes = redis.call('LRANGE', prefix .. 'resps', 0, -1)
local length = redis.call('LLEN', records_key)
for i = 1, #indexes do
  local index = tonumber(indexes[i])
  if index < length then
    local response_id = stored_response_id(tag_prefix, records_key, index)
    if response_id then drop_run(tag_prefix, response_id) end
    redis.call('LSET', records_key, index, '')
  end
end
for _, key in ipairs(redis.call('ZRANGE', prefix .. 'idems', 0, -1)) do
  redis.call('DEL', prefix .. 'idem:' .. key)
end
redis.call('DEL', prefix .. 'resps', prefix .. 'idems', prefix .. 'sum', KEYS[1])
-- Another conversation may share the slot (a tag collision): keep the list while anything lives in it.
local left = redis.call('LRANGE', records_key, 0, -1)
for i = 1, #left do
  if left[i] ~= '' then return 1 end
end
redis.call('DEL', records_key)
return 1
