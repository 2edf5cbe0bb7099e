-- Adaptive sampling budget: one key per scope, "<window> <considered> <sampled> <previous>".
-- KEYS[1]: the scope's key.
-- ARGV: [1] now ('' = Redis TIME), [2] period, [3] target, [4] u (the draw, [0, 1)),
--       [5] expected arrivals per period ('' = unknown), [6] warmup (fraction of a period).
-- Reply: "sampled p considered sampled_count" (one bulk string, floats as %.17g).
-- The arithmetic is scalekit.sampling._budget.budget_probability's, in the same order.
-- (now: see _now.lua, prepended)
local period = tonumber(ARGV[2])
local target = tonumber(ARGV[3])
local u = tonumber(ARGV[4])
local expected = nil
if ARGV[5] ~= '' then expected = tonumber(ARGV[5]) end
local warmup = tonumber(ARGV[6])

local idx = math.floor(now / period)
local n, c, prev = 0, 0, -1
local v = redis.call('GET', KEYS[1])
if v then
  local sidx, sn, sc, sp = string.match(v, '^(%S+) (%S+) (%S+) (%S+)$')
  sidx = tonumber(sidx)
  if sidx == idx then
    n, c, prev = tonumber(sn), tonumber(sc), tonumber(sp)
  elseif sidx == idx - 1 then
    prev = tonumber(sn)
  end
end
n = n + 1
local elapsed = now - idx * period

local p = 0.0
local left = target - c
if left > 0 then
  local prior = nil
  if prev >= 0 then prior = prev elseif expected then prior = expected end
  local rate
  local f = elapsed / period
  local observed = n / math.max(elapsed, warmup * period)
  if prior then
    rate = f * observed + (1 - f) * (prior / period)
  else
    rate = observed
  end
  local rest = rate * (period - elapsed) + 1
  p = left / rest
  if p > 1 then p = 1 end
end
local sampled = 0
if u < p then
  sampled = 1
  c = c + 1
end
local ttl = math.ceil((2 * period - elapsed) * 1000)
if ttl < 1 then ttl = 1 end
redis.call('SET', KEYS[1], string.format('%.17g', idx) .. ' ' .. n .. ' ' .. c .. ' ' .. prev,
  'PX', ttl)
return sampled .. ' ' .. string.format('%.17g', p) .. ' ' .. n .. ' ' .. c
