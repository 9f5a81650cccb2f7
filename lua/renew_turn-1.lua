-- A running turn (a foreground call, or a background run) keeps the turn it will store: its reserved record
-- index (in a conversation that does not exist yet the record list lives only a claim's life) and its
-- idempotency claim, each extended to at least a claim's life from now, and the conversation it continues,
-- refreshed as a use refreshes it. Without it a turn longer than a claim can lose its write, and a retry
-- with its key runs the request again; one longer than the TTL finds its conversation gone.
-- KEYS[1]  the slot's record list  cs:{t}:rec
-- ARGV[1]  the turn's response id (its record index is reserved)
-- ARGV[2]  idempotency key ("" = none); ARGV[3] the request's hash
-- ARGV[4]  tenant; ARGV[5] conversation id
-- ARGV[6]  a claim's life, ms
-- ARGV[7]  TTL ms for the conversation's keys
-- Returns  1 when the record index is still reserved, 0 when it lapsed or was written
--@include includes/history.lua

local life = tonumber(ARGV[6])
local prefix = tag_prefix_of(KEYS[1]) .. ARGV[4] .. ':' .. ARGV[5] .. ':'

-- Only ever lengthen: a key with no expiry (-1) or a longer one (a live conversation's) stays as it is.
local function extend(key)
  local left = redis.call('PTTL', key)
  if left >= 0 and left < life then redis.call('PEXPIRE', key, life) end
end

local held = 0
local index, random = response_index(ARGV[1])
if index and redis.call('LINDEX', KEYS[1], index) == RESERVED .. random then
  held = 1
  extend(KEYS[1])
end
local idem_key = prefix .. 'idem:' .. ARGV[2]
if ARGV[2] ~= '' and redis.call('GET', idem_key) == '?' .. ARGV[3] .. '\n' .. ARGV[1] then
  extend(idem_key)
  local idems, now = prefix .. 'idems', now_ms()
  local had = redis.call('EXISTS', idems) == 1
  index_idempotency_key(prefix, ARGV[2], now + life, now)
  if had then extend(idems) else redis.call('PEXPIRE', idems, life) end
end
local meta = prefix .. 'meta'
if redis.call('EXISTS', meta) == 1 then touch_conversation(prefix, meta, KEYS[1], tonumber(ARGV[7])) end
return held
