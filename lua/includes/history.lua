-- Shared helpers, included by scripts that read history (textual include done by sidecar/store/lua.py).

-- Item bytes reaching position `stop` of segment `seg`, oldest first: the segment's own slice, then
-- each parent segment's slice up to where the branch left it ("p:<seg>" = "<parent>:<end>" in meta).
-- Walked segment keys get their TTL refreshed: using a history keeps it alive.
local function collect_items(prefix, meta_key, seg, stop, ttl)
  local slices = {}
  while true do
    if stop > 0 then
      local seg_key = prefix .. 'seg:' .. seg
      slices[#slices + 1] = redis.call('LRANGE', seg_key, 0, stop - 1)
      if ttl > 0 then redis.call('EXPIRE', seg_key, ttl) end
    end
    local parent = redis.call('HGET', meta_key, 'p:' .. seg)
    if not parent then break end
    local sep = string.find(parent, ':', 1, true)
    seg = string.sub(parent, 1, sep - 1)
    stop = tonumber(string.sub(parent, sep + 1))
  end
  local items = {}
  for i = #slices, 1, -1 do
    local slice = slices[i]
    for j = 1, #slice do items[#items + 1] = slice[j] end
  end
  return items
end

-- Response records live in the slot's LIST  cs:{t}:rec , at the index written inside each response id
-- (resp_<tag 12 hex><index 8 hex><random 12 hex>). A record is one string:
-- "tenant\nconv\nseg\nend\ninput_end\nstatus\nrandom\n" then the stored body. "" = reserved or deleted.
local function response_index(response_id)
  return tonumber(string.sub(response_id, 18, 25), 16), string.sub(response_id, 26)
end

local function parse_record(raw)
  local fields, pos = {}, 1
  for _ = 1, 7 do
    local nl = string.find(raw, '\n', pos, true)
    fields[#fields + 1] = string.sub(raw, pos, nl - 1)
    pos = nl + 1
  end
  fields[8] = string.sub(raw, pos)
  return fields
end

-- The record of `response_id` if it exists and is `tenant`'s: {tenant, conv, seg, end, iend, status, random, body}.
local function load_record(records_key, response_id, tenant)
  local index, random = response_index(response_id)
  if not index then return nil end
  local raw = redis.call('LINDEX', records_key, index)
  if not raw or raw == '' then return nil end
  local r = parse_record(raw)
  if r[1] ~= tenant or r[7] ~= random then return nil end
  return r, index
end

-- Reserve the next record index of the slot (the id is handed out before the turn is stored).
local function reserve_record(records_key, ttl)
  local index = redis.call('RPUSH', records_key, '') - 1
  redis.call('EXPIRE', records_key, ttl)
  return index
end
