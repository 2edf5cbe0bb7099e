-- GCRA (also token_bucket). Per window R: limit, period (us), burst.
-- KEYS[i]: "<t> <ahead>": at time t (us) the theoretical arrival time was t + ahead.
-- Relative: an absolute TAT near 1.7e15 us keeps only quarter microseconds, which at
-- 10**7/second would drop whole emission intervals. A value that does not parse, or
-- that no hit writes (ahead beyond the tolerance, t ahead of now by more than a
-- period), counts as idle.
local nwin = #KEYS
local writes = {}
for i = 1, nwin do
  local b = 3 * i
  local limit, period, burst = R[b - 2], R[b - 1], R[b]
  local interval = period / limit
  local tolerance = burst * interval
  -- decisions are exact to a microsecond, never by a whole interval (see algorithms.py)
  local slack = tolerance + math.min(1, interval / 2)
  local ahead = 0
  local v = redis.call('GET', KEYS[i])
  if v then
    local t, a = string.match(v, '^(%d+) ([%d.e+-]+)$')
    a = tonumber(a)
    if a and a <= slack and t - now <= period then
      ahead = a - (now - t)
      if ahead < 0 then ahead = 0 end
    end
  end
  local new = ahead + cost * interval
  if cost <= burst and new <= slack then
    if commit then
      local left = math.floor((slack - new) / interval + 1e-9)
      if left > burst - cost then left = burst - cost end
      out = out .. string.format(' 1 %d %d 0', left, math.ceil(new))
      writes[i] = new
    else
      local left = math.floor((slack - ahead) / interval + 1e-9)
      if left > burst then left = burst end
      out = out .. string.format(' 1 %d %d 0', left, math.ceil(ahead))
    end
  else
    allok = false
    local left = math.floor((slack - ahead) / interval + 1e-9)
    if left > burst then left = burst end
    if left < 0 then left = 0 end
    local retry = -1
    if cost <= burst then retry = math.ceil(new - tolerance) end
    out = out .. string.format(' 0 %d %d %d', left, math.ceil(ahead), retry)
  end
end
-- The state decays by itself (ahead - elapsed), so it may outlive its use: a second
-- more keeps a sub-millisecond state alive through the scheduling of the next call.
if commit and allok then
  for i = 1, nwin do
    local a = writes[i]
    redis.call('SET', KEYS[i], string.format('%d %.17g', now, a), 'PX', math.ceil(a / 1000) + 1000)
  end
end
return out
