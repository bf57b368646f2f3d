"""The outbox's Lua scripts (streams/delivery/outbox.py owns the keys and says what they hold).

KEYS, in this order, for every script: due, alert, att, enq, lease, done, next, tail, idn
(outbox.PARTS), all under the destination's hash tag, so one script touches one Cluster slot.

Order per identity (ordered destinations): only the oldest pending alert of an identity, its
*head*, is in `due`; each later one waits in a chain (`next`: alert -> the identity's next
alert, `tail`: identity -> its newest pending alert, `idn`: alert -> identity). Finishing a
head (delivered, dead-lettered) makes its successor due at once. Unordered destinations put
every alert in `due`, as before ordering existed (Slack groups a burst into one message).
"""

from __future__ import annotations

# ARGV: alert_id, alert JSON, now ms, due ms, identity, ordered ('1'/'0'), max pending (0: no
# cap). Returns 1 queued, 0 known already (pending or done), -1 refused (the outbox is full).
ENQUEUE = """
local id = ARGV[1]
if redis.call('ZSCORE', KEYS[6], id) then return 0 end
if redis.call('HEXISTS', KEYS[2], id) == 1 then return 0 end
local cap = tonumber(ARGV[7])
if cap > 0 and redis.call('HLEN', KEYS[2]) >= cap then return -1 end
redis.call('HSET', KEYS[2], id, ARGV[2])
redis.call('HSET', KEYS[3], id, 0)
redis.call('HSET', KEYS[4], id, ARGV[3])
if ARGV[6] == '1' then
  local tail = redis.call('HGET', KEYS[8], ARGV[5])
  redis.call('HSET', KEYS[8], ARGV[5], id)
  redis.call('HSET', KEYS[9], id, ARGV[5])
  if tail and redis.call('HEXISTS', KEYS[2], tail) == 1 then
    redis.call('HSET', KEYS[7], tail, id)
    return 1
  end
end
redis.call('ZADD', KEYS[1], ARGV[4], id)
return 1
"""

# ARGV: now ms, lease expiry ms, limit, lease token. Due items only: heads and unordered ones.
CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local alert = redis.call('HGET', KEYS[2], id)
  if alert then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', KEYS[5], id, ARGV[4])
    local n = redis.call('HINCRBY', KEYS[3], id, 1)
    out[#out + 1] = {id, alert, n, redis.call('HGET', KEYS[4], id) or '0'}
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# ARGV: now ms, done cutoff ms, alert ids. Unconditional: a delivered alert is delivered even
# if our lease ran out meanwhile. The successor of a finished head is due now; an id that was
# never queued (refused by a full outbox, then dead-lettered) is only remembered as done.
FINISH = """
for i = 3, #ARGV do
  local id = ARGV[i]
  redis.call('ZREM', KEYS[1], id)
  for k = 2, 5 do redis.call('HDEL', KEYS[k], id) end
  redis.call('ZADD', KEYS[6], ARGV[1], id)
  local nxt = redis.call('HGET', KEYS[7], id)
  if nxt then
    redis.call('HDEL', KEYS[7], id)
    if redis.call('HEXISTS', KEYS[2], nxt) == 1 then
      redis.call('ZADD', KEYS[1], 'NX', ARGV[1], nxt)
    end
  end
  local who = redis.call('HGET', KEYS[9], id)
  if who then
    redis.call('HDEL', KEYS[9], id)
    if redis.call('HGET', KEYS[8], who) == id then redis.call('HDEL', KEYS[8], who) end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', ARGV[2])
return #ARGV - 2
"""

# ARGV: token, then (alert_id, due ms) pairs. Only the holder of the current lease may
# reschedule: after a lease ran out and another worker claimed the item, the stale worker's
# retry must not move it.
RESCHEDULE = """
local n = 0
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[5], ARGV[i]) == ARGV[1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 1], ARGV[i])
    redis.call('HDEL', KEYS[5], ARGV[i])
    n = n + 1
  end
end
return n
"""
