-- A response id a gateway chose (store_response's "response_id") and the id the store minted for that
-- response (which names its slot and record). The alias lives in a slot of its own, found from the chosen id.
-- Its value is "<minted id or ?>\n<owner>": `owner` names the request that took it (its idempotency key and
-- body), so a retry of that request is told apart from another request choosing the same id.
-- KEYS[1]  the alias  cs:{<tag of tenant and id>}:@alias:<tenant>:<id>
-- ARGV[1]  "claim" (taken for a store_response about to run, "?" for ARGV[4] ms, only if unused),
--          "set" (the minted id ARGV[2], for ARGV[4] ms), "drop" (a claim whose write failed) or "get"
--          (the minted id, its life refreshed to ARGV[4] ms, as a use refreshes a conversation)
-- ARGV[3]  owner ("" = a request without an idempotency key: never a retry)
-- Returns  claim: "" when taken, else the value; get: the minted id or false; else 1
local key, mode, minted, owner, life = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if mode == 'claim' then
  local value = redis.call('GET', key)
  if value then return value end
  redis.call('SET', key, '?\n' .. owner, 'PX', life)
  return ''
elseif mode == 'set' then
  redis.call('SET', key, minted .. '\n' .. owner, 'PX', life)
  return 1
elseif mode == 'drop' then
  local value = redis.call('GET', key)
  if value and string.sub(value, 1, 2) == '?\n' then redis.call('DEL', key) end
  return 1
end
local value = redis.call('GET', key)
if not value or string.sub(value, 1, 2) == '?\n' then return false end
redis.call('PEXPIRE', key, life)
return string.match(value, '^[^\n]*')
