-- Link one trace's new spans into its call tree and describe each span's place in it.
-- KEYS: 1 trace hash ({prefix}:trace:{<trace_id>}): span_id -> "parent\tidentity",
--          "#<span_id>" -> number of children
--       "$" -> the trace's cost so far (nano-USD, spans counted once)
-- ARGV: 1 ttl seconds, 2 max hops, 3 spans, one per line:
--       span_id \t parent_span_id \t identity \t cost_nano
-- Returns one string, a line per span (packed: a nested reply per span cost more to parse
-- than the whole script): depth \t cycle (1: its identity already appears among its
-- ancestors) \t root identity ('' until the chain of parents reaches the root) \t the
-- parent's child count \t the trace's cost so far.
local key, ttl, max_hops = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local spans = {}
for span, parent, identity, cost in
    string.gmatch(ARGV[3], '([^\t\n]+)\t([^\t\n]*)\t([^\t\n]+)\t(%d+)\n') do
  if redis.call('HSETNX', key, span, parent .. '\t' .. identity) == 1 then
    if parent ~= '' then redis.call('HINCRBY', key, '#' .. parent, 1) end
    redis.call('HINCRBY', key, '$', cost)
  end
  spans[#spans + 1] = {span, parent, identity}
end
redis.call('EXPIRE', key, ttl)
local trace_cost = tonumber(redis.call('HGET', key, '$') or '0')
local out = {}
for _, s in ipairs(spans) do
  local depth, cycle, root, parent, seen = 0, 0, '', s[2], {}
  local fanout = 0
  if parent ~= '' then fanout = tonumber(redis.call('HGET', key, '#' .. parent) or '0') end
  if parent == '' then root = s[3] end
  while parent ~= '' and depth < max_hops do
    local link = redis.call('HGET', key, parent)
    if not link then break end
    depth = depth + 1
    local p, who = string.match(link, '^([^\t]*)\t(.+)$')
    if who == s[3] then cycle = 1 end
    seen[who] = true
    parent = p
    if parent == '' then root = who end
  end
  out[#out + 1] = string.format('%d\t%d\t%s\t%d\t%.0f\n', depth, cycle, root, fanout, trace_cost)
end
return table.concat(out)
