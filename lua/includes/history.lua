-- Shared helpers, included by scripts that read history (textual include done by sidecar/store/lua.py).

-- Item ids reaching position `stop` of segment `seg`, oldest first: the segment's own slice, then
-- each parent segment's slice up to where the branch left it ("p:<seg>" = "<parent>:<end>" in meta).
-- Walked segment keys get their TTL refreshed: using a history keeps it alive.
local function collect_ids(prefix, meta_key, seg, stop, ttl)
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
  local ids = {}
  for i = #slices, 1, -1 do
    local slice = slices[i]
    for j = 1, #slice do ids[#ids + 1] = slice[j] end
  end
  return ids
end

-- HMGET in chunks: unpack() of thousands of arguments overflows Lua's C stack.
local function fetch_items(items_key, ids, out)
  local chunk = 1000
  for first = 1, #ids, chunk do
    local last = math.min(first + chunk - 1, #ids)
    local values = redis.call('HMGET', items_key, unpack(ids, first, last))
    for k = 1, #values do out[#out + 1] = values[k] end
  end
  return out
end
