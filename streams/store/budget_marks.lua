-- Claim group-budget marks (store/budget_marks.py): which of a group's period alerts and
-- member commands this worker publishes. One key, the marks of one group's period.
-- KEYS: 1 marks hash ({prefix}:budget-marks:{<dim>|<value>}:<period start ms>):
--       mark -> "s" (published) or "p<ms>" (claimed at wall-clock ms, not yet confirmed)
-- ARGV: 1 now (wall-clock ms), 2 lease ms, 3 ttl seconds, 4.. the marks wanted
-- A mark is claimed when it is absent, or claimed but unconfirmed for at least the lease (its
-- claimer stopped before publishing: a redelivery publishes it again, same ids).
-- Returns the marks claimed now, in ARGV order.
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local claimed = {}
for i = 4, #ARGV do
  local state = redis.call('HGET', KEYS[1], ARGV[i])
  local take = not state
  if state and state ~= 's' then
    local at = tonumber(string.match(state, '^p(%d+)$') or '0')
    take = now - at >= lease
  end
  if take then
    redis.call('HSET', KEYS[1], ARGV[i], 'p' .. ARGV[1])
    claimed[#claimed + 1] = ARGV[i]
  end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return claimed
