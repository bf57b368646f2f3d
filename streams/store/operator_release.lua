-- An operator release: decides whether the command the operator saw is still the active one.
-- Compare-and-delete on that command, remember the released alert so its episode's renewals
-- stay released (apply_throttle.lua refuses them), publish the release.
-- KEYS: 1 throttle key ({prefix}:throttle:{<identity>}), 2 released (hash alert_id -> release)
-- ARGV: 1 command_id the operator saw, 2 its alert_id ('' for none), 3 release command_id,
--       4 released hash ttl seconds, 5 pub/sub channel, 6 release command JSON
-- Returns 1 released, 0 no command any more, -1 another command replaced it meanwhile.
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['command_id'] ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
