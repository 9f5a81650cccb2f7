-- Store the summary of one folded block of turns, append-only: the first summary stored for a block stays,
-- so every replica (and every later turn) sends the same bytes for it.
-- KEYS[1]  the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta  ("sb": bytes of its summaries)
-- ARGV[1]  tenant; ARGV[2] conversation id
-- ARGV[3]  the block's key (a digest of the summariser and the block's item bytes: a branch has its own)
-- ARGV[4]  the summary text
-- Returns  {the stored summary (this one, or the one stored first), 1 when this call stored it else 0},
--          or false when the conversation is unknown
--@include includes/history.lua

if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local key = tag_prefix_of(KEYS[1]) .. ARGV[1] .. ':' .. ARGV[2] .. ':sum'
local written = redis.call('HSETNX', key, ARGV[3], ARGV[4])
-- Only the winning write counts: the caller adds exactly these bytes to the tenant's usage, and a resolve
-- reports the total (the quota's recount of the conversation includes them).
if written == 1 then redis.call('HINCRBY', KEYS[1], 'sb', #ARGV[4]) end
-- Expire with the conversation: its meta's deadline now, and touch_conversation refreshes both together.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
return {redis.call('HGET', key, ARGV[3]), written}
