-- Store the summary of one folded block of turns, append-only: the first summary stored for a block stays,
-- so every replica (and every later turn) sends the same bytes for it.
-- KEYS[1]  the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta
-- ARGV[1]  tenant; ARGV[2] conversation id
-- ARGV[3]  the block's key (a digest of the summariser and the block's item bytes: a branch has its own)
-- ARGV[4]  the summary text
-- Returns  the stored summary (this one, or the one stored first), or false when the conversation is unknown
--@include includes/history.lua

if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local key = tag_prefix_of(KEYS[1]) .. ARGV[1] .. ':' .. ARGV[2] .. ':sum'
redis.call('HSETNX', key, ARGV[3], ARGV[4])
-- Expire with the conversation: its meta's deadline now, and touch_conversation refreshes both together.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
return redis.call('HGET', key, ARGV[3])
