-- Hold one of a tenant's slots for background responses running at once (policy
-- `tenants.<t>.quota.background_responses`), shared by every replica: a ZSET of the running response ids,
-- each scored by when it goes stale. A runner refreshes its entry while it runs and releases it when the
-- run ends (release_run_slot-1.lua; a reaper releases an orphan's): staleness only frees the slots of runs
-- whose every replica died, so a crash never keeps a slot for good.
-- KEYS[1]  the tenant's running set  cs:{q.<tenant hash>}:bg
-- ARGV[1]  the run's response id
-- ARGV[2]  the limit; 0 only refreshes an entry held already (a runner's renewal)
-- ARGV[3]  stale after, ms from now
-- Returns  {1, running} when held (taken or refreshed); {0, running} when the limit is reached
--@include includes/history.lua

local now, stale = now_ms(), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
local running = redis.call('ZCARD', KEYS[1])
if not held and running >= tonumber(ARGV[2]) then return {0, running} end
redis.call('ZADD', KEYS[1], now + stale, ARGV[1])
-- Every entry goes stale within `stale` of its last hold, so the set may expire with its newest one.
redis.call('PEXPIRE', KEYS[1], stale)
return {1, held and running or running + 1}
