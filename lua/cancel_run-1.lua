-- Ask a background run to stop: the cancel flag, which its runner reads back on its next write.
-- KEYS[1]  the run hash  cs:{t}:run:<response id>
-- ARGV[1]  tenant
-- Returns  the run's status ("" when unknown or another tenant's); a finished run is left as it is
--@include includes/runs.lua

local r = redis.call('HMGET', KEYS[1], 'tenant', 'status')
if not r[1] or r[1] ~= ARGV[1] then return '' end
if not RUN_TERMINAL[r[2]] then redis.call('HSET', KEYS[1], 'cancel', 1) end
return r[2]
