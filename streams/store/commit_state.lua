-- Detector checkpoint commit: decides whether this worker's checkpoint may replace the stored
-- one. A compare-and-set on the scored minute: the checkpoint lands only if the stored scored
-- minute is still the one this worker scored from (else another worker won the race, and this
-- one's minutes are scored again from the winner's state).
-- KEYS: 1 meta (hash, field 'sc' = last scored minute), 2 state (the checkpoint)
-- ARGV: 1 expected scored minute, 2 new scored minute, 3 checkpoint bytes, 4 key ttl seconds
-- Returns 1 committed, 0 lost the race.
if redis.call('HGET', KEYS[1], 'sc') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'sc', ARGV[2])
return 1
