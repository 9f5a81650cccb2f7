-- A run's state and, optionally, its logged events after a sequence number (one round trip).
-- KEYS[1]  the run hash  cs:{t}:run:<response id>  (log <KEYS[1]>:ev, lease <KEYS[1]>:lease derived)
-- ARGV[1]  tenant
-- ARGV[2]  events after this sequence number; "" for none
-- Returns  {} when the run is unknown or another tenant's; else
--          {status, record, cancel, owner, leased 0|1, last sequence number, event bytes...}

local r = redis.call('HMGET', KEYS[1], 'tenant', 'status', 'record', 'cancel', 'owner', 'seq')
if not r[1] or r[1] ~= ARGV[1] then return {} end
local out = {r[2], r[3], r[4], r[5], redis.call('EXISTS', KEYS[1] .. ':lease'), r[6]}
if ARGV[2] ~= '' then
  local entries = redis.call('XRANGE', KEYS[1] .. ':ev', '0-' .. (tonumber(ARGV[2]) + 2), '+')
  for i = 1, #entries do out[#out + 1] = entries[i][2][2] end
end
return out
