-- Append one turn (items, and optionally the response that produced them) atomically.
-- KEYS[1]  the slot's record list  cs:{t}:rec  (where the response's record is written; every other key
--          derives from its tag prefix)
-- ARGV[1]  tenant
-- ARGV[2]  conversation id ("" = the parent response's conversation)
-- ARGV[3]  idempotency key ("" = none)
-- ARGV[4]  request hash (compared on idempotent replay)
-- ARGV[5]  If-Match version ("" = none)
-- ARGV[6]  now, unix ms
-- ARGV[7]  TTL ms for the conversation's keys
-- ARGV[8]  idempotency record TTL ms
-- ARGV[9]  the response: "" = none, a response id whose record index was reserved, or "+<random>" to
--          take the next index now (the id is then returned)
-- ARGV[10] the response's stored body; ARGV[11] its status
-- ARGV[12] "1" to create the conversation when missing, "0" to require it
-- ARGV[13] conversation metadata to set on creation ("" = none)
-- ARGV[14] how many of the items are the turn's input (the rest are its output)
-- ARGV[15] the parent response id ("" = append at the conversation head)
-- ARGV[16] the incarnation to give the conversation if this turn creates it (random)
-- ARGV[17] the incarnation the turn was planned in ("" = none): appending at a conversation's head, the
--          conversation must still be that one, not deleted (or expired) and perhaps made again meanwhile
-- ARGV[18..] item bytes, one argument per item (each item's JSON carries its own id)
-- Returns  {"ok", conv, version, appended, bytes, turns, response_id or "-"}
--          {"replay", ...the first call's same fields}   (idempotent replay: nothing written)
--          {"conflict", version} | {"idem_conflict"} | {"in_flight"} | {"parent_missing"} | {"conv_missing"}
--          | {"parent_other_conversation"} | {"reservation_missing"}
--@include includes/history.lua

local tenant, conv, idem, req_hash, if_match = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, ttl, idem_ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local response_id, response_body, response_status = ARGV[9], ARGV[10], ARGV[11]
local create, conv_md, n_input, parent_id = ARGV[12], ARGV[13], tonumber(ARGV[14]), ARGV[15]
local incarnation, planned_in = ARGV[16], ARGV[17]
local FIRST_ITEM = 18
local records_key = KEYS[1]
local tag_prefix = tag_prefix_of(records_key)

-- Every check comes before the first write: a script that returns midway keeps what it wrote.
local META = {'v', 'hs', 'he', 'nseg', 'inc', 'bytes', 'turns'}
local seg, stop, prefix, m
local has_parent = parent_id ~= ''
if has_parent then
  local p, _
  p, _, prefix, m = load_record(tag_prefix, records_key, parent_id, tenant, META)
  if not p then return {'parent_missing'} end
  if conv ~= '' and conv ~= p[2] then return {'parent_other_conversation'} end
  conv, seg, stop = p[2], p[3], tonumber(p[4])
else
  prefix = tag_prefix .. tenant .. ':' .. conv .. ':'
end
local meta = prefix .. 'meta'
local idem_key = prefix .. 'idem:' .. idem
if idem ~= '' then
  local first = redis.call('GET', idem_key)
  if first then
    local verdict = idempotency_verdict(first, req_hash, string.sub(response_id, 1, 1) == '+' and '' or response_id)
    if verdict then return verdict end
  end
end

local index, random, reserved_slot
if response_id ~= '' then
  if string.sub(response_id, 1, 1) == '+' then
    random = string.sub(response_id, 2)
  else
    index, random = response_index(response_id)
    if not index then return {'reservation_missing'} end
    local slot = redis.call('LINDEX', records_key, index)
    -- Reserved by resolve, or, for a new conversation's first turn, still the next free index.
    reserved_slot = slot == RESERVED .. random
    if not reserved_slot and not (slot == false and redis.call('LLEN', records_key) == index) then
      return {'reservation_missing'}
    end
  end
end

m = m or redis.call('HMGET', meta, unpack(META))
local exists = m[1] ~= false
if not has_parent and planned_in ~= '' and (not exists or m[5] ~= planned_in) then return {'conv_missing'} end
if not exists then
  if create ~= '1' then return {'conv_missing'} end
  m = {'0', '0', '0', '1', incarnation, '0', '0'}
end
local version = tonumber(m[1])
if if_match ~= '' and tonumber(if_match) ~= version then return {'conflict', version} end
if not has_parent then seg, stop = m[2], tonumber(m[3]) end

-- Writes from here on. `created`: a key of the conversation was made here, so every key's deadline is set.
local created = not exists
if not exists then
  redis.call('HSET', meta, 'v', 0, 'nseg', 1, 'hs', '0', 'he', 0, 'created', now, 'updated', now,
    'bytes', 0, 'turns', 0, 'inc', incarnation)
  if conv_md ~= '' then redis.call('HSET', meta, 'md', conv_md) end
end

local n = #ARGV - FIRST_ITEM + 1
local seg_key = prefix .. 'seg:' .. seg
if n > 0 and redis.call('LLEN', seg_key) ~= stop then
  -- Something was written after the attach point: branch into a new segment; nothing is copied.
  local new_seg = tonumber(m[4])
  redis.call('HSET', meta, 'nseg', new_seg + 1, 'p:' .. new_seg, seg .. ':' .. stop)
  seg = tostring(new_seg)
  seg_key = prefix .. 'seg:' .. seg
  stop = 0
end

local added = 0
if n > 0 then
  for i = FIRST_ITEM, #ARGV do added = added + #ARGV[i] end
  for first = FIRST_ITEM, #ARGV, 1000 do
    local last = math.min(first + 999, #ARGV)
    if redis.call('RPUSH', seg_key, unpack(ARGV, first, last)) == last - first + 1 then created = true end
  end
end
local new_end = stop + n

version = version + 1
local total = tonumber(m[6] or '0') + added
local turns = tonumber(m[7] or '0')
if response_id ~= '' then
  if not index then
    index = reserve_record(records_key, ttl, random)
    response_id = 'resp_' .. string.sub(tag_prefix, 5, 16) .. string.format('%08x', index) .. random
  elseif not reserved_slot then  -- the first turn's index, still the next free one: take it
    reserve_record(records_key, ttl, random)
  end
  turns = turns + 1
  local header = table.concat({tenant, conv, seg, new_end, stop + n_input, response_status, random, m[5] or ''}, '\n')
  redis.call('LSET', records_key, index, header .. '\n' .. response_body)
  if redis.call('RPUSH', prefix .. 'resps', index) == 1 then created = true end
end
redis.call('HSET', meta, 'v', version, 'hs', seg, 'he', new_end, 'updated', now, 'bytes', total, 'turns', turns)

local result_id = response_id == '' and '-' or response_id
if idem ~= '' then
  created = true  -- the key index (idems) may be new
  local result = table.concat({conv, version, n, total, turns, result_id}, '\n')
  if not exists then
    -- The key that created the conversation replays its first turn for as long as the conversation lives
    -- (a conversation named after the key could otherwise be continued by a reused key).
    redis.call('SET', idem_key, req_hash .. '\n' .. result)
    redis.call('HSET', meta, 'ik', idem)
    index_idempotency_key(prefix, idem, '+inf', now)
  else
    redis.call('SET', idem_key, req_hash .. '\n' .. result, 'PX', idem_ttl)
    index_idempotency_key(prefix, idem, now + idem_ttl, now)
  end
end
touch_conversation(prefix, meta, records_key, ttl, created)
return {'ok', conv, version, n, total, turns, result_id}
