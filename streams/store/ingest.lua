-- Atomic per-identity batch: dedupe by event_id, event-time minute windows, lateness.
-- One call per identity per batch (all its keys share the {identity} hash tag).
--
-- KEYS: 1 meta (hash), 2 win (hash minute -> packed row), 3 dd (hash: remembered event ids,
--       see store/dedupe.py),
--       4 late (hash hour -> packed row of too-late events), 5 state (detector checkpoint),
--       6 rollout (hash: roll-up deltas waiting to be applied, by sequence number)
-- ARGV: 1 allowed lateness ms, 2 dedupe horizon ms, 3 window minutes, 4 max rows to return,
--       5 key ttl seconds, 6 the events, one per line, tab-separated:
--       event_ms, input_tokens, output_tokens, cached_tokens, cost_nano, is_error,
--       attribution group (a line number of ARGV 7, from 0)
--       One packed argument instead of 8 per event: argument packing dominated the client.
--       7 attribution groups, one per line: the roll-up targets of an event (store/rollups.py
--       packs them; the script only copies them).
--       8 the events' 64-bit id hashes, 8 bytes each in line order (store/dedupe.py),
--       9 generation length ms, 10 ids per bucket (store/dedupe.py).
-- Roll-ups: the unique events' sums per (group, minute), (group, hour) and, for late events,
-- (group, hour) again are stored in `rollout` under the next sequence number, in this same
-- atomic step: deduped exactly like the windows. store/rollups.py applies them to the team,
-- business unit and environment keys (their own hash tags) and then deletes them; the reply
-- returns every entry still waiting (one left by a crash is applied again, at most once).
-- Packed row: "calls,input,output,cached,cost_nano,errors".
-- Statuses: n(ew), l(ate), d(uplicate), r (a duplicate counted by an ingest whose checkpoint
-- never landed: observe it again, do not count it).
--
-- A minute m is final once the identity's event-time watermark (max event ms seen) reaches
-- (m + 1) * 60000 + lateness. Events for a final minute are "late": counted per hour in
-- `late` (chargeback totals), never in the minute window the detectors already scored. So
-- the scored figures do not depend on how events were cut into batches.

local meta, win, dd, late, st, rollout = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local lateness = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local window_minutes = tonumber(ARGV[3])
local max_rows = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])

local hashes = ARGV[8]
local gen_ms = tonumber(ARGV[9])
local per_bucket = tonumber(ARGV[10])

-- A dedupe key of the former layout (a zset of raw ids, before 0.10) cannot be read as
-- hashes: it is dropped (CHANGELOG: upgrade with the consumer caught up).
if redis.call('TYPE', dd).ok == 'zset' then redis.call('DEL', dd) end

-- Dedupe generations (store/dedupe.py): g -> {n = ids, d = depth, vals = bucket -> packed
-- hashes (read lazily), dirty = buckets to write}. `live` lists the ones holding ids.
local gens, live = {}, {}
local function depth_for(n)
  local d = 0
  while n > per_bucket * 2 ^ d do d = d + 1 end
  return d
end
local function load_gen(g)
  local gen = gens[g]
  if gen == nil then
    local head = redis.call('HGET', dd, g)
    gen = {n = 0, d = 0, vals = {}, dirty = {}}
    if head then
      local n, d = string.match(head, '(%d+),(%d+)')
      gen.n, gen.d = tonumber(n), tonumber(d)
      live[#live + 1] = g
    end
    gens[g] = gen
  end
  return gen
end
local function top24(h)
  local b1, b2, b3 = string.byte(h, 1, 3)
  return (b1 * 256 + b2) * 256 + b3
end
local function bucket_of(h, d) return math.floor(top24(h) / 2 ^ (24 - d)) end
local function bucket(g, gen, b)
  local v = gen.vals[b]
  if v == nil then
    v = redis.call('HGET', dd, g .. ':' .. b) or ''
    gen.vals[b] = v
  end
  return v
end
local function holds(v, h)
  local p = string.find(v, h, 1, true)
  while p do
    if (p - 1) % 8 == 0 then return true end
    p = string.find(v, h, p + 1, true)
  end
  return false
end
-- Re-pack a generation at a greater depth (every field read and written once).
local function resplit(g, gen, d)
  local old = {}
  for b = 0, 2 ^ gen.d - 1 do old[#old + 1] = g .. ':' .. b end
  local values = {}
  for i = 1, #old, 1000 do
    local part = redis.call('HMGET', dd, unpack(old, i, math.min(i + 999, #old)))
    for k = 1, #part do values[#values + 1] = part[k] end
  end
  for i = 1, #old, 1000 do redis.call('HDEL', dd, unpack(old, i, math.min(i + 999, #old))) end
  local pieces = {}
  for _, v in ipairs(values) do
    if v then
      for at = 1, #v, 8 do
        local h = string.sub(v, at, at + 7)
        local b = bucket_of(h, d)
        local list = pieces[b]
        if list == nil then list = {}; pieces[b] = list end
        list[#list + 1] = h
      end
    end
  end
  gen.d, gen.vals, gen.dirty = d, {}, {}
  for b, list in pairs(pieces) do
    gen.vals[b] = table.concat(list)
    gen.dirty[b] = true
  end
end
-- Is the id hash `h` (first seen at `t`) new? If so it is remembered in t's generation.
local function first_sighting(h, t)
  for _, g in ipairs(live) do
    local gen = gens[g]
    if holds(bucket(g, gen, bucket_of(h, gen.d)), h) then return false end
  end
  local g = math.floor(t / gen_ms)
  local gen = load_gen(g)
  if gen.n == 0 then live[#live + 1] = g end
  local b = bucket_of(h, gen.d)
  gen.vals[b] = bucket(g, gen, b) .. h
  gen.dirty[b] = true
  gen.n = gen.n + 1
  return true
end

local m = redis.call('HMGET', meta, 'wm', 'fin', 'sc', 'lo')
local wm = tonumber(m[1]) or -1
local fin = tonumber(m[2])
local sc = tonumber(m[3])
local lo = tonumber(m[4])
local fin_before = fin

local function add(tbl, bucket, inp, out, cached, cost, err)
  local a = tbl[bucket]
  if a == nil then a = {0, 0, 0, 0, 0, 0}; tbl[bucket] = a end
  a[1] = a[1] + 1
  a[2] = a[2] + inp
  a[3] = a[3] + out
  a[4] = a[4] + cached
  a[5] = a[5] + cost
  a[6] = a[6] + err
end

local function merge(key, field, a)
  local old = redis.call('HGET', key, field)
  if old then
    local i = 1
    for v in string.gmatch(old, '[^,]+') do a[i] = a[i] + tonumber(v); i = i + 1 end
  end
  redis.call('HSET', key, field, string.format('%.0f,%.0f,%.0f,%.0f,%.0f,%.0f',
    a[1], a[2], a[3], a[4], a[5], a[6]))
end

local rows, late_rows, status, closes = {}, {}, {}, {}
local rolled, rolled_order = {}, {}

local function roll(group, kind, bucket, inp, out, cached, cost, err)
  local key = group .. '\t' .. kind .. '\t' .. bucket
  if rolled[key] == nil then rolled_order[#rolled_order + 1] = key end
  add(rolled, key, inp, out, cached, cost, err)
end
local n_new, n_dup, n_late = 0, 0, 0
local min_minute = nil

-- The batch, parsed first: its generations are loaded and, if it would overfill their
-- buckets, re-split before any lookup.
local evs = {}
for ts, inp, out, cached, cost, err, group in
    string.gmatch(ARGV[6], '(%d+)\t(%d+)\t(%d+)\t(%d+)\t(%d+)\t(%d)\t(%d+)\n') do
  evs[#evs + 1] = {tonumber(ts), tonumber(inp), tonumber(out), tonumber(cached), tonumber(cost),
                   tonumber(err), group}
end
if #hashes ~= 8 * #evs then
  return redis.error_reply('ingest: ' .. #evs .. ' events but ' .. #hashes .. ' hash bytes')
end
if wm >= 0 then  -- the generations that can hold ids: none older than the last prune left
  for g = math.floor((wm - horizon) / gen_ms) - 1, math.floor(wm / gen_ms) do load_gen(g) end
end
local arriving = {}
for _, e in ipairs(evs) do
  local g = math.floor(e[1] / gen_ms)
  arriving[g] = (arriving[g] or 0) + 1
end
for g, k in pairs(arriving) do
  local gen = load_gen(g)
  local d = depth_for(gen.n + k)
  if d > gen.d then resplit(g, gen, d) end
end

-- Ids counted by an ingest whose checkpoint has not landed yet (dd field AWAITING, packed
-- hashes; commit_state.lua removes those a checkpoint observed). A duplicate among them was
-- counted by a worker that died before its checkpoint: its event-level observations are made
-- again (status 'r'), though it is not counted again.
local AWAITING = 'awaiting:'
local awaiting = redis.call('HGET', dd, AWAITING) or ''
local fresh_ids = {}

for j0, e in ipairs(evs) do
  local j = j0 - 1
  local t, inp, out, cached, cost, err, group = e[1], e[2], e[3], e[4], e[5], e[6], e[7]
  local h = string.sub(hashes, 8 * j + 1, 8 * j + 8)
  if not first_sighting(h, t) then
    n_dup = n_dup + 1
    status[j + 1] = (awaiting ~= '' and holds(awaiting, h)) and 'r' or 'd'
  else
    fresh_ids[#fresh_ids + 1] = h
    local minute = math.floor(t / 60000)
    roll(group, 'm', minute, inp, out, cached, cost, err)
    roll(group, 'h', math.floor(minute / 60), inp, out, cached, cost, err)
    if fin ~= nil and minute <= fin then
      n_late = n_late + 1; status[j + 1] = 'l'
      add(late_rows, math.floor(minute / 60), inp, out, cached, cost, err)
      roll(group, 'l', math.floor(minute / 60), inp, out, cached, cost, err)
    else
      n_new = n_new + 1; status[j + 1] = 'n'
      add(rows, minute, inp, out, cached, cost, err)
      if min_minute == nil or minute < min_minute then min_minute = minute end
    end
    if t > wm then
      wm = t
      local f = math.floor((wm - lateness) / 60000) - 1
      if fin == nil then
        -- A new identity: nothing before its first minute to score.
        fin = f; sc = math.floor(t / 60000) - 1
      elseif f > fin then
        fin = f
        closes[#closes + 1] = j; closes[#closes + 1] = f
      end
    end
  end
end

for minute, a in pairs(rows) do merge(win, minute, a) end
if #rolled_order > 0 and ARGV[7] ~= '' then
  local lines = {}
  for _, key in ipairs(rolled_order) do
    local a = rolled[key]
    lines[#lines + 1] = string.format('%s\t%.0f,%.0f,%.0f,%.0f,%.0f,%.0f\n', key,
      a[1], a[2], a[3], a[4], a[5], a[6])
  end
  local seq = redis.call('HINCRBY', meta, 'rseq', 1)
  if seq == 1 then
    -- New keys (or expired ones): start from the clock in microseconds, above any sequence
    -- the identity had before its keys expired (roll-ups remember the newest one applied).
    local now = redis.call('TIME')
    seq = tonumber(now[1]) * 1000000 + tonumber(now[2])
    redis.call('HSET', meta, 'rseq', string.format('%.0f', seq))
  end
  redis.call('HSET', rollout, string.format('%.0f', seq), ARGV[7] .. '--\n' .. table.concat(lines))
end
for hour, a in pairs(late_rows) do merge(late, hour, a) end

if fin ~= nil then
  -- Keep `window_minutes` final minutes (plus the open ones); drop older ones.
  local keep_from = fin - window_minutes + 1
  if lo == nil then lo = min_minute or keep_from end
  if keep_from > lo then
    if keep_from - lo > 4 * window_minutes then
      for _, f in ipairs(redis.call('HKEYS', win)) do
        if tonumber(f) < keep_from then redis.call('HDEL', win, f) end
      end
    else
      local doomed = {}
      for mm = lo, keep_from - 1 do
        doomed[#doomed + 1] = mm
        if #doomed == 1000 then redis.call('HDEL', win, unpack(doomed)); doomed = {} end
      end
      if #doomed > 0 then redis.call('HDEL', win, unpack(doomed)) end
    end
    lo = keep_from
  end
  if #fresh_ids > 0 then
    -- Bounded (the newest 65,536 ids, 512 KiB): far more than any batch a checkpoint follows;
    -- only checkpoints that keep failing would reach it, and then the oldest waiting ids are
    -- no longer re-observed after a crash (they stay counted exactly once).
    local all = awaiting .. table.concat(fresh_ids)
    if #all > 524288 then all = string.sub(all, #all - 524288 + 1) end
    redis.call('HSET', dd, AWAITING, all)
  end
  -- Remembered ids: write what the batch added, drop generations past the horizon.
  local cutoff = wm - horizon
  for g, gen in pairs(gens) do
    if gen.n > 0 and (g + 1) * gen_ms <= cutoff then
      local doomed = {g}
      for b = 0, 2 ^ gen.d - 1 do doomed[#doomed + 1] = g .. ':' .. b end
      for i = 1, #doomed, 1000 do
        redis.call('HDEL', dd, unpack(doomed, i, math.min(i + 999, #doomed)))
      end
    elseif next(gen.dirty) ~= nil then
      local writes = {g, gen.n .. ',' .. gen.d}
      for b in pairs(gen.dirty) do
        writes[#writes + 1] = g .. ':' .. b; writes[#writes + 1] = gen.vals[b]
      end
      for i = 1, #writes, 1000 do
        redis.call('HSET', dd, unpack(writes, i, math.min(i + 999, #writes)))
      end
    end
  end
  redis.call('HSET', meta, 'wm', string.format('%.0f', wm), 'fin', fin, 'sc', sc, 'lo', lo)
  redis.call('HINCRBY', meta, 'new', n_new)
  redis.call('HINCRBY', meta, 'dup', n_dup)
  redis.call('HINCRBY', meta, 'late', n_late)
  for _, key in ipairs({meta, win, dd, late, st, rollout}) do redis.call('EXPIRE', key, ttl) end
end

-- Final minutes not yet scored, capped to the last `max_rows` (a long-idle identity).
local first = nil
local out_rows = {}
if fin ~= nil and sc ~= nil and fin > sc then
  first = math.max(sc + 1, fin - max_rows + 1)
  local fields = {}
  for mm = first, fin do fields[#fields + 1] = mm end
  out_rows = redis.call('HMGET', win, unpack(fields))
  for i = 1, #out_rows do if not out_rows[i] then out_rows[i] = '' end end
end

return {n_new, n_dup, n_late, table.concat(status), closes, sc or false, fin or false,
        first or false, out_rows, redis.call('GET', st), fin_before or false,
        redis.call('HGETALL', rollout)}
