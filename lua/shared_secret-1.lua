-- One value every replica shares (the compaction tokens' key when the policy file sets none): the first
-- caller's random value is kept, never expiring, and everyone gets that one.
-- KEYS[1]  the secret's key  cs:{secret}:<name>
-- ARGV[1]  a random value, kept only when there is none yet
-- Returns  the secret
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
