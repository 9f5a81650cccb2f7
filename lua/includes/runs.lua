-- Shared by the run scripts (sidecar/runs/): a background run is the HASH in KEYS[1]
--   cs:{t}:run:<response id>   tenant, record, status, owner, seq (last logged), cancel (0|1)
-- with its event log  <KEYS[1]>:ev  (a STREAM, entry id 0-<sequence number + 1>, field e = event bytes)
-- and its lease  <KEYS[1]>:lease  (a STRING: the owner, with a short PX the owner keeps renewing).
-- The log and the lease are derived from KEYS[1], so they share its slot; the hash exists whenever they do.

local RUN_TERMINAL = {completed = true, failed = true, incomplete = true, cancelled = true}

-- Append ARGV[first], ARGV[first + 1], ... as (sequence number, event bytes) pairs after `last`; numbers
-- at or below it were logged already (a retried write) and are skipped. Returns the new last number.
local function log_events(run_key, last, first, max_len, ttl)
  local log = run_key .. ':ev'
  local added = false
  for i = first, #ARGV, 2 do
    local seq = tonumber(ARGV[i])
    if seq > last then
      redis.call('XADD', log, 'MAXLEN', '~', max_len, '0-' .. (seq + 1), 'e', ARGV[i + 1])
      last = seq
      added = true
    end
  end
  if added or redis.call('EXISTS', log) == 1 then redis.call('PEXPIRE', log, ttl) end
  return last, added
end
