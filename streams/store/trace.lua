-- Link one trace's new spans into its call tree, describe each span's place in it, and credit
-- each span's usage to the identity at the root of its chain, once (root-caller attribution).
-- KEYS: 1 trace hash ({prefix}:trace:{<trace_id>}): span_id -> "parent\tidentity",
--          "#<span_id>" -> number of children, "$" -> the trace's cost so far (nano-USD,
--          spans counted once), "w\t<span_id>" -> the spans waiting for that missing span
--          (the first ancestor of theirs not linked yet), a line each: span \t hour \t row
--       2 credits hash ({prefix}:trace:{<trace_id>}:credits, same hash tag): span_id ->
--          "root\thour\trow": credits made and not yet applied to the root's `driven`
--          roll-up (store/traces.py applies them, then deletes them)
-- ARGV: 1 ttl seconds, 2 max hops, 3 spans, one per line:
--       span_id \t parent_span_id \t identity \t cost_nano \t event hour \t packed row
--       ("1,input,output,cached,cost_nano,errors"),
--       4 ttl seconds of the credits hash (the dedupe horizon: a crash's credits outlive it),
--       5 max spans linked per trace ("\tn" counts them: no span id holds a tab): a span
--       past it is described from the links already made but neither linked nor credited,
--       and nothing waits for it, so a runaway trace's hash stays bounded
-- Returns {places, credits}. places: one string, a line per span (packed: a nested reply
-- per span cost more to parse than the whole script): depth \t cycle (1: its identity
-- already appears among its ancestors) \t root identity ('' until the chain of parents
-- reaches the root) \t the parent's child count \t the trace's cost so far.
-- credits: every credit waiting in the credits hash (this call's and any a crash left), a
-- line each: span_id \t root \t hour \t row.
--
-- Exactly once: a span's usage is credited in the call that first links its whole chain to
-- a root span (empty parent): when it is linked itself, or when its last missing ancestor
-- is. A span is linked once (HSETNX) and waits in one "w" list at a time, deleted when read,
-- so no later call, redelivery or cycle credits it again. A span whose identity is its
-- root's is the root's own cost: no credit. A chain that loops over span ids or is longer
-- than max hops never reaches a root: never credited.
local key, credits = KEYS[1], KEYS[2]
local ttl, max_hops, credits_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local max_spans = tonumber(ARGV[5])
local linked = tonumber(redis.call('HGET', key, '\tn') or '0')

local links = {} -- span -> {parent, identity}, or false: not linked (this call's cache)
local function link_of(span)
  local l = links[span]
  if l == nil then
    l = false
    local raw = redis.call('HGET', key, span)
    if raw then
      local p, who = string.match(raw, '^([^\t]*)\t(.+)$')
      if p then l = {p, who} end
    end
    links[span] = l
  end
  return l
end

local spans, fresh = {}, {}
for span, parent, identity, cost, hour, row in string.gmatch(ARGV[3],
    '([^\t\n]+)\t([^\t\n]*)\t([^\t\n]+)\t(%d+)\t(%d+)\t([%d,]+)\n') do
  if linked < max_spans and redis.call('HSETNX', key, span, parent .. '\t' .. identity) == 1 then
    linked = linked + 1
    if parent ~= '' then redis.call('HINCRBY', key, '#' .. parent, 1) end
    redis.call('HINCRBY', key, '$', cost)
    links[span] = {parent, identity}
    fresh[#fresh + 1] = {span, hour .. '\t' .. row}
  end
  spans[#spans + 1] = {span, parent, identity}
end
redis.call('HSET', key, '\tn', linked)
redis.call('EXPIRE', key, ttl)
local full = linked >= max_spans

-- The root identity of a linked span's chain; else nil and the first ancestor not linked
-- yet; nil, nil: a loop of span ids or a chain longer than max hops.
local function top(span)
  local l, hops = link_of(span), 0
  while l[1] ~= '' do
    if hops >= max_hops then return nil, nil end
    local up = link_of(l[1])
    if not up then return nil, l[1] end
    l, hops = up, hops + 1
  end
  return l[2], nil
end

local waits, missing_order = {}, {}
-- Settle a span not credited yet: credit it if its chain reaches a root (nothing if the root
-- is its own identity), else let it wait for its first missing ancestor; a chain that never
-- can reach a root (a loop, too deep) is forgotten.
local function settle(span, usage)
  local root, missing = top(span)
  if root then
    if root ~= link_of(span)[2] then
      redis.call('HSET', credits, span, root .. '\t' .. usage)
    end
  elseif missing and not full then
    if waits[missing] == nil then
      waits[missing] = {}
      missing_order[#missing_order + 1] = missing
    end
    table.insert(waits[missing], span .. '\t' .. usage .. '\n')
  end
end

for _, f in ipairs(fresh) do
  local span = f[1]
  settle(span, f[2])
  -- Spans that waited for this one: their chains may reach a root now.
  local waiting = redis.call('HGET', key, 'w\t' .. span)
  if waiting then
    redis.call('HDEL', key, 'w\t' .. span)
    for waiter, usage in string.gmatch(waiting, '([^\t\n]+)\t([^\n]+)\n') do
      settle(waiter, usage)
    end
  end
end
for _, missing in ipairs(missing_order) do
  local field = 'w\t' .. missing
  local before = redis.call('HGET', key, field) or ''
  redis.call('HSET', key, field, before .. table.concat(waits[missing]))
end

local trace_cost = tonumber(redis.call('HGET', key, '$') or '0')
local out = {}
for _, s in ipairs(spans) do
  local depth, cycle, root, parent = 0, 0, '', s[2]
  local fanout = 0
  if parent ~= '' then fanout = tonumber(redis.call('HGET', key, '#' .. parent) or '0') end
  if parent == '' then root = s[3] end
  while parent ~= '' and depth < max_hops do
    local link = link_of(parent)
    if not link then break end
    depth = depth + 1
    if link[2] == s[3] then cycle = 1 end
    parent = link[1]
    if parent == '' then root = link[2] end
  end
  out[#out + 1] = string.format('%d\t%d\t%s\t%d\t%.0f\n', depth, cycle, root, fanout, trace_cost)
end

local waiting_credits = redis.call('HGETALL', credits)
local lines = {}
for i = 1, #waiting_credits, 2 do
  lines[#lines + 1] = waiting_credits[i] .. '\t' .. waiting_credits[i + 1] .. '\n'
end
if #lines > 0 then redis.call('EXPIRE', credits, credits_ttl) end
return {table.concat(out), table.concat(lines)}
