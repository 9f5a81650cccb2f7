-- Resolve the history of a response or of a conversation's head in one round trip, optionally reserving
-- the record index of the response about to be made from it and claiming its idempotency key.
-- KEYS[1]  mode "resp": the slot's record list  cs:{t}:rec
--          mode "conv": the conversation's meta hash  cs:{t}:<tenant>:<conv>:meta
-- ARGV[1]  mode: "resp" | "conv"
-- ARGV[2]  tenant
-- ARGV[3]  conversation id (mode "conv") or response id (mode "resp")
-- ARGV[4]  range: "full" (inputs and outputs), "input" (what the response was given), "output" (its own output)
-- ARGV[5]  TTL ms: every key of the conversation is refreshed (0 = leave TTLs alone)
-- ARGV[6]  "1" to reserve a record index for the response about to be made from this history (also for
--          a conversation that does not exist yet: concurrent first turns each get their own index)
-- ARGV[7]  idempotency key to claim ("" = none); ARGV[8] the request's hash
-- ARGV[9]  life of a claim, and of a reservation in a conversation that does not exist yet, ms
-- ARGV[10] the random part of the new response id (names the claim's owner)
-- ARGV[11] "1" when the turn must start the conversation (its id derives from the idempotency key): an
--          existing conversation without this key's record is a reused key
-- Returns  {index or -1} when the response/conversation is unknown, deleted, expired or another
--          tenant's; {"replay", conv, version, appended, bytes, turns, response id} | {"idem_conflict"}
--          | {"in_flight"} for a claimed key (nothing written); else {index or -1, conv, response_id,
--          version, bytes, turns, created_ms, updated_ms, status, body, summary bytes, incarnation,
--          [summaries,] item1, item2, ...} (response_id: for "conv" the newest stored one, "" if none;
--          body: the response's stored body for "resp", the conversation metadata for "conv"; summary
--          bytes: what add_summary-1.lua stored; incarnation: the conversation's, which a turn's append
--          checks (append_turn-1.lua ARGV[17]); summaries: an array {block key, text, ...} of the conversation's stored
--          summaries, only for range "full" and when it has any (a conversation without pays nothing for
--          them), so a turn folds its history without a second round trip; each item is a string).
--@include includes/history.lua

local mode, tenant, range, ttl = ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[5])
local tag_prefix = tag_prefix_of(KEYS[1])
local records_key = tag_prefix .. 'rec'
local reserve = ARGV[6] == '1'
local idem, req_hash, claim_ms, random, fresh = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10], ARGV[11] == '1'

local conv, response_id, seg, stop, status, body, prefix = ARGV[3], '', nil, nil, '', '', nil
local start = 0
local META = {'v', 'hs', 'he', 'bytes', 'turns', 'created', 'updated', 'md', 'sb', 'inc'}
local m
if mode == 'resp' then
  local r, _
  r, _, prefix, m = load_record(tag_prefix, records_key, ARGV[3], tenant, META)
  if not r then return {-1} end
  conv, response_id, seg, status, body = r[2], ARGV[3], r[3], r[6], r[9]
  stop = tonumber(r[4])
  if range == 'input' then stop = tonumber(r[5]) elseif range == 'output' then start = tonumber(r[5]) end
else
  prefix = tag_prefix .. tenant .. ':' .. conv .. ':'
  m = redis.call('HMGET', prefix .. 'meta', unpack(META))
end

local meta_key = prefix .. 'meta'
local exists = m[1] ~= false

if idem ~= '' then
  local idem_key = prefix .. 'idem:' .. idem
  local first = redis.call('GET', idem_key)
  if first then
    local verdict = idempotency_verdict(first, req_hash, '')
    if verdict then
      if verdict[1] == 'replay' and exists then touch_conversation(prefix, meta_key, records_key, ttl) end
      return verdict
    end
  elseif fresh and exists then
    return {'idem_conflict'}
  end
end

if not exists and mode == 'resp' then return {-1} end
local reserved = -1
if reserve then reserved = reserve_record(records_key, exists and ttl or claim_ms, random) end

if idem ~= '' then
  local new_id = 'resp_' .. string.sub(tag_prefix, 5, 16) .. string.format('%08x', reserved) .. random
  local now = now_ms()
  redis.call('SET', prefix .. 'idem:' .. idem, '?' .. req_hash .. '\n' .. new_id, 'PX', claim_ms)
  index_idempotency_key(prefix, idem, now + claim_ms, now)
  if not exists then redis.call('PEXPIRE', prefix .. 'idems', claim_ms) end
end
if not exists then return {reserved} end

if mode == 'conv' then
  seg, stop, body = m[2], tonumber(m[3]), m[8] or ''
  -- The conversation's newest stored response, so a gateway can chain from what it resolved.
  local newest = redis.call('LINDEX', prefix .. 'resps', -1)
  local raw = newest and redis.call('LINDEX', records_key, tonumber(newest))
  if raw and raw ~= '' and not is_reserved(raw) then
    response_id = 'resp_' .. string.sub(tag_prefix, 5, 16) .. string.format('%08x', tonumber(newest))
      .. parse_record(raw)[7]
  end
end
local items
if range == 'output' then
  items = {}
  if stop > start then items = redis.call('LRANGE', prefix .. 'seg:' .. seg, start, stop - 1) end
else
  items = collect_items(prefix, meta_key, seg, stop)
end
-- A claim may have made the key index (idems): it expires with the conversation from now on.
touch_conversation(prefix, meta_key, records_key, ttl, idem ~= '')
local out = {reserved, conv, response_id, m[1], m[4], m[5], m[6], m[7], status, body, m[9] or 0, m[10] or ''}
-- The summaries' key hangs off the conversation's prefix, which mode "resp" found through the record. Read
-- whether or not "sb" counts them: summaries stored before it was kept still fold.
if range == 'full' then
  local summaries = redis.call('HGETALL', prefix .. 'sum')
  if #summaries > 0 then out[#out + 1] = summaries end
end
for i = 1, #items do out[#out + 1] = items[i] end
return out
