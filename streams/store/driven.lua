-- Add credits to one root identity's "cost driven" roll-up, each at most once.
-- KEYS: 1 the roll-up hash ({prefix}:rollup:{driven|<root>}): "h<hour>" -> packed
--       "calls,input,output,cached,cost_nano,errors" of the spans of other identities whose
--       chain starts at the root, per event-time hour of the span
--       2 applied (zset, same hash tag): token ("<trace_id>\t<span_id>") -> applied at (ms)
-- ARGV: 1 now ms, 2 how long tokens are remembered (ms), 3 ttl seconds of the roll-up,
--       4 credits, one per line: trace_id \t span_id \t hour \t packed row
-- Returns how many credits were new (a token applied before is a redelivery or a retry).
local driven, applied = KEYS[1], KEYS[2]
local now, remember, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', applied, '-inf', '(' .. string.format('%.0f', now - remember))
local sums, order, new = {}, {}, 0
for trace, span, hour, packed in
    string.gmatch(ARGV[4], '([^\t\n]+)\t([^\t\n]+)\t(%d+)\t([%d,]+)\n') do
  if redis.call('ZADD', applied, 'NX', now, trace .. '\t' .. span) == 1 then
    new = new + 1
    local a = sums[hour]
    if a == nil then
      a = {0, 0, 0, 0, 0, 0}
      sums[hour] = a
      order[#order + 1] = hour
    end
    local i = 1
    for v in string.gmatch(packed, '%d+') do a[i] = a[i] + tonumber(v); i = i + 1 end
  end
end
for _, hour in ipairs(order) do
  local a, field = sums[hour], 'h' .. hour
  local old = redis.call('HGET', driven, field)
  if old then
    local i = 1
    for v in string.gmatch(old, '[^,]+') do a[i] = a[i] + tonumber(v); i = i + 1 end
  end
  redis.call('HSET', driven, field, string.format('%.0f,%.0f,%.0f,%.0f,%.0f,%.0f',
    a[1], a[2], a[3], a[4], a[5], a[6]))
end
if new > 0 then redis.call('EXPIRE', driven, ttl) end
-- A token matters only as long as it is remembered: the zset goes with the last of them.
redis.call('EXPIRE', applied, math.ceil(remember / 1000))
return new
