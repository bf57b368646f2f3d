-- Detector checkpoint commit: decides whether this worker's checkpoint may replace the stored
-- one. A compare-and-set on the scored minute and on the checkpoint itself: it lands only if
-- the stored scored minute is still the one this worker scored from, and the stored
-- checkpoint is still the one it read (its SHA-1). Else another worker committed meanwhile
-- (a rebalance: two workers briefly scoring one identity), and this one's step is run again
-- from the winner's state: its events are then duplicates, observed again ('r') where the
-- winner had not observed them, so nothing the winner learnt is overwritten and nothing this
-- worker learnt is lost.
-- KEYS: 1 meta (hash, field 'sc' = last scored minute), 2 state (the checkpoint),
--       3 dd (the identity's dedupe hash: field 'awaiting:', see ingest.lua)
-- ARGV: 1 expected scored minute, 2 new scored minute, 3 checkpoint bytes, 4 key ttl seconds,
--       5 the 64-bit hashes of the events this checkpoint observed (8 bytes each): no longer
--       awaiting a checkpoint, 6 SHA-1 hex of the checkpoint this one was built on ('' none)
-- Returns 1 committed, 0 lost the race.
if redis.call('HGET', KEYS[1], 'sc') ~= ARGV[1] then return 0 end
local current = redis.call('GET', KEYS[2])
if (current and redis.sha1hex(current) or '') ~= ARGV[6] then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'sc', ARGV[2])
local awaiting = redis.call('HGET', KEYS[3], 'awaiting:')
if awaiting and ARGV[5] ~= '' then
  local observed = {}
  for at = 1, #ARGV[5], 8 do observed[string.sub(ARGV[5], at, at + 7)] = true end
  local keep = {}
  for at = 1, #awaiting, 8 do
    local h = string.sub(awaiting, at, at + 7)
    if not observed[h] then keep[#keep + 1] = h end
  end
  if #keep > 0 then
    redis.call('HSET', KEYS[3], 'awaiting:', table.concat(keep))
  else
    redis.call('HDEL', KEYS[3], 'awaiting:')
  end
end
return 1
