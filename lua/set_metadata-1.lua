-- Replace a conversation's metadata; a metadata change is not a write to its history, so `version` stays.
-- KEYS[1]  the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta
-- ARGV[1]  metadata (JSON bytes)
-- ARGV[2]  now, unix ms
-- ARGV[3]  TTL seconds
-- Returns  1 when set, 0 when the conversation is unknown

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'md', ARGV[1], 'updated', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
