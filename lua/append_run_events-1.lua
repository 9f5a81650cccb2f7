-- A runner logs events and renews its lease (with no events: a renewal alone).
-- KEYS[1]  the run hash  cs:{t}:run:<response id>  (log <KEYS[1]>:ev, lease <KEYS[1]>:lease derived)
-- ARGV[1]  owner
-- ARGV[2]  lease ms
-- ARGV[3]  TTL ms
-- ARGV[4]  most events the log keeps (MAXLEN ~)
-- ARGV[5..] sequence number, event bytes, sequence number, event bytes, ...
-- Returns  {owned, cancel}: owned 0 when the run is unknown, finished, or another's (a reaper took it
--          over after its lease lapsed; nothing was written); cancel 1 when a cancel was asked for
--@include includes/runs.lua

local r = redis.call('HMGET', KEYS[1], 'owner', 'seq', 'cancel', 'status')
if not r[1] or r[1] ~= ARGV[1] or RUN_TERMINAL[r[4]] then return {0, tonumber(r[3] or 0)} end
local ttl = tonumber(ARGV[3])
local last, added = log_events(KEYS[1], tonumber(r[2]), 5, ARGV[4], ttl)
if added then redis.call('HSET', KEYS[1], 'seq', last, 'status', 'in_progress') end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[1] .. ':lease', ARGV[1], 'PX', ARGV[2])
return {1, tonumber(r[3])}
