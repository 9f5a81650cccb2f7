-- Index a running background run for the reapers, or drop it from the index.
-- KEYS[1]  the runs index  cs:{runs}:active  (ZSET: response id -> when its lease is next checked, unix ms)
-- ARGV[1]  response id
-- ARGV[2]  check time, unix ms; "" to drop the run
-- Returns  1
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return 1
