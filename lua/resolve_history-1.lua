-- Resolve the history of a response or of a conversation's head in one round trip, optionally reserving
-- the record index of the response about to be made from it.
-- KEYS[1]  mode "resp": the slot's record list  cs:{t}:rec
--          mode "conv": the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta
-- KEYS[2]  the tag prefix  cs:{t}:  (segment, meta and record keys derive from it; same slot)
-- ARGV[1]  mode: "resp" | "conv"
-- ARGV[2]  tenant
-- ARGV[3]  conversation id (mode "conv") or response id (mode "resp")
-- ARGV[4]  range: "full" (inputs and outputs), "input" (what the response was given), "output" (its own output)
-- ARGV[5]  TTL seconds to refresh on every key read (0 = leave TTLs alone)
-- ARGV[6]  "1" to reserve a record index for the response about to be made from this history. For a
--          conversation that does not exist yet nothing is written: the next free index is returned and
--          append_turn-2.lua takes it if it is still free (a failed first turn leaves no key behind).
-- Returns  {index or -1} when the response/conversation is unknown, deleted, expired or another
--          tenant's; else {index or -1, conv, response_id, version, bytes, turns, created_ms,
--          updated_ms, status, body, item1, item2, ...} (body: the response's stored body for "resp",
--          the conversation metadata for "conv").
--@include includes/history.lua

local mode, tenant, range, ttl = ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[5])
local records_key = KEYS[2] .. 'rec'
local reserve = ARGV[6] == '1'

local conv, response_id, seg, stop, status, body = ARGV[3], '', nil, nil, '', ''
local start = 0
if mode == 'resp' then
  local r = load_record(records_key, ARGV[3], tenant)
  if not r then return {-1} end
  conv, response_id, seg, status, body = r[2], ARGV[3], r[3], r[6], r[8]
  stop = tonumber(r[4])
  if range == 'input' then stop = tonumber(r[5]) elseif range == 'output' then start = tonumber(r[5]) end
  if ttl > 0 then redis.call('EXPIRE', records_key, ttl) end
end

local prefix = KEYS[2] .. tenant .. ':' .. conv .. ':'
local meta_key = prefix .. 'meta'
local m = redis.call('HMGET', meta_key, 'v', 'hs', 'he', 'bytes', 'turns', 'created', 'updated', 'md')
if not m[1] then
  if reserve and mode == 'conv' then return {redis.call('LLEN', records_key)} end
  return {-1}
end
local reserved = -1
if reserve then reserved = reserve_record(records_key, ttl) end
if mode == 'conv' then seg, stop, body = m[2], tonumber(m[3]), m[8] or '' end

local items
if range == 'output' then
  items = {}
  if stop > start then items = redis.call('LRANGE', prefix .. 'seg:' .. seg, start, stop - 1) end
else
  items = collect_items(prefix, meta_key, seg, stop, ttl)
end
if ttl > 0 then redis.call('EXPIRE', meta_key, ttl) end
local out = {reserved, conv, response_id, m[1], m[4], m[5], m[6], m[7], status, body}
for i = 1, #items do out[#out + 1] = items[i] end
return out
