-- A run ends: its last events (the terminal one last), its terminal status, its lease dropped. The turn
-- itself is stored before this, by append_turn, so a client that sees the terminal event can chain.
-- KEYS[1]  the run hash  cs:{t}:run:<response id>  (log <KEYS[1]>:ev, lease <KEYS[1]>:lease derived)
-- ARGV[1]  owner
-- ARGV[2]  terminal status: completed | failed | incomplete | cancelled
-- ARGV[3]  TTL ms
-- ARGV[4]  most events the log keeps (MAXLEN ~)
-- ARGV[5..] sequence number, event bytes, ...
-- Returns  1 when finished, 0 when the run is unknown, finished already, or another's
--@include includes/runs.lua

local r = redis.call('HMGET', KEYS[1], 'owner', 'seq', 'status')
if not r[1] or r[1] ~= ARGV[1] or RUN_TERMINAL[r[3]] then return 0 end
local last = log_events(KEYS[1], tonumber(r[2]), 5, ARGV[4], tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'seq', last, 'status', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[1] .. ':lease')
return 1
