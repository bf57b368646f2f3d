-- Apply ingest steps' roll-up deltas to one roll-up (a team, business unit, environment,
-- model or identity), each step at most once: one call per roll-up per batch, whatever the
-- number of identities in it.
-- KEYS: 1 the roll-up hash ({prefix}:rollup:{<dimension>|<value>}): "m<minute>", "h<hour>",
--       "l<hour>" (late events of the hour) -> packed "calls,input,output,cached,cost_nano,
--       errors"; "lo" -> the oldest minute kept, "hi" -> the newest minute seen; "T" and
--       "L": running totals of every hour row and of every late row applied
--       2 applied (hash, same hash tag): identity -> the newest sequence applied
-- ARGV: 1 ttl seconds, 2 minutes kept, then a triple per step, in sequence order per
--       identity: identity, sequence (one ingest step of that identity: ingest.lua's `rseq`,
--       which only grows), deltas, one per line: kind ("m", "h" or "l") \t bucket \t row
-- Returns how many steps were applied; a step applied before (a redelivery after a crash)
-- is skipped.
-- One number per identity is enough because every caller applies an identity's waiting steps
-- in sequence order, and a step waits until applied (store/rollups.py): whoever applies
-- step s has seen every earlier step still waiting.
local rollup, applied = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
-- The former layout (a zset of "<identity>#<sequence>" tokens, before 0.10) is dropped.
if redis.call('TYPE', applied).ok == 'zset' then redis.call('DEL', applied) end

local function apply_step(identity, seq_text, text)
  local seq = tonumber(seq_text)
  if seq <= tonumber(redis.call('HGET', applied, identity) or '-1') then return 0 end
  redis.call('HSET', applied, identity, seq_text)
  local hi = tonumber(redis.call('HGET', rollup, 'hi') or '-1')
  local deltas, low = {}, nil
  for kind, bucket, packed in string.gmatch(text, '([mhl])\t(%d+)\t([%d,]+)\n') do
    local b = tonumber(bucket)
    deltas[#deltas + 1] = {kind, b, packed}
    if kind == 'm' then
      if b > hi then hi = b end
      if low == nil or b < low then low = b end
    end
  end
  local keep_from = hi - keep + 1
  for _, d in ipairs(deltas) do
    -- A minute already past what is kept is in its hour only.
    if d[1] ~= 'm' or d[2] >= keep_from then
      local a = {}
      for v in string.gmatch(d[3], '%d+') do a[#a + 1] = tonumber(v) end
      local field = d[1] .. string.format('%.0f', d[2])
      local old = redis.call('HGET', rollup, field)
      if old then
        local i = 1
        for v in string.gmatch(old, '[^,]+') do a[i] = a[i] + tonumber(v); i = i + 1 end
      end
      redis.call('HSET', rollup, field, string.format('%.0f,%.0f,%.0f,%.0f,%.0f,%.0f',
        a[1], a[2], a[3], a[4], a[5], a[6]))
    end
    if d[1] ~= 'm' then
      local total = d[1] == 'h' and 'T' or 'L'
      local a = {}
      for v in string.gmatch(d[3], '%d+') do a[#a + 1] = tonumber(v) end
      local old = redis.call('HGET', rollup, total)
      if old then
        local i = 1
        for v in string.gmatch(old, '[^,]+') do a[i] = a[i] + tonumber(v); i = i + 1 end
      end
      redis.call('HSET', rollup, total, string.format('%.0f,%.0f,%.0f,%.0f,%.0f,%.0f',
        a[1], a[2], a[3], a[4], a[5], a[6]))
    end
  end
  -- Minutes older than `keep` before the newest are dropped (hours stay, for showback).
  local lo = tonumber(redis.call('HGET', rollup, 'lo') or
    tostring(math.max(low or hi, keep_from)))
  if keep_from > lo then
    local doomed = {}
    for mm = lo, math.min(keep_from - 1, lo + 100000) do
      doomed[#doomed + 1] = 'm' .. mm
      if #doomed == 1000 then redis.call('HDEL', rollup, unpack(doomed)); doomed = {} end
    end
    if #doomed > 0 then redis.call('HDEL', rollup, unpack(doomed)) end
    lo = keep_from
  end
  redis.call('HSET', rollup, 'hi', string.format('%.0f', hi), 'lo', string.format('%.0f', lo))
  return 1
end

local done = 0
for i = 3, #ARGV, 3 do done = done + apply_step(ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
redis.call('EXPIRE', rollup, ttl)
redis.call('EXPIRE', applied, ttl)
return done
