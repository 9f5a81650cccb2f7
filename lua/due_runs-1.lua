-- The indexed runs whose lease check is due.
-- KEYS[1]  the runs index  cs:{runs}:active
-- ARGV[1]  now, unix ms
-- ARGV[2]  at most this many
-- Returns  response ids, the longest due first
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
