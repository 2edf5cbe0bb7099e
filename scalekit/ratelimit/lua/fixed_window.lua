-- Fixed window. KEYS[i]: "<window index> <count>" for window i.
for i = 1, nwin do
  local limit, period = rate(i)
  local idx = math.floor(now / period)
  local reset = (idx + 1) * period - now
  local count = 0
  local v = redis.call('GET', KEYS[i])
  if v then
    local sidx, scount = string.match(v, '^(%S+) (%S+)$')
    if tonumber(sidx) == idx then count = tonumber(scount) end
  end
  local new = count + cost
  if new <= limit then
    if commit then
      push(true, limit - new, reset, 0)
      writes[i] = {fmt(idx) .. ' ' .. new, reset}
    else
      push(true, limit - count, count > 0 and reset or 0, 0)
    end
  else
    local retry = reset
    if cost > limit then retry = INF end
    push(false, math.max(0, limit - count), reset, retry)
  end
end
commit_writes()
return reply()
