-- Sliding window counter. KEYS[i]: "<window index> <previous count> <current count>".
for i = 1, nwin do
  local limit, period = rate(i)
  local idx = math.floor(now / period)
  local start = idx * period
  local elapsed = now - start
  local weight = math.max(0, 1 - (elapsed + TIME_EPS) / period)
  local prev, cur = 0, 0
  local v = redis.call('GET', KEYS[i])
  if v then
    local sidx, sp, sc = string.match(v, '^(%S+) (%S+) (%S+)$')
    sidx = tonumber(sidx)
    if sidx == idx then
      prev, cur = tonumber(sp), tonumber(sc)
    elseif sidx == idx - 1 then
      prev = tonumber(sc)
    end
  end
  local used = prev * weight + cur
  if used + cost <= limit + EPS then
    if commit then
      local reset = period - elapsed
      if cur + cost > 0 then reset = 2 * period - elapsed end
      push(true, floor0(limit - (used + cost)), reset, 0)
      writes[i] = {fmt(idx) .. ' ' .. prev .. ' ' .. (cur + cost), 2 * period - elapsed}
    else
      local reset = 0
      if cur > 0 then reset = 2 * period - elapsed elseif prev > 0 then reset = period - elapsed end
      push(true, floor0(limit - used), reset, 0)
    end
  else
    local reset = period - elapsed
    if cur > 0 then reset = 2 * period - elapsed end
    local retry
    if cost > limit then
      retry = INF
    elseif cur + cost <= limit then
      retry = period * (1 - (limit - cur - cost) / prev) - elapsed
    else
      retry = (period - elapsed) + period * (1 - (limit - cost) / cur)
    end
    if retry < 0 then retry = 0 end
    push(false, floor0(limit - used), reset, retry)
  end
end
commit_writes()
return reply()
