-- A reaper claims a run whose runner stopped renewing its lease (the replica died), to settle it.
-- KEYS[1]  the run hash  cs:{t}:run:<response id>  (lease <KEYS[1]>:lease derived)
-- ARGV[1]  the reaper's owner id
-- ARGV[2]  lease ms (the reaper holds the run while it stores it)
-- Returns  {"taken", tenant} when the reaper now owns it; {"alive"} while the lease holds; {"done"} when
--          it finished; {"missing"} when it expired or never was
--@include includes/runs.lua

local r = redis.call('HMGET', KEYS[1], 'tenant', 'status')
if not r[1] then return {'missing'} end
if RUN_TERMINAL[r[2]] then return {'done'} end
if redis.call('EXISTS', KEYS[1] .. ':lease') == 1 then return {'alive'} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('SET', KEYS[1] .. ':lease', ARGV[1], 'PX', ARGV[2])
return {'taken', r[1]}
