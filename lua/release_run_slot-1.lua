-- Release a background response's slot in its tenant's running set (hold_run_slot-1.lua): the run
-- finished, was cancelled or was reaped. Releasing twice (the runner and a reaper) is harmless.
-- KEYS[1]  the tenant's running set  cs:{q.<tenant hash>}:bg
-- ARGV[1]  the run's response id
-- Returns  how many of the tenant's background responses still hold a slot
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('ZCARD', KEYS[1])
