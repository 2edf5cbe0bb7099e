-- Sliding window counter. Per window R: limit, period (us).
-- KEYS[i]: "<window index> <previous count> <current count>"; a value that does not
-- parse, or that no hit writes (a count above the limit), counts as empty.
local nwin = #KEYS
local writes = {}
for i = 1, nwin do
  local limit, period = R[2 * i - 1], R[2 * i]
  local idx = math.floor(now / period)
  local elapsed = now - idx * period
  -- one microsecond of slack, as in algorithms.py
  local weight = 1 - (elapsed + 1) / period
  if weight < 0 then weight = 0 end
  local prev, cur = 0, 0
  local v = redis.call('GET', KEYS[i])
  if v then
    local sidx, sp, sc = string.match(v, '^(%d+) (%d+) (%d+)$')
    sidx = tonumber(sidx)
    if sidx == idx then
      prev, cur = tonumber(sp), tonumber(sc)
    elseif sidx == idx - 1 then
      prev = tonumber(sc)
    end
    if prev > limit or cur > limit then prev, cur = 0, 0 end
  end
  local used = prev * weight + cur
  if used + cost <= limit + 1e-9 then
    if commit then
      local left = math.floor(limit - used - cost + 1e-9)
      if left < 0 then left = 0 end
      out = out .. string.format(' 1 %d %d 0', left, 2 * period - elapsed)
      writes[i] = string.format('%d %d %d', idx, prev, cur + cost)
      writes[nwin + i] = math.ceil((2 * period - elapsed) / 1000)
    else
      local reset = 0
      if cur > 0 then reset = 2 * period - elapsed elseif prev > 0 then reset = period - elapsed end
      local left = math.floor(limit - used + 1e-9)
      if left < 0 then left = 0 end
      out = out .. string.format(' 1 %d %d 0', left, reset)
    end
  else
    allok = false
    local reset = period - elapsed
    if cur > 0 then reset = 2 * period - elapsed end
    local retry = -1
    if cost <= limit then
      if cur + cost <= limit then
        retry = math.ceil(period * (1 - (limit - cur - cost) / prev) - elapsed)
      else
        retry = math.ceil((period - elapsed) + period * (1 - (limit - cost) / cur))
      end
      if retry < 0 then retry = 0 end
    end
    local left = math.floor(limit - used + 1e-9)
    if left < 0 then left = 0 end
    out = out .. string.format(' 0 %d %d %d', left, reset, retry)
  end
end
if commit and allok then
  for i = 1, nwin do
    redis.call('SET', KEYS[i], writes[i], 'PX', writes[nwin + i])
  end
end
return out
