-- Give back what a resolve took for a turn that stores nothing (the engine refused or failed before
-- answering): its record index, and its idempotency claim so a retry can run. A claim someone else holds,
-- a stored result, or an index already written stays.
-- KEYS[1]  the slot's record list  cs:{t}:rec
-- ARGV[1]  the response id the index was reserved for
-- ARGV[2]  idempotency key ("" = none); ARGV[3] the request's hash
-- ARGV[4]  tenant; ARGV[5] conversation id
-- Returns  1
--@include includes/history.lua

local index, random = response_index(ARGV[1])
if index and redis.call('LINDEX', KEYS[1], index) == RESERVED .. random then
  redis.call('LSET', KEYS[1], index, '')
  -- Nothing can be written at a blank index again: trailing blanks go, and the list with the last one.
  while redis.call('LINDEX', KEYS[1], -1) == '' do redis.call('RPOP', KEYS[1]) end
end
local prefix = tag_prefix_of(KEYS[1]) .. ARGV[4] .. ':' .. ARGV[5] .. ':'
local idem_key = prefix .. 'idem:' .. ARGV[2]
if ARGV[2] ~= '' and redis.call('GET', idem_key) == '?' .. ARGV[3] .. '\n' .. ARGV[1] then
  redis.call('DEL', idem_key)
  redis.call('ZREM', prefix .. 'idems', ARGV[2])
end
return 1
