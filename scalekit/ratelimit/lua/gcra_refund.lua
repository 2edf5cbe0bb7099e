-- GCRA / token bucket refund (see gcra.lua for the state). Moves the theoretical
-- arrival time back by cost emission intervals, never before now (an idle key: the
-- key is deleted). A value that does not parse or that no hit writes is left alone.
-- Reply: ''.
for i = 1, #KEYS do
  local b = 3 * i
  local limit, period, burst = R[b - 2], R[b - 1], R[b]
  local interval = period / limit
  local slack = burst * interval + math.min(1, interval / 2)
  local k = KEYS[i]
  local v = redis.call('GET', k)
  if v then
    local t, a = string.match(v, '^(%d+) ([%d.e+-]+)$')
    a = tonumber(a)
    if a and a <= slack and t - now <= period then
      local ahead = a - (now - t) - cost * interval
      if ahead > 0 then
        redis.call('SET', k, string.format('%d %.17g', now, ahead), 'PX',
          math.ceil(ahead / 1000) + 1000)
      else
        redis.call('DEL', k)
      end
    end
  end
end
return out
