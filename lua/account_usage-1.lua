-- A tenant's stored usage: bytes and conversations in total, and per conversation what was counted (so a
-- deleted or expired conversation gives back exactly that, once).
-- KEYS[1]  the tenant's usage hash  cs:{q.<tenant hash>}:usage  ("bytes", "convs", "c:<conversation id>")
-- ARGV[1]  conversation id
-- ARGV[2]  "add": ARGV[3] bytes more; "set": the conversation now holds ARGV[3] bytes (a conversation
--          not counted yet is counted as one more)
--          "drop": the conversation is gone
-- Returns  {bytes, convs} after the change

local usage, field, op = KEYS[1], 'c:' .. ARGV[1], ARGV[2]
local counted = tonumber(redis.call('HGET', usage, field) or '-1')
if op == 'drop' then
  if counted >= 0 then
    redis.call('HDEL', usage, field)
    redis.call('HINCRBY', usage, 'bytes', -counted)
    redis.call('HINCRBY', usage, 'convs', -1)
  end
else
  local delta = tonumber(ARGV[3])
  if op == 'set' then delta = delta - math.max(counted, 0) end
  if counted < 0 then
    redis.call('HINCRBY', usage, 'convs', 1)
    counted = 0
  end
  redis.call('HSET', usage, field, counted + delta)
  redis.call('HINCRBY', usage, 'bytes', delta)
end
return {tonumber(redis.call('HGET', usage, 'bytes') or '0'), tonumber(redis.call('HGET', usage, 'convs') or '0')}
