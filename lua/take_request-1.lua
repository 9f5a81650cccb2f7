-- Let one request through a tenant's requests-per-minute limit, or not (GCRA: one key holding the
-- theoretical arrival time, so every replica shares the limit and a burst of a full minute is allowed).
-- KEYS[1]  the tenant's rate key  cs:{q.<tenant hash>}:rate
-- ARGV[1]  requests per minute
-- Returns  {1, remaining, reset_ms} when allowed; {0, 0, retry_after_ms} when over the limit
--@include includes/history.lua

local limit = tonumber(ARGV[1])
local interval = 60000 / limit
local now = now_ms()
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - 60000
if allow_at > now then
  return {0, 0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1)
local remaining = math.floor((now - allow_at) / interval)
return {1, remaining, math.ceil(new_tat - now)}
