-- Start a background run: its record, status queued, and the lease of the replica that runs it.
-- KEYS[1]  the run hash  cs:{t}:run:<response id>  (lease <KEYS[1]>:lease derived: same slot)
-- ARGV[1]  tenant
-- ARGV[2]  record (what the run was started with: bytes, opaque here)
-- ARGV[3]  owner (the replica's run owner id)
-- ARGV[4]  lease ms
-- ARGV[5]  TTL ms (the conversation's lifetime: the run and its log expire with it)
-- Returns  1 when started, 0 when a run with this id exists already
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'record', ARGV[2], 'status', 'queued', 'owner', ARGV[3],
  'seq', -1, 'cancel', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('SET', KEYS[1] .. ':lease', ARGV[3], 'PX', ARGV[4])
return 1
