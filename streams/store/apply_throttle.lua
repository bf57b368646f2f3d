-- Applying one ThrottleCommand to an identity's gateway key: which throttle wins?
--
-- The gateway key holds one command for an identity that several detectors' episodes may
-- throttle. The script decides whether a command is *accepted* into the feed (published on
-- Kafka too) independently of the wall clock, so a replay of old events accepts the same
-- commands; the wall clock only decides whether an accepted command is still worth a key.
--   - an operator released this alert's command: nothing more from that alert
--   - a release only clears its own alert's command
--   - a throttle never replaces another alert's block; a lower version never replaces a higher
-- Every change of the key is PUBLISHed for the SSE feed.
--
-- KEYS: 1 throttle key ({prefix}:throttle:{<identity>}), 2 released (hash alert_id -> release)
-- ARGV: 1 action (throttle, block, release), 2 alert_id ('' for none), 3 command JSON,
--       4 ttl ms until the command expires (<= 0: accepted but no key written),
--       5 command_id, 6 version, 7 pub/sub channel
-- Returns 1 accepted, 0 refused.
local action, alert_id, payload, ttl_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local command_id, version = ARGV[5], tonumber(ARGV[6])
if alert_id ~= '' and redis.call('HEXISTS', KEYS[2], alert_id) == 1 then return 0 end
local current = redis.call('GET', KEYS[1])
local held = current and cjson.decode(current)
if action == 'release' then
  if not held then return 1 end
  if held['alert_id'] ~= alert_id then return 0 end
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[7], payload)
  return 1
end
if held then
  if held['command_id'] == command_id then return 1 end
  if tonumber(held['version']) > version then return 0 end
  if held['action'] == 'block' and action ~= 'block' and held['alert_id'] ~= alert_id then
    return 0
  end
end
if ttl_ms > 0 then
  redis.call('SET', KEYS[1], payload, 'PX', ttl_ms)
  redis.call('PUBLISH', ARGV[7], payload)
end
return 1
