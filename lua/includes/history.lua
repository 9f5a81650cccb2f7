-- Shared helpers, included by the scripts (textual include done by sidecar/store/lua.py).
--
-- One shared expiry: every key of a conversation (meta, segments, response index list, idempotency
-- index, the key of the request that created it) and the slot's record list are refreshed together by
-- every use, so a response that resolves at all resolves to its whole history. TTLs are milliseconds.

-- A record slot handed out by a resolve and not yet written (a record never starts with NUL).
local RESERVED = '\0'

local function is_reserved(raw)
  return string.byte(raw, 1) == 0
end

-- A use within this slack of the last refresh (1 % of the TTL, at most a minute) leaves the deadlines as
-- they are: a refresh is a call per key, the bulk of a turn's script. So a conversation used turn after turn
-- expires between TTL minus the slack and TTL after its last use, and its keys still expire together.
local function refresh_due(meta_key, ttl)
  local left = redis.call('PTTL', meta_key)
  return left > ttl or left <= ttl - math.min(math.floor(ttl / 100), 60000)
end

-- `created`: the caller made a key of the conversation that has no deadline yet, so every key is refreshed.
local function touch_conversation(prefix, meta_key, records_key, ttl, created)
  if ttl <= 0 then return end
  if not created and not refresh_due(meta_key, ttl) then return end
  local m = redis.call('HMGET', meta_key, 'nseg', 'ik')
  redis.call('PEXPIRE', meta_key, ttl)
  for s = 0, tonumber(m[1] or '1') - 1 do redis.call('PEXPIRE', prefix .. 'seg:' .. s, ttl) end
  redis.call('PEXPIRE', prefix .. 'resps', ttl)
  redis.call('PEXPIRE', prefix .. 'idems', ttl)
  redis.call('PEXPIRE', prefix .. 'sum', ttl)  -- stored summaries (add_summary-1.lua)
  if m[2] then redis.call('PEXPIRE', prefix .. 'idem:' .. m[2], ttl) end
  redis.call('PEXPIRE', records_key, ttl)
end

-- Every key starts with the tag prefix  cs:{<12 hex>}: , so a script declares only the keys it anchors on
-- (one that exists whenever the data does: a reshard's TRYAGAIN answers multi-key calls with a missing key)
-- and derives the rest, all in the same slot.
local function tag_prefix_of(key)
  return string.sub(key, 1, 18)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Item bytes reaching position `stop` of segment `seg`, oldest first: the segment's own slice, then
-- each parent segment's slice up to where the branch left it ("p:<seg>" = "<parent>:<end>" in meta).
-- With `positions`, also {seg, index} of each item.
local function collect_items(prefix, meta_key, seg, stop, positions)
  local slices, places = {}, {}
  while true do
    if stop > 0 then
      slices[#slices + 1] = redis.call('LRANGE', prefix .. 'seg:' .. seg, 0, stop - 1)
      places[#places + 1] = seg
    end
    local parent = redis.call('HGET', meta_key, 'p:' .. seg)
    if not parent then break end
    local sep = string.find(parent, ':', 1, true)
    seg = string.sub(parent, 1, sep - 1)
    stop = tonumber(string.sub(parent, sep + 1))
  end
  local items, where = {}, {}
  for i = #slices, 1, -1 do
    local slice = slices[i]
    for j = 1, #slice do
      items[#items + 1] = slice[j]
      if positions then where[#where + 1] = {places[i], j - 1} end
    end
  end
  return items, where
end

-- Response records live in the slot's LIST  cs:{t}:rec , at the index written inside each response id
-- (resp_<tag 12 hex><index 8 hex><random 12 hex>). A record is one string:
-- "tenant\nconv\nseg\nend\ninput_end\nstatus\nrandom\nincarnation\n" then the stored body.
-- "" = deleted, RESERVED .. the id's random part = handed out to that id and not written yet.
local RECORD_FIELDS = 8

local function response_index(response_id)
  return tonumber(string.sub(response_id, 18, 25), 16), string.sub(response_id, 26)
end

local function parse_record(raw)
  local fields, pos = {}, 1
  for _ = 1, RECORD_FIELDS do
    local nl = string.find(raw, '\n', pos, true)
    fields[#fields + 1] = string.sub(raw, pos, nl - 1)
    pos = nl + 1
  end
  fields[RECORD_FIELDS + 1] = string.sub(raw, pos)
  return fields
end

-- The record of `response_id` when it is `tenant`'s and its conversation is alive in the incarnation
-- that wrote it (a conversation deleted or expired and created again under the same id is another one):
-- r = {tenant, conv, seg, end, iend, status, random, incarnation, body}, its index, the conversation's
-- key prefix, and the conversation meta's `fields` (read in the same call as the incarnation).
local function load_record(tag_prefix, records_key, response_id, tenant, fields)
  local index, random = response_index(response_id)
  if not index then return nil end
  local raw = redis.call('LINDEX', records_key, index)
  if not raw or raw == '' or is_reserved(raw) then return nil end
  local r = parse_record(raw)
  if r[1] ~= tenant or r[7] ~= random then return nil end
  local prefix = tag_prefix .. tenant .. ':' .. r[2] .. ':'
  local m = redis.call('HMGET', prefix .. 'meta', 'inc', unpack(fields or {}))
  if (m[1] or '') ~= r[8] then return nil end
  table.remove(m, 1)
  return r, index, prefix, m
end

-- Reserve the next record index of the slot for the id with this random part (the id is handed out before
-- the turn is stored). The random part binds the reservation to that id: an index given back and handed
-- out again is another id's, and a late write of the first one finds it taken. A list this creates lives
-- only `ttl` (the reservation's own life) until a turn is written into it.
local function reserve_record(records_key, ttl, random)
  local length = redis.call('RPUSH', records_key, RESERVED .. random)
  if length == 1 and ttl > 0 then redis.call('PEXPIRE', records_key, ttl) end
  return length - 1
end

-- Idempotency records, at <prefix>idem:<key>: "<hash>\n<result fields>" once the turn is stored,
-- "?<hash>\n<response id>" while the request that claimed the key runs. nil = go ahead (no record, or
-- the caller's own claim); else the script's answer.
local function idempotency_verdict(record, req_hash, response_id)
  local sep = string.find(record, '\n', 1, true)
  if string.sub(record, 1, 1) == '?' then
    if string.sub(record, 2, sep - 1) ~= req_hash then return {'idem_conflict'} end
    if string.sub(record, sep + 1) == response_id then return nil end
    return {'in_flight'}
  end
  if string.sub(record, 1, sep - 1) ~= req_hash then return {'idem_conflict'} end
  local r = {'replay'}
  for field in string.gmatch(string.sub(record, sep + 1), '[^\n]+') do r[#r + 1] = field end
  return r
end

-- Index the conversation's idempotency keys (to delete them with it), pruning lapsed ones.
local function index_idempotency_key(prefix, key, expires_ms, now)
  local idems = prefix .. 'idems'
  redis.call('ZREMRANGEBYSCORE', idems, '-inf', now)
  redis.call('ZADD', idems, expires_ms, key)
end

-- A stored response's background run goes with it (its content is in the run's event log): the run hash,
-- its log and its lease (includes/runs.lua), all in the response's slot. A run still going has no record
-- yet, only a reservation, so no delete reaches it.
local function drop_run(tag_prefix, response_id)
  local run = tag_prefix .. 'run:' .. response_id
  redis.call('DEL', run, run .. ':ev', run .. ':lease')
end

-- The id of the response stored at `index` of the slot's record list, from its record (nil: none there).
local function stored_response_id(tag_prefix, records_key, index)
  local raw = redis.call('LINDEX', records_key, index)
  if not raw or raw == '' or is_reserved(raw) then return nil end
  return 'resp_' .. string.sub(tag_prefix, 5, 16) .. string.format('%08x', index) .. parse_record(raw)[7]
end
