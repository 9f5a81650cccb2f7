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

-- A response record is one string: "tenant\nconv\nseg\nend\ninput_end\nstatus\n" then the stored body.
-- (A string, not a hash: a hash holding a body over 64 bytes leaves the compact listpack encoding.)
local function parse_response(raw)
  local fields, pos = {}, 1
  for _ = 1, 6 do
    local nl = string.find(raw, '\n', pos, true)
    fields[#fields + 1] = string.sub(raw, pos, nl - 1)
    pos = nl + 1
  end
  fields[7] = string.sub(raw, pos)
  return fields
end
